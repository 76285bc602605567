"""A run's wiring: from options (``RunOptions``) to a checked plan, the session that runs it,
and what it leaves behind; ``api`` is the Python API the package's face exposes."""

from __future__ import annotations

from pipeline.runner.api import export, run, status, validate
from pipeline.runner.options import Console, RunOptions
from pipeline.runner.results import RunResult, ValidationResult
from pipeline.runner.start import run_manifest

__all__ = [
    "Console",
    "RunOptions",
    "RunResult",
    "ValidationResult",
    "export",
    "run",
    "run_manifest",
    "status",
    "validate",
]
