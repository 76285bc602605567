"""The Python API for orchestrators (Airflow, Dagster, Prefect, a notebook): the commands as
functions with typed results. The CLI is a thin layer on the same code.

    import pipeline

    result = pipeline.run("jobs/catalog.yaml", max_total_credits=5_000_000)
    if result.exit_code == pipeline.ExitCode.STOPPED: ...
    print(pipeline.status(result.state_dir).states)

What keeps a command from starting raises an error of the one tree (``pipeline.PipelineError``:
``UsageError``, ``ManifestError``/``PlanRefused``, ``LockError``, ``StoreError``,
``ExportError``); what happens once a run has started is in its ``RunResult`` (stopped runs
included: a stop is an outcome, not an exception). Nothing is printed unless a ``Console`` is
given, and the run log goes to ``log_file`` only (``log_stderr=True`` for stderr); what a run
leaves in its folder is what the CLI's leaves.
The API key comes from ``ONEMIN_API_KEY`` unless given; it is never printed, logged or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.config import KEY_ENV
from pipeline.reporting.status import FolderStatus, folder_status
from pipeline.review.channels import channel_options, export_channel
from pipeline.review.export import DEFAULT_NAME, ExportResult
from pipeline.review.export import export as export_images
from pipeline.runner.options import Console, RunOptions
from pipeline.runner.results import RunResult, ValidationResult
from pipeline.runner.start import run_manifest, validate_manifest


def run(
    manifest: str | Path,
    *,
    api_key: str | None = None,
    console: Console | None = None,
    only: Iterable[str] | None = None,
    **options: Any,
) -> RunResult:
    """Run a manifest's pending jobs (resumable, like ``pipeline run``).

    ``options`` are ``RunOptions``' fields (``out``, ``emulator``, ``rpm``, ``concurrency`` (a
    number or ``"auto"``), ``max_concurrency``, ``submit``, ``max_credits``, ``retry_failed``,
    ``dry_run``, ``report``, ``log_file``, ...); an unknown name is a ``TypeError``.
    """
    options.setdefault("log_stderr", False)  # a library prints nothing unasked
    run_options = RunOptions(
        manifest=Path(manifest), only=None if only is None else frozenset(only), **options
    )
    key = api_key if api_key is not None else os.environ.get(KEY_ENV) or None
    return run_manifest(run_options, api_key=key, console=console or Console())


def validate(
    manifest: str | Path, *, state: str | Path | None = None, rehash: bool = False
) -> ValidationResult:
    """Every check that needs no network (``pipeline validate``); nothing is sent. The stat
    cache of a run's state folder (``state``, default the manifest's OUT) is used and kept."""
    state_dir = None if state is None else Path(state)
    plan = validate_manifest(Path(manifest), state=state_dir, rehash=rehash, console=Console())
    return ValidationResult(plan.summary)


def status(out: str | Path, manifest: str | Path | None = None) -> FolderStatus:
    """Where every job of the manifest stands (``pipeline status``): ``.states`` counts them,
    ``.all_succeeded`` is what exit 0 means, ``.jobs`` lists each."""
    return folder_status(Path(out), None if manifest is None else Path(manifest))


def export(
    out: str | Path,
    dest: str,
    *,
    name: str = DEFAULT_NAME,
    approved_only: bool = False,
    fmt: str | None = None,
    quality: int | None = None,
    all_variants: bool = False,
    profile: str | None = None,
    base_url: str | None = None,
    fit: bool = False,
    alt_text: str | None = None,
    feed_id: str | None = None,
    manifest: str | Path | None = None,
) -> ExportResult:
    """Deliver a run's images to a folder or an object-store URL (``pipeline export``).

    ``profile`` (``"shopify"``, ``"google"``, ``"amazon"``) also writes the channel's file, with
    ``base_url``, ``fit``, ``alt_text``, ``feed_id`` as the command's options; the result says
    what it holds (``channel_file``, ``placed``, ``products``, ``fitted``) and what was left out
    (``left_out``).
    """
    options = channel_options(
        profile, base_url=base_url, fit=fit, alt_text=alt_text, feed_id=feed_id
    )
    rows = None if manifest is None else Path(manifest)
    common = (name, approved_only, fmt, quality)
    if options is None:
        return export_images(Path(out), dest, *common, all_variants=all_variants, manifest=rows)
    return export_channel(
        Path(out), dest, options, *common, all_variants=all_variants, manifest=rows
    )
