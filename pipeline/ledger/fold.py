"""Reading the ledger back: lines → typed records → one state per job. The only fold.

Resume, ``pipeline status`` and the review page all read the ledger through ``read_ledger``, so
they cannot disagree about where a job stands. The rules, in one place:

- A job's state is its latest line, except ``uploaded`` (it only records asset paths, for reuse
  by content digest) and ``retrying`` after ``submitted``: a download or poll being retried
  leaves the job ``submitted``, since its paid result is still there to fetch.
- A ``submitted`` record stays the job's pending result until a ``succeeded`` line, or a line
  for other content (a changed prompt or photo), replaces it. A ``failed`` line keeps it, so
  ``--retry-failed`` fetches (or polls) what was paid for instead of buying it again.
- A torn last line (a crash mid-write) is ignored silently; any other line that is not JSON or
  breaks the schema is counted in ``damage`` with its line number and skipped.

``detailed=False`` (resume) keeps only what the scheduler needs per job; ``detailed=True``
(status, report) also keeps each job's details, outputs, retries and the finish times.
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

from pipeline.images.checks import ImageChecks
from pipeline.ledger.schema import (
    CORE_DECODER,
    RECORD_DECODER,
    CoreRecord,
    Failed,
    JobDetails,
    Record,
    Refetched,
    ResultGone,
    Retrying,
    RetryingCore,
    Started,
    StartedCore,
    Status,
    Submitted,
    Succeeded,
    SucceededCore,
    Uploaded,
)
from pipeline.models import Asset, ErrorInfo, FeatureResult

AnyRecord = Record | CoreRecord
READ_BUFFER = 1 << 20  # a million-line ledger is read in large blocks, not 8 KB ones


@dataclass
class Damage:
    """What could not be read: reported, never fatal."""

    corrupt_lines: list[int] = field(default_factory=list)
    torn_tail: bool = False
    lines: int = 0


class JobState(msgspec.Struct, gc=False):
    """Where one job stands, folded from its lines. A mutable msgspec Struct rather than a
    dataclass: a resume over a million lines makes one per job, and its C ``__init__`` costs a
    fraction of a dataclass's; ``gc=False`` because its fields never make a cycle."""

    job_id: str
    status: Status
    key: str
    order: int  # first appearance in the ledger
    submitted: Submitted | None = None  # a paid result not yet stored: fetch or poll it
    outputs: tuple[str, ...] = ()
    error: ErrorInfo | None = None
    attempts: int | None = None
    credits: int | None = None
    uuid: str = ""
    updated: str = ""
    details: JobDetails | None = None  # detailed folds only
    retries: Counter[str] | None = None  # detailed folds only: reasons since the latest start
    result_gone: bool = False  # its lost outputs cannot be fetched again (``ResultGone``)
    checks: tuple[ImageChecks, ...] = ()  # detailed folds only: the outputs' marketplace checks


@dataclass(frozen=True, slots=True)
class Pending:
    """A paid feature call whose results were not all stored: fetch (or poll), don't buy."""

    result: FeatureResult
    credits: int | None
    attempts: int


@dataclass
class LedgerState:
    jobs: dict[str, JobState] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)  # upload key (content digest) -> path
    damage: Damage = field(default_factory=Damage)
    credits_spent: int = 0  # estimated credits of every paid call, in every run
    # detailed folds only:
    finished: list[tuple[str, Status]] = field(default_factory=list)  # (ts, status), terminal
    retry_reasons: Counter[str] = field(default_factory=Counter)
    first_ts: str | None = None
    last_ts: str | None = None

    def status_of(self, job_id: str, key: str) -> Status | None:
        """The job's state if its latest content is ``key``, else None (a new job)."""
        state = self.jobs.get(job_id)
        return state.status if state is not None and state.key == key else None

    def state_of(self, job_id: str, key: str) -> JobState | None:
        state = self.jobs.get(job_id)
        return state if state is not None and state.key == key else None

    def resume(self) -> ResumeState:
        """What a run needs from earlier runs; the run's own changes stay in its copy."""
        return ResumeState(self.jobs, dict(self.assets))


@dataclass
class ResumeState:
    """The scheduler's view of earlier runs: pending results and uploaded assets."""

    jobs: dict[str, JobState] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)

    def status_of(self, job_id: str, key: str) -> Status | None:
        state = self.jobs.get(job_id)
        return state.status if state is not None and state.key == key else None

    def pending_for(self, job_id: str, key: str) -> Pending | None:
        state = self.jobs.get(job_id)
        if state is None or state.key != key or state.submitted is None:
            return None
        record = state.submitted
        result = FeatureResult(
            uuid=record.uuid,
            result_paths=record.result_paths,
            temporary_url=record.temporary_url,
            used_credit=record.used_credit,
            credit_limit=record.credit_limit,
        )
        return Pending(result, _whole(record.credits), record.attempt)

    def asset_for(self, digest: str | None) -> Asset | None:
        if digest is None or digest not in self.assets:
            return None
        return Asset(path=self.assets[digest], digest=digest)

    def remember_asset(self, digest: str, path: str) -> None:
        """An upload this run made: later jobs with the same content reuse it."""
        self.assets[digest] = path

    def forget_asset(self, digest: str | None) -> None:
        """The API no longer knows this upload: the next job uploads it again."""
        if digest is not None:
            self.assets.pop(digest, None)


# -- reading --------------------------------------------------------------------------------------


def read_records(path: Path, damage: Damage | None = None) -> Iterator[Record]:
    """Every valid record of the ledger at ``path``, in order; damage is noted, not raised."""
    records = _records(path, damage if damage is not None else Damage(), RECORD_DECODER)
    return cast(Iterator[Record], records)  # decode_line makes full records only


def _records(path: Path, damage: Damage, decoder: msgspec.json.Decoder) -> Iterator[AnyRecord]:
    """One tight loop (a resume over a million lines is mostly this). Only the last line can
    lack its newline: a line that does not decode and has none is the torn tail a crash leaves,
    ignored silently; any other that does not decode is counted as damage."""
    try:
        handle = path.open("rb", buffering=READ_BUFFER)
    except FileNotFoundError:
        return
    decode, error = decoder.decode, msgspec.DecodeError  # (ValidationError is a DecodeError)
    number = 0
    with handle:
        for raw in handle:
            number += 1
            try:
                yield decode(raw)
            except error:
                if not raw.endswith(b"\n"):
                    damage.torn_tail = True
                elif raw.strip():
                    damage.corrupt_lines.append(number)
    damage.lines = number


def read_ledger(path: Path, *, detailed: bool = False) -> LedgerState:
    """The ledger folded into job states. ``detailed=False`` (resume) decodes only the fields
    a run needs (``schema.CoreRecord``); the fold is the same."""
    state = LedgerState()
    fold = apply
    decoder = RECORD_DECODER if detailed else CORE_DECODER
    with _collector_paused():
        for record in _records(path, state.damage, decoder):
            fold(state, record, detailed)
    return state


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The fold only adds objects that never form cycles, hundreds of thousands of them: the
    cyclic collector would walk them again and again as they pile up, for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- the fold -------------------------------------------------------------------------------------


def apply(state: LedgerState, record: AnyRecord, detailed: bool = False) -> None:
    """Fold one record into ``state`` (the rules are in the module docstring)."""
    if detailed and record.ts:
        state.first_ts = state.first_ts or record.ts
        state.last_ts = record.ts
    kind = type(record)
    if kind is Uploaded:
        for asset in record.assets.values():  # type: ignore[union-attr]
            if asset.digest:
                state.assets[asset.digest] = asset.path
        return
    jobs = state.jobs
    job = jobs.get(record.job_id)
    if job is None:
        job = jobs[record.job_id] = JobState(record.job_id, record.status, record.key, len(jobs))
    elif job.key != record.key:
        job.submitted = None  # a result paid for other content is not this content's result
    job.key, job.updated = record.key, record.ts
    _FOLDS[kind](state, job, record, detailed)


def _started(state: LedgerState, job: JobState, record: StartedCore, detailed: bool) -> None:
    # A new run of the job: what earlier runs produced or hit is no longer its state (for
    # every reader alike: resume and status must not disagree about a job's outputs).
    job.status, job.outputs, job.error, job.attempts = _STARTED, (), None, None
    job.result_gone, job.checks = False, ()
    if detailed and isinstance(record, Started):
        job.details = record.job or job.details
        job.retries = Counter()


def _submitted(state: LedgerState, job: JobState, record: Submitted, detailed: bool) -> None:
    # Each call is paid once: a record that was still processing is written again, with the
    # same uuid, when it finishes; that second line is not a second purchase.
    repeat = job.submitted is not None and bool(record.uuid) and job.submitted.uuid == record.uuid
    credits = _whole(record.credits)
    if not repeat:
        state.credits_spent += credits or 0
    job.status, job.submitted = _SUBMITTED, record
    job.uuid, job.credits = record.uuid, credits


def _retrying(state: LedgerState, job: JobState, record: RetryingCore, detailed: bool) -> None:
    if job.status is not _SUBMITTED:  # a download retry: the results are still there
        job.status = _RETRYING
    if detailed and isinstance(record, Retrying):
        kind = record.error.kind
        if job.retries is None:
            job.retries = Counter()
        job.retries[kind] += 1
        state.retry_reasons[kind] += 1


def _succeeded(state: LedgerState, job: JobState, record: SucceededCore, detailed: bool) -> None:
    job.status, job.submitted = _SUCCEEDED, None
    job.outputs, job.attempts, job.credits, job.error = (
        record.outputs,
        record.attempts,
        _whole(record.credits),
        None,
    )
    job.uuid = record.uuid or job.uuid
    if detailed:
        state.finished.append((record.ts, Status.SUCCEEDED))
        if isinstance(record, Succeeded):
            job.checks = record.checks


def _refetched(state: LedgerState, job: JobState, record: Refetched, detailed: bool) -> None:
    # The same paid result stored again: outputs change, nothing else (no credits, no try).
    job.status, job.outputs = Status.SUCCEEDED, record.outputs
    job.uuid = record.uuid or job.uuid
    job.result_gone = False
    if detailed:
        job.checks = record.checks


def _result_gone(state: LedgerState, job: JobState, record: ResultGone, detailed: bool) -> None:
    job.result_gone = True  # still succeeded: status reports it missing while files are gone


def _failed(state: LedgerState, job: JobState, record: Failed, detailed: bool) -> None:
    job.status, job.error, job.attempts = _FAILED, record.error, record.attempts
    if detailed:
        state.finished.append((record.ts, Status.FAILED))


def _whole(credits: float | None) -> int | None:
    if type(credits) is int or credits is None:  # the usual case, without round()
        return credits
    return round(credits)


# Looked up once: an enum member read off its class is an attribute lookup per line.
_STARTED, _SUBMITTED, _RETRYING = Status.STARTED, Status.SUBMITTED, Status.RETRYING
_SUCCEEDED, _FAILED = Status.SUCCEEDED, Status.FAILED
_Fold = Callable[[LedgerState, JobState, Any, bool], None]
_FOLDS: dict[type, _Fold] = {
    Started: _started,
    StartedCore: _started,
    Submitted: _submitted,
    Retrying: _retrying,
    RetryingCore: _retrying,
    Succeeded: _succeeded,
    SucceededCore: _succeeded,
    Failed: _failed,
    Refetched: _refetched,
    ResultGone: _result_gone,
}
