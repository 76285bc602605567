"""``pipeline status OUT``: where every job of the manifest stands, from the ledger's fold.

Every job the manifest lists is shown, not only those the ledger knows: a job never started is
``pending``. A succeeded job whose output files are gone is ``missing``; a job some of whose paid
images could not be fetched is ``partial``, with the missing indexes. Feature calls whose answer
was lost after sending are shown as "possibly charged". The manifest is the one the last run
recorded in ``summary.json`` (or ``--manifest``); without one, the ledger's jobs.

It reads the ledger as a resume does (``read_ledger``: the checkpoint, then the lines after it,
into the compact fold), so the two cannot disagree, and streams: the manifest's jobs go by one
at a time and ``--json`` prints each as it comes (``write_status``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from pipeline.errors import ManifestError, UsageError
from pipeline.inputs.objectstore import REMOTE_SCHEMES
from pipeline.layout import LEDGER_NAME, SUMMARY_NAME
from pipeline.ledger import Damage, FoldedJob, JobRef, LedgerState, read_ledger
from pipeline.manifest import load_manifest
from pipeline.models import Job, Status
from pipeline.store.bucket import BUCKET_STATUS_HINT, BucketListing, recorded_bucket
from pipeline.store.missing import outputs_missing

FAILED_SHOWN = 50
PENDING = "pending"
MISSING = "missing"
# The order states are listed in.
PARTIAL = "partial"
STATE_ORDER = (
    "succeeded",
    "failed",
    PARTIAL,
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
    missing: tuple[int, ...] = ()  # a partial job: the image indexes paid and not fetched

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "state": self.state,
            "error": self.error,
            "attempts": self.attempts,
            "outputs": list(self.outputs),
            **({"missing": list(self.missing)} if self.missing else {}),
        }


@dataclass
class FolderStatus:
    out_dir: Path
    manifest: str | None  # the manifest whose jobs are listed, if it could be read
    jobs: list[JobStatus] = field(default_factory=list)
    damage: Damage = field(default_factory=Damage)
    not_in_manifest: int = 0  # ledger jobs the manifest no longer lists
    credits_spent: int = 0
    notes: list[str] = field(default_factory=list)  # what the reader should know first
    possibly_charged: int = 0  # feature calls whose answer was lost after sending

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
            "possibly_charged": self.possibly_charged,
            "corrupt_lines": self.damage.corrupt_lines,
            "jobs": [job.as_json() for job in self.jobs],
        }


def job_statuses(
    out_dir: Path,
    ledger: LedgerState,
    manifest_jobs: Iterable[Job] | None = None,
    missing: Callable[[tuple[str, ...]], bool] | None = None,
    tally: StatusTally | None = None,
) -> Iterator[JobStatus]:
    """Every manifest job's status (or every ledger job's when ``manifest_jobs`` is None), one
    at a time, in the manifest's order: nothing is held but the ledger's compact fold.

    ``missing``: whether a succeeded job's outputs are gone; default: not all files in OUT (a
    bucket run's state folder passes ``pipeline.store.bucket.BucketListing(out).missing``).
    ``tally`` counts what went by (``not_in_manifest`` once the stream is exhausted)."""
    if missing is None:

        def missing(outputs: tuple[str, ...]) -> bool:
            return outputs_missing(out_dir, outputs)

    tally = tally if tally is not None else StatusTally()
    images_missing = ledger.missing_of
    if manifest_jobs is None:
        for job in ledger.jobs.refs():
            yield tally.add(_job_status(job, missing, images_missing))
        return
    table = ledger.table
    listed = bytearray(len(table))  # a manifest listing an id twice shows it once
    for item in manifest_jobs:
        number = table.find(item.id)
        if number < 0:
            yield tally.add(JobStatus(item.id, PENDING))
        elif not listed[number]:
            listed[number] = 1
            yield tally.add(_job_status(JobRef(table, number), missing, images_missing))
    tally.not_in_manifest = len(listed) - sum(listed)


@dataclass
class StatusTally:
    """What ``pipeline status`` prints after the jobs: counts, the first failed and partial
    jobs."""

    states: Counter[str] = field(default_factory=Counter)
    total: int = 0
    failed: list[JobStatus] = field(default_factory=list)  # the first FAILED_SHOWN
    partial: list[JobStatus] = field(default_factory=list)  # the first FAILED_SHOWN
    not_in_manifest: int = 0

    def add(self, job: JobStatus) -> JobStatus:
        self.states[job.state] += 1
        self.total += 1
        if job.state == "failed" and len(self.failed) < FAILED_SHOWN:
            self.failed.append(job)
        elif job.state == PARTIAL and len(self.partial) < FAILED_SHOWN:
            self.partial.append(job)
        return job

    @property
    def all_succeeded(self) -> bool:
        return self.total > 0 and self.states["succeeded"] == self.total


def read_status(
    out_dir: Path,
    manifest_jobs: Iterable[Job] | None = None,
    manifest: str | None = None,
    missing: Callable[[tuple[str, ...]], bool] | None = None,
) -> FolderStatus:
    """The state of every manifest job, held in one list (``write_status`` streams instead)."""
    ledger = read_ledger(out_dir / LEDGER_NAME)
    tally = StatusTally()
    jobs = list(job_statuses(out_dir, ledger, manifest_jobs, missing, tally))
    status = FolderStatus(out_dir, manifest, jobs, ledger.damage, tally.not_in_manifest)
    status.credits_spent = ledger.credits_spent
    status.possibly_charged = ledger.possibly_charged
    return status


def write_status(
    out_dir: Path,
    sink: TextIO,
    manifest_jobs: Iterable[Job] | None = None,
    manifest: str | None = None,
    missing: Callable[[tuple[str, ...]], bool] | None = None,
    *,
    as_json: bool = False,
) -> bool:
    """``pipeline status``: print every job's state as it is folded; True if all succeeded.

    The text form is the counts and the first failed and partial jobs, held as they go by. The
    JSON form streams ``jobs`` one object a line, then the counts (the keys of the whole-object
    form, ``counts`` and the other totals after ``jobs``): a million-job folder's status holds
    no list of its jobs."""
    ledger = read_ledger(out_dir / LEDGER_NAME)
    tally = StatusTally()
    statuses = job_statuses(out_dir, ledger, manifest_jobs, missing, tally)
    if not as_json:
        for _ in statuses:
            pass
        text = format_tally(tally, manifest, ledger.damage, ledger.possibly_charged)
        sink.write(text + "\n")
        return tally.all_succeeded
    head = {"out": str(out_dir), "manifest": manifest}
    sink.write("{\n" + "".join(f"  {_json(k)}: {_json(v)},\n" for k, v in head.items()))
    sink.write('  "jobs": [')
    separator = "\n    "
    for job in statuses:
        sink.write(separator + _json(job.as_json()))
        separator = ",\n    "
    sink.write("\n  ],\n" if separator != "\n    " else "],\n")
    tail = {
        "counts": dict(sorted(tally.states.items())),
        "total": tally.total,
        "not_in_manifest": tally.not_in_manifest,
        "credits_spent": ledger.credits_spent,
        "possibly_charged": ledger.possibly_charged,
        "corrupt_lines": ledger.damage.corrupt_lines,
    }
    sink.write(",\n".join(f"  {_json(k)}: {_json(v)}" for k, v in tail.items()) + "\n}\n")
    return tally.all_succeeded


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _job_status(
    state: FoldedJob,
    missing: Callable[[tuple[str, ...]], bool],
    images_missing: Callable[[str], tuple[int, ...]],
) -> JobStatus:
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
    lost = images_missing(state.job_id) if state.status is Status.PARTIAL else ()
    return JobStatus(state.job_id, name, error, state.attempts, state.outputs, lost)


def format_status(status: FolderStatus) -> str:
    tally = StatusTally(not_in_manifest=status.not_in_manifest)
    for job in status.jobs:
        tally.add(job)
    return format_tally(tally, status.manifest, status.damage, status.possibly_charged)


def format_tally(
    tally: StatusTally, manifest: str | None, damage: Damage, possibly_charged: int = 0
) -> str:
    states = tally.states
    total = tally.total
    what = f"jobs of {manifest}" if manifest else "jobs in the ledger"
    lines = [f"{total} {what}"]
    for state in (*STATE_ORDER, *sorted(set(states) - set(STATE_ORDER))):
        if states[state]:
            lines.append(f"  {state:<10} {states[state]}")
    unfinished = total - states["succeeded"] - states["failed"] - states[MISSING]
    unfinished -= states[PARTIAL]
    if unfinished:
        lines.append(f"  ({unfinished} unfinished: a re-run of the same command resumes them)")
    if states[MISSING]:
        lines.append(
            f"  ({states[MISSING]} missing: succeeded, but output files are gone; a run fetches "
            "them again free while their stored results last, --redo-missing buys the rest)"
        )
    if states[PARTIAL]:
        lines.append(
            f"  ({states[PARTIAL]} partial: paid images could not be fetched; nothing is bought "
            "again unless asked: --redo-missing buys exactly the missing images)"
        )
    if possibly_charged:
        lines.append(
            f"possibly charged: {possibly_charged} feature calls whose answer was lost "
            "after sending (counted as spent)"
        )
    if tally.not_in_manifest:
        lines.append(f"  ({tally.not_in_manifest} more in the ledger, no longer in the manifest)")
    if damage.corrupt_lines:
        numbers = ", ".join(map(str, damage.corrupt_lines[:10]))
        lines.append(f"unreadable ledger lines skipped: {numbers}")
    if tally.failed:
        lines.append("")
        lines.append(
            "failed jobs (transient ones run again by the next run; others need --retry-failed):"
        )
        for job in tally.failed:
            error = job.error or {}
            http = f" HTTP {error['http_status']}" if error.get("http_status") else ""
            transient = " [transient]" if error.get("transient") else ""
            attempts = "?" if job.attempts is None else job.attempts
            lines.append(
                f"  {job.job_id}: {error.get('kind', '?')}{http}{transient}: "
                f"{error.get('message', '')} (attempts: {attempts})"
            )
        if states["failed"] > len(tally.failed):
            lines.append(f"  ... and {states['failed'] - len(tally.failed)} more")
    if tally.partial:
        lines.append("")
        lines.append("partial jobs (--redo-missing buys the missing images):")
        for job in tally.partial:
            error = job.error or {}
            indexes = ", ".join(map(str, job.missing))
            lines.append(
                f"  {job.job_id}: missing images {indexes} of {len(job.outputs) + len(job.missing)}"
                f": {error.get('message', '')}"
            )
        if states[PARTIAL] > len(tally.partial):
            lines.append(f"  ... and {states[PARTIAL] - len(tally.partial)} more")
    return "\n".join(lines)


@dataclass
class StatusSource:
    """What ``pipeline status OUT`` reads: the manifest's jobs (streamed), its name, the rule
    for missing outputs where they live, and what the reader should know first."""

    jobs: Iterable[Job] | None
    manifest: str | None
    missing: Callable[[tuple[str, ...]], bool] | None
    notes: list[str]


def status_source(out_dir: Path, manifest: Path | None = None) -> StatusSource:
    """The jobs of ``manifest`` (default: the one the folder's last run recorded; without one,
    the ledger's jobs), missing outputs looked up where they live (a bucket run's state folder:
    the bucket). Raises ``UsageError`` when OUT has no ledger."""
    if str(out_dir).split(":/", 1)[0] in REMOTE_SCHEMES:  # Path() made s3://b/p into s3:/b/p
        raise UsageError(BUCKET_STATUS_HINT)
    if not (out_dir / LEDGER_NAME).is_file():
        raise UsageError(f"no ledger at {out_dir / LEDGER_NAME}")
    path = manifest or recorded_manifest(out_dir)
    jobs, shown = manifest_jobs(path)
    bucket = recorded_bucket(out_dir)  # a bucket run's state folder: its outputs are there
    missing = BucketListing(bucket).missing if bucket is not None else None
    notes = []
    if path is not None and jobs is None:
        notes.append(f"cannot read the manifest {path}; showing the ledger's jobs")
    return StatusSource(jobs, shown, missing, notes)


def folder_status(out_dir: Path, manifest: Path | None = None) -> FolderStatus:
    """``pipeline status OUT`` held whole (the Python API's): every job of the manifest (see
    ``status_source``). Raises ``UsageError`` when OUT has no ledger."""
    source = status_source(out_dir, manifest)
    status = read_status(out_dir, source.jobs, source.manifest, source.missing)
    status.notes.extend(source.notes)
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


def manifest_jobs(path: Path | None) -> tuple[Iterator[Job] | None, str | None]:
    """The manifest's jobs, streamed (no file is read but the manifest and its items), and its
    name; a manifest that cannot be read gives (None, None): the ledger's jobs are shown
    instead."""
    if path is None:
        return None, None
    try:
        manifest = load_manifest(path)
    except ManifestError:
        return None, None
    jobs = (item for item in manifest.iter_jobs() if isinstance(item, Job))
    return jobs, manifest.display_name
