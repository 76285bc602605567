"""The append-only JSONL ledger: the run's memory across stops, kills and crashes.

Writer: an event listener. One JSON object per line, written with a single ``write`` of the
whole line, flushed per line and fsynced in small batches, never rewritten in place. Every line
has ``ts`` (ISO-8601 UTC), ``job_id`` and ``status``; a job's state is its latest line.

Reader: replays the lines into a compact per-job state (Scrapy's ``requests.seen``, but per job
and safe after ``kill -9``). A torn last line is ignored; a corrupt line elsewhere is reported
with its line number and skipped. Uploaded assets are remembered by content digest, so a
resumed run uploads nothing twice.

A lock (``flock`` on ``OUT/.lock``) keeps two runs out of one folder; the kernel drops it when
the holder dies, however it dies, so a stale lock from a killed run is simply taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.errors import LockError, StoreError
from pipeline.events import (
    AssetsUploaded,
    Event,
    FeatureSubmitted,
    JobFailed,
    JobRetrying,
    JobStarted,
    JobSucceeded,
)
from pipeline.models import Asset, ErrorInfo, FeatureResult, Status

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".lock"
FSYNC_EVERY_LINES = 64
FSYNC_EVERY_SECONDS = 1.0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_dict(error: ErrorInfo) -> dict[str, Any]:
    return {"kind": error.kind, "message": error.message, "http_status": error.http_status}


def _result_dict(result: FeatureResult) -> dict[str, Any]:
    return {
        "uuid": result.uuid,
        "result_paths": list(result.result_paths),
        "temporary_url": result.temporary_url,
        "used_credit": result.used_credit,
        "credit_limit": result.credit_limit,
    }


def event_record(event: Event) -> dict[str, Any] | None:
    """The ledger line for an event (without ``ts``), or None if the ledger ignores it."""
    match event:
        case JobStarted(planned=planned):
            job = planned.job
            return {
                "job_id": job.id,
                "status": Status.STARTED.value,
                "key": planned.key,
                "job": {
                    "feature": job.feature.value,
                    "image": str(job.image),
                    "mask": str(job.mask) if job.mask else None,
                    "parameters": job.parameters(),
                },
            }
        case AssetsUploaded(job_id=job_id, key=key, assets=assets):
            return {
                "job_id": job_id,
                "status": Status.UPLOADED.value,
                "key": key,
                "assets": {
                    role: {"digest": a.digest, "path": a.path} for role, a in assets.items()
                },
            }
        case FeatureSubmitted(job_id=job_id, key=key, attempt=attempt, result=result):
            return {
                "job_id": job_id,
                "status": Status.SUBMITTED.value,
                "key": key,
                "attempt": attempt,
                "credits": event.credits,
                **_result_dict(result),
            }
        case JobRetrying():
            return {
                "job_id": event.job_id,
                "status": Status.RETRYING.value,
                "key": event.key,
                "step": event.step,
                "attempt": event.attempt,
                "delay": round(event.delay, 3),
                "error": error_dict(event.error),
            }
        case JobSucceeded():
            record = {
                "job_id": event.job_id,
                "status": Status.SUCCEEDED.value,
                "key": event.key,
                "outputs": list(event.outputs),
                "attempts": event.attempts,
                "credits": event.credits,
                "uuid": event.uuid,
                "timings": {k: round(v, 3) for k, v in event.timings.items()},
            }
            if event.superseded:
                record["superseded"] = list(event.superseded)
            return record
        case JobFailed():
            return {
                "job_id": event.job_id,
                "status": Status.FAILED.value,
                "key": event.key,
                "error": error_dict(event.error),
                "attempts": event.attempts,
            }
    return None


class LedgerWriter:
    """Appends event lines. Call ``close`` (or use as a context manager) to fsync the tail."""

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        try:
            self._file: IO[bytes] = path.open("ab")
            self._terminate_torn_tail()
        except OSError as exc:
            raise StoreError(f"cannot write the ledger {path}: {exc.strerror}") from exc
        self._unsynced = 0
        self._last_sync = clock()

    def _terminate_torn_tail(self) -> None:
        """A crash mid-line leaves no newline; start on a fresh line so ours stay whole."""
        size = self._file.seek(0, os.SEEK_END)
        if size == 0:
            return
        with self.path.open("rb") as reader:
            reader.seek(size - 1)
            if reader.read(1) != b"\n":
                self._file.write(b"\n")
                self._file.flush()

    def __call__(self, event: Event) -> None:
        record = event_record(event)
        if record is not None:
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps({"ts": utc_now(), **record}) + b"\n"
        try:
            self._file.write(line)
            self._file.flush()
            self._unsynced += 1
            now = self._clock()
            if self._unsynced >= FSYNC_EVERY_LINES or now - self._last_sync >= FSYNC_EVERY_SECONDS:
                os.fsync(self._file.fileno())
                self._unsynced, self._last_sync = 0, now
        except OSError as exc:
            raise StoreError(f"cannot write the ledger {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            pass  # the lines are flushed; a failed final fsync only risks power-loss durability
        # A disk that filled up mid-run: close() retries the flush of a line whose write
        # already failed (and stopped the run); that line is lost either way.
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Pending:
    """A feature call that succeeded but whose results were not all stored: fetch, don't buy."""

    result: FeatureResult
    credits: int | None
    attempts: int


@dataclass
class LedgerState:
    """What the ledger says, compactly: one (status, key) pair per job."""

    jobs: dict[str, tuple[str, str]] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)  # content digest -> asset path
    # job id -> its latest `submitted` line, while no success followed: a paid result to fetch
    submitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    corrupt_lines: list[int] = field(default_factory=list)
    torn_tail: bool = False
    lines: int = 0

    def status_of(self, job_id: str, key: str) -> str | None:
        """The job's latest status if it was for this content, else None (a new job)."""
        entry = self.jobs.get(job_id)
        if entry is None or entry[1] != key:
            return None
        return entry[0]

    def pending_for(self, job_id: str, key: str) -> Pending | None:
        if self.status_of(job_id, key) is None:
            return None
        record = self.submitted.get(job_id)
        return None if record is None else _pending_from(record)

    def asset_for(self, digest: str | None) -> Asset | None:
        if digest is None or digest not in self.assets:
            return None
        return Asset(path=self.assets[digest], digest=digest)


def iter_records(path: Path, state: LedgerState | None = None) -> Iterator[dict[str, Any]]:
    """Every well-formed line; corrupt ones are noted in ``state`` and skipped.

    One tight loop (resume start-up over a million lines is mostly this): each line is parsed
    when the next one has been read, so the last line, the only one a crash can tear, is known.
    """
    state = state if state is not None else LedgerState()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    loads, decode_error, well_formed = orjson.loads, orjson.JSONDecodeError, _well_formed
    with handle:
        previous: bytes | None = None
        number = 0
        for raw in handle:
            if previous is not None:
                try:
                    record = loads(previous)
                except decode_error:
                    record = None
                if well_formed(record):
                    yield record
                elif previous.strip():
                    state.corrupt_lines.append(number)
            previous, number = raw, number + 1
        if previous is not None:
            yield from _parse_last(previous, number, state)
    state.lines = number


def _parse_last(raw: bytes, number: int, state: LedgerState) -> Iterator[dict[str, Any]]:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = None
    if _well_formed(record):
        yield record
    elif not raw.endswith(b"\n"):
        state.torn_tail = True  # a crash mid-write: expected, silently ignored
    elif raw.strip():
        state.corrupt_lines.append(number)


# The type of every field a reader relies on (see event_record), per status. A line that parses
# but breaks one (a hand edit, bit rot inside a value) is corrupt like any other: reported and
# skipped, so no reader (resume, status, report) meets a list where it expects a number. Only
# the fields a status carries are checked: this runs for every line of a long ledger.
_NONE = type(None)
_KEY = ("key", (str, _NONE))
_CREDITS = ("credits", (int, float, _NONE))
_FIELDS_BY_STATUS: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {
    "started": (_KEY, ("job", (dict,))),
    "uploaded": (_KEY, ("assets", (dict,))),
    "submitted": (_KEY, ("attempt", (int,)), _CREDITS, ("result_paths", (list,))),
    "retrying": (_KEY, ("attempt", (int,)), ("error", (dict,))),
    "succeeded": (
        _KEY,
        ("attempts", (int,)),
        _CREDITS,
        ("outputs", (list,)),
        ("timings", (dict,)),
    ),
    "failed": (_KEY, ("attempts", (int,)), ("error", (dict,))),
}
_MISSING = object()


def _well_formed(record: Any) -> bool:
    if type(record) is not dict or type(record.get("job_id")) is not str:
        return False
    status = record.get("status")
    if type(status) is not str:
        return False
    for name, kinds in _FIELDS_BY_STATUS.get(status, ()):
        value = record.get(name, _MISSING)
        if value is not _MISSING and not isinstance(value, kinds):
            return False
    return True


def _pending_from(record: dict[str, Any]) -> Pending | None:
    paths = record.get("result_paths")
    if not isinstance(paths, list) or not paths:
        return None
    result = FeatureResult(
        uuid=str(record.get("uuid") or ""),
        result_paths=tuple(str(p) for p in paths),
        temporary_url=record.get("temporary_url"),
        used_credit=record.get("used_credit"),
        credit_limit=record.get("credit_limit"),
    )
    return Pending(result, record.get("credits"), int(record.get("attempt") or 1))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _remember_assets(record: dict[str, Any], assets: dict[str, str]) -> None:
    for asset in (record.get("assets") or {}).values():
        if isinstance(asset, dict) and _text(asset.get("digest")) and _text(asset.get("path")):
            assets[asset["digest"]] = asset["path"]


def read_ledger(path: Path) -> LedgerState:
    state = LedgerState()
    jobs, submitted = state.jobs, state.submitted
    for record in iter_records(path, state):
        job_id, status, key = record["job_id"], record["status"], record.get("key") or ""
        if status == "uploaded":
            _remember_assets(record, state.assets)
            continue  # an upload does not change where the job stands
        previous = jobs.get(job_id)
        if status == "submitted":
            submitted[job_id] = record  # made into a Pending only if a resume asks for it
        elif status == "succeeded" or (previous is not None and previous[1] != key):
            submitted.pop(job_id, None)
        elif status == "retrying" and previous is not None and previous[0] == "submitted":
            status = "submitted"  # a download retry: the results are still there to fetch
        jobs[job_id] = (status, key)
    return state


class OutputLock:
    """An exclusive ``flock`` on ``OUT/.lock`` for the life of a run."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockError(
                f"{self.path.parent} is in use by another run (pid {holder}); "
                "wait for it to finish or use another --out"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
