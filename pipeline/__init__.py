"""Batch image editing with the 1min.ai API: manifest → plan → scheduler → client → store.

The Python API (``docs/python-api.md``)::

    import pipeline

    result = pipeline.run("jobs/catalog.yaml")         # a RunResult; .exit_code as the CLI's
    pipeline.validate("jobs/catalog.yaml").ok          # every check that needs no network
    pipeline.status("jobs/out/catalog").all_succeeded  # where every job stands
    pipeline.export("jobs/out/catalog", "shop/", approved_only=True)

Errors are ``pipeline.PipelineError`` and its subclasses. The names load on first use, so
``import pipeline.emulator`` (or the CLI's ``--version``) does not import the whole pipeline.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pipeline.errors import (
        ExitCode,
        LockError,
        ManifestError,
        PipelineError,
        PlanRefused,
        StoreError,
        UsageError,
    )
    from pipeline.reporting.status import FolderStatus
    from pipeline.review.export import ExportResult
    from pipeline.runner import (
        Console,
        RunResult,
        ValidationResult,
        export,
        run,
        status,
        validate,
    )

_EXPORTS = {
    "run": "pipeline.runner",
    "validate": "pipeline.runner",
    "status": "pipeline.runner",
    "export": "pipeline.runner",
    "Console": "pipeline.runner",
    "RunResult": "pipeline.runner",
    "ValidationResult": "pipeline.runner",
    "FolderStatus": "pipeline.reporting.status",
    "ExportResult": "pipeline.review.export",
    "ExitCode": "pipeline.errors",
    "PipelineError": "pipeline.errors",
    "UsageError": "pipeline.errors",
    "ManifestError": "pipeline.errors",
    "PlanRefused": "pipeline.errors",
    "LockError": "pipeline.errors",
    "StoreError": "pipeline.errors",
}

__all__ = [
    "Console",
    "ExitCode",
    "ExportResult",
    "FolderStatus",
    "LockError",
    "ManifestError",
    "PipelineError",
    "PlanRefused",
    "RunResult",
    "StoreError",
    "UsageError",
    "ValidationResult",
    "__version__",
    "export",
    "run",
    "status",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
