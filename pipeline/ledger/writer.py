"""The append-only ledger writer: an event listener that turns events into typed records.

One JSON object per line, each line written whole with a single unbuffered ``write`` (so a
killed process loses no line it reported), fsynced in small batches (every
``FSYNC_EVERY_LINES`` lines or ``FSYNC_EVERY_SECONDS``), by a ``durability.Syncer`` thread when
one is given, never rewritten in place. A crash can only tear the last line; readers ignore it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pipeline.durability import Syncer
from pipeline.errors import StoreError
from pipeline.events import (
    AssetsUploaded,
    Event,
    FeatureSubmitted,
    JobFailed,
    JobRetrying,
    JobStarted,
    JobSucceeded,
    OutputsRefetched,
    RecordFinished,
    ResultLost,
)
from pipeline.ledger.schema import (
    AssetRecord,
    Failed,
    JobDetails,
    Record,
    Refetched,
    ResultGone,
    Retrying,
    Started,
    Submitted,
    Succeeded,
    Uploaded,
    to_line,
)

FSYNC_EVERY_LINES = 64
FSYNC_EVERY_SECONDS = 1.0


def record_for(event: Event) -> Record | None:
    """The ledger record of an event, or None if the ledger ignores it."""
    match event:
        case JobStarted(planned=planned):
            job = planned.job
            details = JobDetails(
                feature=job.feature.value,
                image=job.image.source or str(job.image),  # a remote input: its URL
                mask=(job.mask.source or str(job.mask)) if job.mask else None,
                parameters=job.parameters(),
                mask_recipe=job.mask_recipe.canonical() if job.mask_recipe else None,
                group=job.group,
            )
            return Started(job_id=job.id, key=planned.key, job=details)
        case AssetsUploaded(job_id=job_id, key=key, assets=assets):
            records = {
                role: AssetRecord(path=a.path, digest=a.digest) for role, a in assets.items()
            }
            return Uploaded(job_id=job_id, key=key, assets=records)
        # A record still processing is written with no result paths; when it finishes, the
        # same uuid again with its paths (one purchase: the fold counts its credits once).
        case FeatureSubmitted(job_id=job_id, key=key, attempt=attempt, result=result) | (
            RecordFinished(job_id=job_id, key=key, attempt=attempt, result=result)
        ):
            return Submitted(
                job_id=job_id,
                key=key,
                uuid=result.uuid,
                result_paths=tuple(result.result_paths),
                attempt=attempt,
                credits=event.credits,
                temporary_url=result.temporary_url,
                used_credit=result.used_credit,
                credit_limit=result.credit_limit,
            )
        case JobRetrying():
            return Retrying(
                job_id=event.job_id,
                key=event.key,
                step=event.step,
                attempt=event.attempt,
                error=event.error,
                delay=round(event.delay, 3),
            )
        case JobSucceeded():
            return Succeeded(
                job_id=event.job_id,
                key=event.key,
                outputs=tuple(event.outputs),
                attempts=event.attempts,
                credits=event.credits,
                uuid=event.uuid,
                timings={name: round(value, 3) for name, value in event.timings.items()},
                superseded=tuple(event.superseded),
                checks=event.checks,
            )
        case JobFailed():
            return Failed(
                job_id=event.job_id,
                key=event.key,
                error=event.error,
                attempts=event.attempts,
                uuid=event.error.uuid,
            )
        case OutputsRefetched(job_id=job_id, key=key, outputs=outputs, uuid=uuid):
            return Refetched(
                job_id=job_id,
                key=key,
                outputs=outputs,
                uuid=uuid,
                superseded=event.superseded,
                checks=event.checks,
            )
        case ResultLost(job_id=job_id, key=key, reason=reason):
            return ResultGone(job_id=job_id, key=key, reason=reason)
    return None


class LedgerWriter:
    """Appends event lines. Call ``close`` (or use as a context manager) to fsync the tail."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.monotonic,
        syncer: Syncer | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        try:
            self._file: IO[bytes] = path.open("ab", buffering=0)
            self._terminate_torn_tail()
        except OSError as exc:
            raise StoreError(f"cannot write the ledger {path}: {exc.strerror}") from exc
        self._unsynced = 0
        self._last_sync = clock()
        self._syncer = syncer
        if syncer is not None:
            syncer.watch(self._file.fileno())

    def _terminate_torn_tail(self) -> None:
        """A crash mid-line leaves no newline; start on a fresh line so ours stay whole."""
        size = self._file.seek(0, os.SEEK_END)
        if size == 0:
            return
        with self.path.open("rb") as reader:
            reader.seek(size - 1)
            if reader.read(1) != b"\n":
                self._file.write(b"\n")

    def __call__(self, event: Event) -> None:
        record = record_for(event)
        if record is not None:
            self.write(record)

    def write(self, record: Record) -> None:
        self.write_line(to_line(record))

    def write_line(self, line: bytes) -> None:
        try:
            written = self._file.write(line)
            if written != len(line):  # a full disk can take part of a line: say so, stop
                raise OSError(28, "No space left on device (a partial write)")
            self._unsynced += 1
            if self._unsynced >= FSYNC_EVERY_LINES or self._sync_is_due():
                self._sync()
        except OSError as exc:
            raise StoreError(f"cannot write the ledger {self.path}: {exc.strerror}") from exc

    def _sync_is_due(self) -> bool:
        # With a syncer, time-based syncs are its own (every interval); without, ours.
        return self._syncer is None and self._clock() - self._last_sync >= FSYNC_EVERY_SECONDS

    def _sync(self) -> None:
        self._unsynced, self._last_sync = 0, self._clock()
        if self._syncer is not None:
            self._syncer.nudge()  # the syncer thread does it, off the event loop
        else:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        if self._syncer is not None:
            self._syncer.unwatch(self._file.fileno())
        # The lines are written; a failed final fsync only risks power-loss durability.
        with contextlib.suppress(OSError):
            os.fsync(self._file.fileno())
        # A disk that filled up mid-run: close() retries the flush of a line whose write
        # already failed (and stopped the run); that line is lost either way.
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
