"""Reading the ledger back: lines → typed records → one state per job. The only fold.

Resume, ``pipeline status`` and the review page all fold the ledger with ``apply``, so they
cannot disagree about where a job stands. The rules, in one place:

- A job's state is its latest line, except ``uploaded`` (it only records asset paths, for reuse
  by content digest) and ``retrying`` after ``submitted``: a download or poll being retried
  leaves the job ``submitted``, since its paid result is still there to fetch.
- A ``submitted`` record stays the job's pending result until a ``succeeded`` line, or a line
  for other content (a changed prompt or photo), replaces it. A ``failed`` line keeps it, so
  ``--retry-failed`` fetches (or polls) what was paid for instead of buying it again.
- A torn last line (a crash mid-write) is ignored silently; any other line that is not JSON or
  breaks the schema is counted in ``damage`` with its line number and skipped.
- An ``unknown_outcome`` (a feature call's answer lost after it was sent) counts its credits as
  spent and as "possibly charged"; a ``partial`` line leaves the job ``partial`` with what it
  delivered. Parts of a job bought one call per image, partial jobs' missing images and unknown
  outcomes are kept apart, for the few jobs that have them (``ledger.extras``).

Two states take the fold. ``LedgerState`` (resume, ``status``, the report) keeps every job in
flat columns (``pipeline.ledger.compact``: about 85 bytes a done job) and is what the checkpoint
stores; ``DetailedLedger`` (``read_ledger(path, detailed=True)``: export and the review CLI)
also keeps each job's details, retries, marketplace checks and the finish times as objects. A
new line type is one record in ``schema``, one handler here (in ``_FOLDS``) and, if it adds
per-job state, one attribute on ``JobState`` and ``compact.JobRef`` (a column, or a dict beside
the columns for what few jobs have), or, for state only a few jobs ever have, a field of
``extras.JobExtras`` (both states keep those by job id; the checkpoint stores them whole).
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec

from pipeline.images.checks import ImageChecks
from pipeline.ledger.compact import AssetTable, JobRef, JobsView, JobTable
from pipeline.ledger.extras import (
    Extras,
    JobExtras,
    fold_job_fatal,
    fold_part,
    fold_partial,
    fold_succeeded,
    fold_unknown_outcome,
)
from pipeline.ledger.schema import (
    CORE_DECODER,
    RECORD_DECODER,
    CoreRecord,
    Failed,
    JobDetails,
    Partial,
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
    UnknownOutcome,
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
    """Where one job stands, folded from its lines (the detailed fold's). A mutable msgspec
    Struct rather than a dataclass: its C ``__init__`` costs a fraction of a dataclass's;
    ``gc=False`` because its fields never make a cycle."""

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

    def has_key(self, key: str) -> bool:
        return self.key == key


# A job as the fold, the plan, the scheduler and the readers see it: a ``JobState`` or a view
# of the compact columns (``compact.JobRef``), which has the same attributes.
FoldedJob = JobState | JobRef


@dataclass(frozen=True, slots=True)
class Pending:
    """A paid feature call whose results were not all stored: fetch (or poll), don't buy."""

    result: FeatureResult
    credits: int | None
    attempts: int


@dataclass(frozen=True, slots=True)
class PartialJob:
    """A partial job's images: those delivered, those paid and never fetched, and each
    delivered output's record (for a job bought one call per image)."""

    delivered: tuple[str, ...]
    missing: tuple[int, ...]
    uuids: tuple[str, ...]


class _Folded(Protocol):
    """What ``apply`` needs of a state (both states have it)."""

    assets: Any
    extras: Extras

    def job_for(self, job_id: str, status: Status, key: str) -> FoldedJob: ...
    def spend(self, credits: int) -> None: ...
    def possibly_spent(self, credits: int) -> None: ...


class ExtrasLookup:
    """What both states answer from ``extras`` (``ledger.extras``: the few jobs bought one call
    per image, partial or with lost answers)."""

    extras: Extras

    def output_records(self, job_id: str) -> tuple[str, ...]:
        """A done job bought one call per image: each output's record (else empty)."""
        found = self.extras.get(job_id)
        return found.uuids if found is not None else ()

    def missing_of(self, job_id: str) -> tuple[int, ...]:
        """A partial job's images paid and not fetched."""
        found = self.extras.get(job_id)
        return found.missing if found is not None else ()


class LedgerState(ExtrasLookup):
    """The ledger folded compactly: what resume, ``status`` and the report read.

    ``offset`` and ``lines`` say how much of the ledger it holds (whole lines only), so the
    checkpoint (``pipeline.ledger.checkpoint``) can store it and a later read fold only the
    lines after it. ``credits_spent`` is what the ledger had spent when it was read; the lines a
    run folds in afterwards (``LedgerWriter``) add to ``run_credits`` instead, so the run's own
    figures (its summary adds this run's spend) stay as they were; so with ``possibly_charged``
    (feature calls whose answer was lost after sending) and ``run_possibly_charged``."""

    def __init__(self, *, uuids: bool = True) -> None:
        self.table = JobTable(uuids=uuids)  # uuids: see ``JobTable``
        self.jobs = JobsView(self.table)
        self.assets = AssetTable()  # upload key (content digest) -> path
        self.damage = Damage()
        self.credits_spent = 0  # estimated credits of every paid call, in every run
        self.run_credits = 0
        self.possibly_charged = 0  # feature calls whose answer was lost (unknown outcomes)
        self.run_possibly_charged = 0
        self.extras: Extras = {}  # the few jobs with parts, partial, lost answers (by id)
        self.folding_run = False  # set by the ledger writer: later spend is the run's
        self.offset = 0  # bytes of whole lines folded
        self.lines = 0  # whole lines folded
        self.checkpoint_offset = 0  # where the checkpoint it was read from ended (0: none)
        self.checkpoint_lines = 0
        self.checkpoint_note = ""  # what became of the checkpoint (``reader.read_state``)
        self._last: tuple[str, JobRef] | None = None
        self.tail_lines = 0  # ledger lines read after the checkpoint

    def job_for(self, job_id: str, status: Status, key: str) -> JobRef:
        last = self._last
        if last is not None and last[0] == job_id:
            return last[1]  # the same job as the line before: a run writes its lines in bursts
        table = self.table
        number = table.find(job_id)
        if number < 0:
            number = table.add(job_id, status)
            table.set_key(number, key)
        job = JobRef(table, number)
        self._last = (job_id, job)
        return job

    def spend(self, credits: int) -> None:
        if self.folding_run:
            self.run_credits += credits
        else:
            self.credits_spent += credits

    def possibly_spent(self, credits: int) -> None:
        """A feature call whose answer was lost: its credits may have been charged."""
        if self.folding_run:
            self.run_possibly_charged += 1
            self.run_credits += credits
        else:
            self.possibly_charged += 1
            self.credits_spent += credits

    @property
    def credits_folded(self) -> int:
        """Every run's spend, this one's too: what a checkpoint records."""
        return self.credits_spent + self.run_credits

    @property
    def possibly_charged_folded(self) -> int:
        """Every run's lost answers, this one's too: what a checkpoint records."""
        return self.possibly_charged + self.run_possibly_charged

    def status_of(self, job_id: str, key: str) -> Status | None:
        """The job's state if its latest content is ``key``, else None (a new job)."""
        state = self.state_of(job_id, key)
        return state.status if state is not None else None

    def knows(self, job_id: str) -> bool:
        """Whether any line of the ledger is about this job, whatever its content."""
        return self.table.find(job_id) >= 0

    def state_of(self, job_id: str, key: str) -> JobRef | None:
        table = self.table
        number = table.find(job_id)
        if number < 0 or not table.has_key(number, key):
            return None
        return JobRef(table, number)

    def resume(self) -> ResumeState:
        """What a run needs from earlier runs; the run's own uploads stay in its copy."""
        return ResumeState(self.jobs, self.assets, self.extras)


@dataclass
class DetailedLedger(ExtrasLookup):
    """The ledger folded into one ``JobState`` object per job, with each job's details."""

    jobs: dict[str, JobState] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)  # upload key (content digest) -> path
    damage: Damage = field(default_factory=Damage)
    credits_spent: int = 0  # estimated credits of every paid call, in every run
    possibly_charged: int = 0  # feature calls whose answer was lost (unknown outcomes)
    extras: Extras = field(default_factory=dict)  # the few jobs with parts, partial, lost answers
    finished: list[tuple[str, Status]] = field(default_factory=list)  # (ts, status), terminal
    retry_reasons: Counter[str] = field(default_factory=Counter)
    first_ts: str | None = None
    last_ts: str | None = None

    def job_for(self, job_id: str, status: Status, key: str) -> JobState:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = JobState(job_id, status, key, len(self.jobs))
        return job

    def spend(self, credits: int) -> None:
        self.credits_spent += credits

    def possibly_spent(self, credits: int) -> None:
        self.possibly_charged += 1
        self.credits_spent += credits

    def status_of(self, job_id: str, key: str) -> Status | None:
        state = self.jobs.get(job_id)
        return state.status if state is not None and state.key == key else None

    def state_of(self, job_id: str, key: str) -> JobState | None:
        state = self.jobs.get(job_id)
        return state if state is not None and state.key == key else None

    def resume(self) -> ResumeState:
        return ResumeState(self.jobs, self.assets, self.extras)


class ResumeState:
    """The scheduler's view of earlier runs: pending results and uploaded assets.

    The folded state's assets are read, never written: this run's uploads (and the ones the API
    forgot) go to ``assets``, its own layer over them."""

    def __init__(
        self,
        jobs: Mapping[str, FoldedJob] | None = None,
        base: Mapping[str, str] | None = None,
        extras: Extras | None = None,
    ) -> None:
        self.jobs: Mapping[str, FoldedJob] = jobs if jobs is not None else {}
        self.base: Mapping[str, str] = base if base is not None else {}
        self.assets: dict[str, str | None] = {}  # None: forgotten
        self.extras: Extras = extras if extras is not None else {}

    def status_of(self, job_id: str, key: str) -> Status | None:
        state = self.jobs.get(job_id)
        return state.status if state is not None and state.has_key(key) else None

    def pending_for(self, job_id: str, key: str) -> Pending | None:
        state = self.jobs.get(job_id)
        if state is None or not state.has_key(key):
            return None
        record = state.submitted
        return None if record is None else _pending(record)

    def parts_for(self, job_id: str, key: str) -> dict[int, Pending]:
        """The paid calls of a job bought one call per image, by image index (none bought
        before, or other content: empty)."""
        found = self._extras_for(job_id, key)
        if found is None:
            return {}
        return {index: _pending(record) for index, record in found.parts.items()}

    def partial_for(self, job_id: str, key: str) -> PartialJob | None:
        """A partial job's delivered and missing images (``--redo-missing`` buys the latter)."""
        found = self._extras_for(job_id, key)
        if found is None or not found.missing:
            return None
        return PartialJob(found.delivered, found.missing, found.uuids)

    def lost_answers(self, job_id: str, key: str) -> int:
        """Unknown outcomes of the job since its last job-fatal end."""
        found = self._extras_for(job_id, key)
        return found.lost if found is not None else 0

    def _extras_for(self, job_id: str, key: str) -> JobExtras | None:
        if not self.extras:
            return None
        state = self.jobs.get(job_id)
        if state is None or not state.has_key(key):
            return None
        return self.extras.get(job_id)

    def asset_for(self, digest: str | None) -> Asset | None:
        if digest is None:
            return None
        path = self.assets[digest] if digest in self.assets else self.base.get(digest)
        return None if path is None else Asset(path=path, digest=digest)

    def remember_asset(self, digest: str, path: str) -> None:
        """An upload this run made: later jobs with the same content reuse it."""
        self.assets[digest] = path

    def forget_asset(self, digest: str | None) -> None:
        """The API no longer knows this upload: the next job uploads it again."""
        if digest is not None:
            self.assets[digest] = None


def _pending(record: Submitted) -> Pending:
    result = FeatureResult(
        uuid=record.uuid,
        result_paths=record.result_paths,
        temporary_url=record.temporary_url,
        used_credit=record.used_credit,
        credit_limit=record.credit_limit,
        finished=bool(record.result_paths),
    )
    return Pending(result, _whole(record.credits), record.attempt)


# -- reading --------------------------------------------------------------------------------------


@dataclass
class Cursor:
    """Where a read of the ledger is: bytes and lines of whole lines behind it."""

    offset: int = 0
    lines: int = 0


def read_records(path: Path, damage: Damage | None = None) -> Iterator[Record]:
    """Every valid record of the ledger at ``path``, in order; damage is noted, not raised."""
    records = _records(path, damage if damage is not None else Damage(), RECORD_DECODER, Cursor())
    return (record for _, record in cast(Iterator[tuple[int, Record]], records))


def records_from(
    path: Path, damage: Damage, cursor: Cursor, *, detailed: bool = False
) -> Iterator[tuple[int, AnyRecord]]:
    """``(offset, record)`` of every valid line from ``cursor`` on, which follows the read."""
    return _records(path, damage, RECORD_DECODER if detailed else CORE_DECODER, cursor)


def _records(
    path: Path, damage: Damage, decoder: msgspec.json.Decoder, cursor: Cursor
) -> Iterator[tuple[int, AnyRecord]]:
    """One tight loop (a resume over a million lines is mostly this). Only the last line can
    lack its newline: a line that does not decode and has none is the torn tail a crash leaves,
    ignored silently (and not counted in ``cursor``: the next read starts with it); any other
    that does not decode is counted as damage."""
    try:
        handle = path.open("rb", buffering=READ_BUFFER)
    except FileNotFoundError:
        return
    decode, error = decoder.decode, msgspec.DecodeError  # (ValidationError is a DecodeError)
    number, offset = cursor.lines, cursor.offset
    damage.torn_tail = False
    with handle:
        if offset:
            handle.seek(offset)
        for raw in handle:
            number += 1
            at = offset
            whole = raw.endswith(b"\n")
            if whole:
                offset += len(raw)
                cursor.offset, cursor.lines = offset, number
            try:
                record = decode(raw)
            except error:
                if not whole:
                    damage.torn_tail = True
                elif raw.strip():
                    damage.corrupt_lines.append(number)
                continue
            yield at, record
    damage.lines = number


def read_detailed(path: Path) -> DetailedLedger:
    """The whole ledger folded into ``JobState`` objects, details included (export, CLI)."""
    state = DetailedLedger()
    with collector_paused():
        for _, record in _records(path, state.damage, RECORD_DECODER, Cursor()):
            apply(state, record, True)
    return state


def fold_tail(state: LedgerState, path: Path) -> int:
    """Fold the lines after ``state.offset`` into ``state``; returns how many were read."""
    cursor = Cursor(state.offset, state.lines)
    before = cursor.lines
    with collector_paused():
        for _, record in _records(path, state.damage, CORE_DECODER, cursor):
            apply(state, record)
    state.offset, state.lines = cursor.offset, cursor.lines
    return state.damage.lines - before


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
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


def apply(state: _Folded, record: AnyRecord, detailed: bool = False) -> FoldedJob | None:
    """Fold one record into ``state`` (the rules are in the module docstring); the job it was
    about (None for an ``uploaded`` line, which is about content, not a job)."""
    if detailed and record.ts:
        ledger = cast(DetailedLedger, state)
        ledger.first_ts = ledger.first_ts or record.ts
        ledger.last_ts = record.ts
    kind = type(record)
    if kind is Uploaded:
        for asset in record.assets.values():  # type: ignore[union-attr]
            if asset.digest:
                state.assets[asset.digest] = asset.path
        return None
    job = state.job_for(record.job_id, record.status, record.key)
    if not job.has_key(record.key):
        job.submitted = None  # a result paid for other content is not this content's result
        job.key = record.key
        if state.extras:
            state.extras.pop(record.job_id, None)
    job.updated = record.ts
    _FOLDS[kind](state, job, record, detailed)
    return job


def _started(state: _Folded, job: FoldedJob, record: StartedCore, detailed: bool) -> None:
    # A new run of the job: what earlier runs produced or hit is no longer its state (for
    # every reader alike: resume and status must not disagree about a job's outputs).
    job.status, job.outputs, job.error, job.attempts = _STARTED, (), None, None
    job.result_gone = False
    if isinstance(job, JobState):  # the compact fold keeps no checks (export reads them detailed)
        job.checks = ()
    if detailed and isinstance(record, Started) and isinstance(job, JobState):
        job.details = record.job or job.details
        job.retries = Counter()


def _submitted(state: _Folded, job: FoldedJob, record: Submitted, detailed: bool) -> None:
    # Each call is paid once: a record that was still processing is written again, with the
    # same uuid, when it finishes; that second line is not a second purchase.
    credits = _whole(record.credits)
    if record.part is not None:  # one image of a job bought one call per image
        if fold_part(state.extras, record) and credits:
            state.spend(credits)
        job.status, job.uuid = _SUBMITTED, record.uuid
        return
    earlier = job.submitted
    repeat = earlier is not None and bool(record.uuid) and earlier.uuid == record.uuid
    if not repeat and credits:
        state.spend(credits)
    job.status, job.submitted = _SUBMITTED, record
    job.uuid, job.credits = record.uuid, credits


def _retrying(state: _Folded, job: FoldedJob, record: RetryingCore, detailed: bool) -> None:
    if job.status is not _SUBMITTED:  # a download retry: the results are still there
        job.status = _RETRYING
    if detailed and isinstance(record, Retrying) and isinstance(job, JobState):
        kind = record.error.kind
        if job.retries is None:
            job.retries = Counter()
        job.retries[kind] += 1
        cast(DetailedLedger, state).retry_reasons[kind] += 1


def _succeeded(state: _Folded, job: FoldedJob, record: SucceededCore, detailed: bool) -> None:
    job.status, job.submitted = _SUCCEEDED, None
    job.outputs, job.attempts, job.credits, job.error = (
        record.outputs,
        record.attempts,
        _whole(record.credits),
        None,
    )
    job.uuid = record.uuid or job.uuid
    if state.extras or record.uuids:
        fold_succeeded(state.extras, record.job_id, record.uuids)
    if detailed:
        cast(DetailedLedger, state).finished.append((record.ts, Status.SUCCEEDED))
        if isinstance(record, Succeeded) and isinstance(job, JobState):
            job.checks = record.checks


def _refetched(state: _Folded, job: FoldedJob, record: Refetched, detailed: bool) -> None:
    # The same paid result stored again: outputs change, nothing else (no credits, no try).
    job.status, job.outputs = Status.SUCCEEDED, record.outputs
    job.uuid = record.uuid or job.uuid
    job.result_gone = False
    if detailed and isinstance(job, JobState):
        job.checks = record.checks


def _result_gone(state: _Folded, job: FoldedJob, record: ResultGone, detailed: bool) -> None:
    job.result_gone = True  # still succeeded: status reports it missing while files are gone


def _failed(state: _Folded, job: FoldedJob, record: Failed, detailed: bool) -> None:
    job.status, job.error, job.attempts = _FAILED, record.error, record.attempts
    if not record.error.transient and state.extras:
        fold_job_fatal(state.extras, record.job_id)
    if detailed:
        cast(DetailedLedger, state).finished.append((record.ts, Status.FAILED))


def _unknown_outcome(
    state: _Folded, job: FoldedJob, record: UnknownOutcome, detailed: bool
) -> None:
    # The call may have been charged: spent for the budgets, and shown as possibly charged.
    state.possibly_spent(_whole(record.credits) or 0)
    fold_unknown_outcome(state.extras, record)
    if job.status is not _SUBMITTED:
        job.status = _RETRYING


def _partial(state: _Folded, job: FoldedJob, record: Partial, detailed: bool) -> None:
    job.status, job.submitted = _PARTIAL, None
    job.outputs, job.attempts, job.credits = record.outputs, record.attempts, _whole(record.credits)
    job.error = record.error
    job.uuid = record.uuid or job.uuid
    fold_partial(state.extras, record)
    if detailed:
        cast(DetailedLedger, state).finished.append((record.ts, Status.PARTIAL))


def _whole(credits: float | None) -> int | None:
    if type(credits) is int or credits is None:  # the usual case, without round()
        return credits
    return round(credits)


# Looked up once: an enum member read off its class is an attribute lookup per line.
_STARTED, _SUBMITTED, _RETRYING = Status.STARTED, Status.SUBMITTED, Status.RETRYING
_SUCCEEDED, _FAILED, _PARTIAL = Status.SUCCEEDED, Status.FAILED, Status.PARTIAL
_Fold = Callable[[_Folded, FoldedJob, Any, bool], None]
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
    UnknownOutcome: _unknown_outcome,
    Partial: _partial,
}
