"""The append-only ledger writer: an event listener that turns events into typed records.

One JSON object per line, each line written whole with a single unbuffered ``write`` (so a
killed process loses no line it reported), fsynced in small batches (every
``FSYNC_EVERY_LINES`` lines or ``FSYNC_EVERY_SECONDS``), by a ``durability.Syncer`` thread when
one is given, never rewritten in place. A crash can only tear the last line; readers ignore it.

Given the run's folded state (``fold.LedgerState``, as ``read_ledger`` made it), the writer also
folds every line it writes into it and keeps its checkpoint (``checkpoint``): at once when the
state was read from a long tail (``CHECKPOINT_EVERY_LINES`` or more lines after the last
checkpoint, e.g. none yet), every ``CHECKPOINT_EVERY_LINES`` lines, and at ``close``. During the
run the columns are copied on the event loop (a memory copy: about 0.1 s for a million jobs) and
written, checksummed and fsynced by a thread; at open and close they are written directly.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from pipeline.durability import Syncer
from pipeline.errors import StoreError
from pipeline.events import (
    AnswerLostAfterSending,
    AssetsUploaded,
    Event,
    FeatureSubmitted,
    JobFailed,
    JobPartial,
    JobRetrying,
    JobStarted,
    JobSucceeded,
    OutputsRefetched,
    RecordFinished,
    ResultLost,
)
from pipeline.ledger.checkpoint import snapshot, write_checkpoint, write_snapshot
from pipeline.ledger.fold import AnyRecord, LedgerState, apply, fold_tail
from pipeline.ledger.schema import (
    AssetRecord,
    Failed,
    JobDetails,
    Partial,
    Record,
    Refetched,
    ResultGone,
    Retrying,
    Started,
    Submitted,
    Succeeded,
    UnknownOutcome,
    Uploaded,
    decode_core_line,
    stamped,
    to_line,
)

FSYNC_EVERY_LINES = 64
FSYNC_EVERY_SECONDS = 1.0
# A killed run's next resume reads at most this many lines beyond the checkpoint (about 0.4 s
# for 100,000); each mid-run checkpoint costs a copy of the state on the event loop (about
# 0.1 s at a million jobs), so they stay rare against the run's own pace.
CHECKPOINT_EVERY_LINES = 100_000


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
                part=event.part,
            )
        case AnswerLostAfterSending():
            return UnknownOutcome(
                job_id=event.job_id,
                key=event.key,
                step=event.step,
                attempt=event.attempt,
                http_status=event.error.http_status,
                error=event.error,
                credits=event.credits,
                part=event.part,
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
                uuids=event.uuids,
            )
        case JobPartial():
            return Partial(
                job_id=event.job_id,
                key=event.key,
                outputs=event.outputs,
                missing=event.missing,
                uuid=event.uuid,
                uuids=event.uuids,
                attempts=event.attempts,
                credits=event.credits,
                error=event.error,
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
        state: LedgerState | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY_LINES,
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
        self.checkpoints = None if state is None else Checkpoints(path, state, checkpoint_every)

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
        record = stamped(record)
        self.write_line(to_line(record), record)

    def write_line(self, line: bytes, record: AnyRecord | None = None) -> None:
        try:
            written = self._file.write(line)
            if written != len(line):  # a full disk can take part of a line: say so, stop
                raise OSError(28, "No space left on device (a partial write)")
            self._unsynced += 1
            if self._unsynced >= FSYNC_EVERY_LINES or self._sync_is_due():
                self._sync()
        except OSError as exc:
            raise StoreError(f"cannot write the ledger {self.path}: {exc.strerror}") from exc
        if self.checkpoints is not None:
            self.checkpoints.written(line, record)

    def _sync_is_due(self) -> bool:
        # With a syncer, time-based syncs are its own (every interval); without, ours.
        return self._syncer is None and self._clock() - self._last_sync >= FSYNC_EVERY_SECONDS

    def _sync(self) -> None:
        self._unsynced, self._last_sync = 0, self._clock()
        if self._syncer is not None:
            self._syncer.nudge()  # the syncer thread does it, off the event loop
        else:
            os.fsync(self._file.fileno())

    def close(self, checkpoint: bool = True) -> None:
        """fsync the tail and close; then write the checkpoint (unless told not to: a second
        Ctrl-C wants out at once, and the next resume folds the lines it lacks)."""
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
        if self.checkpoints is not None:
            self.checkpoints.close(write=checkpoint)

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Checkpoints:
    """The run's folded state, kept up to date line by line and checkpointed now and then.

    Writing a checkpoint is never an error: a full disk or a read-only folder leaves the last
    one (or none), and the next resume folds a longer tail; ``failure`` says why."""

    def __init__(self, ledger: Path, state: LedgerState, every: int) -> None:
        self.ledger = ledger
        self.state = state
        self.every = max(1, every)
        self.failure: str | None = None
        self.written_count = 0
        # Lines after the read (the torn tail the writer just closed, now a line) first.
        fold_tail(state, ledger)
        state.folding_run = True
        self._saved_offset, self._saved_lines = state.checkpoint_offset, state.checkpoint_lines
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[object] | None = None
        if state.lines - self._saved_lines >= self.every:
            self._write_now()  # a long tail (or no checkpoint yet): before the run goes on

    def written(self, line: bytes, record: AnyRecord | None) -> None:
        state = self.state
        if record is None:
            record = decode_core_line(line)
        if record is not None:
            apply(state, record)
        else:
            state.damage.corrupt_lines.append(state.lines + 1)
        state.offset += len(line)
        state.lines += 1
        state.damage.lines = state.lines
        if state.lines - self._saved_lines >= self.every:
            self._write_in_background()

    def _write_in_background(self) -> None:
        if self._pending is not None and not self._pending.done():
            return  # the last one is still being written: the next line asks again
        snap = snapshot(self.state, self.ledger, copy=True)
        if snap is None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = self._pool.submit(self._guarded, write_snapshot, snap, self.ledger)
        self._saved_offset, self._saved_lines = snap.offset, snap.lines

    def _write_now(self) -> None:
        self._guarded(write_checkpoint, self.state, self.ledger)
        self._saved_offset, self._saved_lines = self.state.offset, self.state.lines

    def _guarded(self, write: Callable[..., object], *args: object) -> None:
        try:
            write(*args)
        except OSError as exc:
            self.failure = f"cannot write the checkpoint: {exc.strerror or exc}"
        except Exception as exc:  # derived data: no fault in it may stop a paid run
            self.failure = f"cannot write the checkpoint: {type(exc).__name__}: {exc}"
        else:
            self.written_count += 1

    def close(self, write: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if write and self.state.offset != self._saved_offset:
            self._write_now()
