"""``pipeline status OUT``: where every job of the manifest stands, from the ledger's fold.

Every job the manifest lists is shown, not only those the ledger knows: a job never started is
``pending``. A succeeded job whose output files are gone is ``missing``. The manifest is the one
the last run recorded in ``summary.json`` (or ``--manifest``); without one, the ledger's jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ManifestError, UsageError
from pipeline.inputs.objectstore import REMOTE_SCHEMES
from pipeline.layout import LEDGER_NAME, SUMMARY_NAME
from pipeline.ledger import Damage, JobState, read_ledger
from pipeline.manifest import load_manifest
from pipeline.models import Job, Status
from pipeline.store.bucket import BUCKET_STATUS_HINT, BucketListing, recorded_bucket
from pipeline.store.missing import outputs_missing

FAILED_SHOWN = 50
PENDING = "pending"
MISSING = "missing"
# The order states are listed in.
STATE_ORDER = (
    "succeeded",
    "failed",
    MISSING,
    PENDING,
    "submitted",
    "retrying",
    "started",
)


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    state: str
    error: dict[str, Any] | None = None
    attempts: int | None = None
    outputs: tuple[str, ...] = ()


@dataclass
class FolderStatus:
    out_dir: Path
    manifest: str | None  # the manifest whose jobs are listed, if it could be read
    jobs: list[JobStatus] = field(default_factory=list)
    damage: Damage = field(default_factory=Damage)
    not_in_manifest: int = 0  # ledger jobs the manifest no longer lists
    credits_spent: int = 0
    notes: list[str] = field(default_factory=list)  # what the reader should know first

    @property
    def states(self) -> Counter[str]:
        return Counter(job.state for job in self.jobs)

    @property
    def all_succeeded(self) -> bool:
        return bool(self.jobs) and all(job.state == "succeeded" for job in self.jobs)

    def as_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out_dir),
            "manifest": self.manifest,
            "counts": dict(sorted(self.states.items())),
            "total": len(self.jobs),
            "not_in_manifest": self.not_in_manifest,
            "credits_spent": self.credits_spent,
            "corrupt_lines": self.damage.corrupt_lines,
            "jobs": [
                {
                    "id": job.job_id,
                    "state": job.state,
                    "error": job.error,
                    "attempts": job.attempts,
                    "outputs": list(job.outputs),
                }
                for job in self.jobs
            ],
        }


def read_status(
    out_dir: Path,
    manifest_jobs: Iterable[Job] | None = None,
    manifest: str | None = None,
    missing: Callable[[tuple[str, ...]], bool] | None = None,
) -> FolderStatus:
    """The state of every manifest job (or every ledger job when ``manifest_jobs`` is None).

    ``missing``: whether a succeeded job's outputs are gone; default: not all files in OUT (a
    bucket run's state folder passes ``pipeline.store.bucket.BucketListing(out).missing``)."""
    if missing is None:

        def missing(outputs: tuple[str, ...]) -> bool:
            return outputs_missing(out_dir, outputs)

    ledger = read_ledger(out_dir / LEDGER_NAME, detailed=True)
    status = FolderStatus(out_dir, manifest, damage=ledger.damage)
    status.credits_spent = ledger.credits_spent
    if manifest_jobs is None:
        status.jobs = [_job_status(state, missing) for state in ledger.jobs.values()]
        return status
    listed: set[str] = set()
    for job in manifest_jobs:
        if job.id in listed:
            continue
        listed.add(job.id)
        state = ledger.jobs.get(job.id)
        status.jobs.append(_job_status(state, missing) if state else JobStatus(job.id, PENDING))
    status.not_in_manifest = len(ledger.jobs.keys() - listed)
    return status


def _job_status(state: JobState, missing: Callable[[tuple[str, ...]], bool]) -> JobStatus:
    name = state.status.value
    if state.status is Status.SUCCEEDED and missing(state.outputs):
        name = MISSING
    error = None
    if state.error is not None:
        error = {
            "kind": state.error.kind,
            "message": state.error.message,
            "http_status": state.error.http_status,
            "transient": state.error.transient,
        }
    return JobStatus(state.job_id, name, error, state.attempts, state.outputs)


def format_status(status: FolderStatus) -> str:
    states = status.states
    total = len(status.jobs)
    what = f"jobs of {status.manifest}" if status.manifest else "jobs in the ledger"
    lines = [f"{total} {what}"]
    for state in (*STATE_ORDER, *sorted(set(states) - set(STATE_ORDER))):
        if states[state]:
            lines.append(f"  {state:<10} {states[state]}")
    unfinished = total - states["succeeded"] - states["failed"] - states[MISSING]
    if unfinished:
        lines.append(f"  ({unfinished} unfinished: a re-run of the same command resumes them)")
    if states[MISSING]:
        lines.append(
            f"  ({states[MISSING]} missing: succeeded, but output files are gone; a run fetches "
            "them again free while their stored results last, --redo-missing buys the rest)"
        )
    if status.not_in_manifest:
        lines.append(f"  ({status.not_in_manifest} more in the ledger, no longer in the manifest)")
    if status.damage.corrupt_lines:
        numbers = ", ".join(map(str, status.damage.corrupt_lines[:10]))
        lines.append(f"unreadable ledger lines skipped: {numbers}")
    failed = [job for job in status.jobs if job.state == "failed"]
    if failed:
        lines.append("")
        lines.append(
            "failed jobs (transient ones run again by the next run; others need --retry-failed):"
        )
        for job in failed[:FAILED_SHOWN]:
            error = job.error or {}
            http = f" HTTP {error['http_status']}" if error.get("http_status") else ""
            transient = " [transient]" if error.get("transient") else ""
            attempts = "?" if job.attempts is None else job.attempts
            lines.append(
                f"  {job.job_id}: {error.get('kind', '?')}{http}{transient}: "
                f"{error.get('message', '')} (attempts: {attempts})"
            )
        if len(failed) > FAILED_SHOWN:
            lines.append(f"  ... and {len(failed) - FAILED_SHOWN} more")
    return "\n".join(lines)


def folder_status(out_dir: Path, manifest: Path | None = None) -> FolderStatus:
    """``pipeline status OUT``: every job of ``manifest`` (default: the one the folder's last
    run recorded; without one, the ledger's jobs), missing outputs looked up where they live (a
    bucket run's state folder: the bucket). Raises ``UsageError`` when OUT has no ledger."""
    if str(out_dir).split(":/", 1)[0] in REMOTE_SCHEMES:  # Path() made s3://b/p into s3:/b/p
        raise UsageError(BUCKET_STATUS_HINT)
    if not (out_dir / LEDGER_NAME).is_file():
        raise UsageError(f"no ledger at {out_dir / LEDGER_NAME}")
    path = manifest or recorded_manifest(out_dir)
    jobs, shown = manifest_jobs(path)
    bucket = recorded_bucket(out_dir)  # a bucket run's state folder: its outputs are there
    missing = BucketListing(bucket).missing if bucket is not None else None
    status = read_status(out_dir, jobs, shown, missing)
    if path is not None and jobs is None:
        status.notes.append(f"cannot read the manifest {path}; showing the ledger's jobs")
    return status


def recorded_manifest(out_dir: Path) -> Path | None:
    """The manifest the folder's last run recorded in ``summary.json``, if any."""
    try:
        summary = orjson.loads((out_dir / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    run = summary.get("last_run") if isinstance(summary, dict) else None
    manifest = run.get("manifest") if isinstance(run, dict) else None
    return Path(manifest) if isinstance(manifest, str) and manifest else None


def manifest_jobs(path: Path | None) -> tuple[list[Job] | None, str | None]:
    """The manifest's jobs (no file is read but the manifest and its items) and its name; a
    manifest that cannot be read gives (None, None): the ledger's jobs are shown instead."""
    if path is None:
        return None, None
    try:
        manifest = load_manifest(path)
    except ManifestError:
        return None, None
    jobs = [item for item in manifest.iter_jobs() if isinstance(item, Job)]
    return jobs, manifest.display_name
