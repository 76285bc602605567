"""The ledger folded into one view per job, and the run's facts for the page's header.

Read-only: one pass over ``ledger.jsonl`` (a job's state is its latest line) and ``summary.json``
when it describes the same run. Everything here is plain data that the page's script renders.

Two folds feed it. ``read_report_fold`` (the report and ``pipeline review``) is the ledger's
compact fold, as resume and ``status`` read it, plus where each job's latest ``started`` line is
(its details and group are read back from there when needed), where the line judging its
current outputs is (its marketplace checks, read the same way) and its retries: a million-job
report holds about 110 bytes a job, not a view of each. ``read_ledger_view`` (export, the review
command) keeps a ``JobView`` per job.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import msgspec
import orjson

from pipeline.images.checks import ImageChecks
from pipeline.layout import SUMMARY_NAME
from pipeline.ledger import Damage, JobRef, JobState, LedgerState, read_ledger
from pipeline.ledger.compact import STATUS_CODE, STATUSES
from pipeline.ledger.fold import Cursor, apply, collector_paused, records_from
from pipeline.ledger.schema import (
    JobDetails,
    Partial,
    Refetched,
    Retrying,
    RetryingCore,
    Started,
    StartedCore,
    SucceededCore,
    decode_line,
)
from pipeline.models import ErrorInfo, Status

CHART_POINTS = 160  # the progress chart is sampled, so its size does not grow with the run
UNFINISHED = frozenset({"started", "submitted", "retrying"})
# Failed jobs first (they need attention), then unfinished ones, then the successes (the
# manifest's jobs not run yet come last, after the ledger's).
STATUS_RANK = {
    "failed": 0,
    "partial": 0,
    "started": 1,
    "retrying": 1,
    "submitted": 1,
    "succeeded": 2,
}

# -- the ledger, folded into one view per job ---------------------------------------------------


@dataclass
class JobView:
    job_id: str
    order: int  # first appearance in the ledger: the manifest's order for a single run
    status: str = "started"
    key: str | None = None  # the content key of the latest run
    job: dict[str, Any] = field(default_factory=dict)  # the latest `started` line's job details
    outputs: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    attempts: int | None = None
    credits: int | None = None
    retries: Counter[str] = field(default_factory=Counter)  # reasons, since the latest start
    updated: str = ""
    checks: tuple[ImageChecks, ...] = ()  # one per output when the ledger has them, else ()


@dataclass
class LedgerView:
    jobs: dict[str, JobView] = field(default_factory=dict)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (ts, status) when terminal
    retry_reasons: Counter[str] = field(default_factory=Counter)
    credits: int = 0
    images: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    damage: Damage = field(default_factory=Damage)

    def states(self) -> Counter[str]:
        return Counter(job.status for job in self.jobs.values())

    def chart(self, since: str | None) -> dict[str, Any] | None:
        return progress_series(self.finished, since)


class RunRecord(Protocol):
    """What the header is drawn from: a ``LedgerView`` or a ``ReportFold``."""

    @property
    def retry_reasons(self) -> Counter[str]: ...
    @property
    def credits(self) -> int: ...
    @property
    def images(self) -> int: ...
    @property
    def first_ts(self) -> str | None: ...
    @property
    def last_ts(self) -> str | None: ...
    @property
    def damage(self) -> Damage: ...
    def states(self) -> Counter[str]: ...
    def chart(self, since: str | None) -> dict[str, Any] | None: ...


def read_ledger_view(path: Path) -> LedgerView:
    """The ledger's one fold (``pipeline.ledger``), as the page's per-job views: the page can
    never disagree with resume or ``pipeline status`` about where a job stands."""
    state = read_ledger(path, detailed=True)
    view = LedgerView(
        finished=[(ts, status.value) for ts, status in state.finished],
        retry_reasons=Counter(state.retry_reasons),
        credits=state.credits_spent,
        first_ts=state.first_ts,
        last_ts=state.last_ts,
        damage=state.damage,
    )
    folded = state.jobs
    for job_id in list(folded):
        job = folded.pop(job_id)  # freed as its view is made: the two are never all held
        view.jobs[job_id] = _job_view(job)
        if job.status in (Status.SUCCEEDED, Status.PARTIAL):
            view.images += len(job.outputs)
    return view


def _job_view(job: JobState) -> JobView:
    return view_of(job, job.order, job.details, Counter(job.retries or {}), job.checks)


def view_of(
    job: JobState | JobRef,
    order: int,
    details: msgspec.Struct | None,
    retries: Counter[str],
    checks: tuple[ImageChecks, ...] = (),
) -> JobView:
    """The page's view of a folded job, from either fold (its details read back apart)."""
    error = job.error
    return JobView(
        job_id=job.job_id,
        order=order,
        status=job.status.value,
        key=job.key or None,
        job=msgspec.structs.asdict(details) if details is not None else {},
        outputs=list(job.outputs),
        error=None if error is None else _error_dict(error),
        attempts=job.attempts,
        credits=job.credits,
        retries=retries,
        updated=job.updated,
        checks=checks,
    )


def _error_dict(error: ErrorInfo) -> dict[str, Any]:
    return {
        "kind": error.kind,
        "message": error.message,
        "http_status": error.http_status,
        "transient": error.transient,
        "uuid": error.uuid,
    }


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_ts(ts: object) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


# -- the run summary ------------------------------------------------------------------------------


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    """summary.json, or None if it is missing or unreadable (a killed run writes none)."""
    try:
        summary = orjson.loads((out_dir / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    # The folder's summary (docs/ledger.md#history-and-summaries) holds the last run's.
    if isinstance(summary, dict) and "last_run" in summary:
        summary = summary["last_run"]
    return summary if isinstance(summary, dict) else None


def summary_is_stale(summary: dict[str, Any], view: RunRecord) -> bool:
    """True when the ledger moved on after the summary: a later run was killed before writing."""
    finished, last = parse_ts(summary.get("finished_at")), parse_ts(view.last_ts)
    if finished is None or last is None:
        return False
    try:
        return last > finished
    except TypeError:  # one of them had no zone: cannot tell, trust the summary
        return False


# -- the header -----------------------------------------------------------------------------------


@dataclass
class RunFacts:
    """What the header says, from summary.json when it describes the ledger, else the ledger."""

    title: str
    manifest: str
    started_at: str | None
    duration: float | None
    states: Counter[str]
    skipped: int | None
    retry_reasons: dict[str, int]
    credits: int | None
    account: str | None
    jobs_per_minute: float | None
    images_per_minute: float | None
    exit_code: int | None
    stopped: str | None
    notes: list[str]
    chart_since: str | None


def run_facts(out_dir: Path, view: RunRecord, summary: dict[str, Any] | None) -> RunFacts:
    states = view.states()
    notes = _damage_notes(view)
    if summary is not None and summary_is_stale(summary, view):
        notes.append("summary.json is older than the ledger: the last run did not finish")
        summary = None
    elif summary is None:
        notes.append("no summary.json (the run did not finish?): the figures are from the ledger")
    if summary is None:
        return _facts_from_ledger(out_dir, view, states, notes)
    return _facts_from_summary(out_dir, summary, states, notes)


def _damage_notes(view: RunRecord) -> list[str]:
    notes = []
    if view.damage.torn_tail:
        notes.append("the ledger's last line was torn (a crash mid-write) and was ignored")
    if view.damage.corrupt_lines:
        shown = ", ".join(map(str, view.damage.corrupt_lines[:10]))
        notes.append(f"unreadable ledger lines skipped: {shown}")
    return notes


def _facts_from_summary(
    out_dir: Path, summary: dict[str, Any], states: Counter[str], notes: list[str]
) -> RunFacts:
    stats = _dict(summary.get("stats"))
    reasons = {
        key.removeprefix("retry/reason/"): value
        for key, value in stats.items()
        if key.startswith("retry/reason/") and isinstance(value, int)
    }
    counts = _dict(summary.get("counts"))
    throughput = _dict(summary.get("throughput"))
    credits = _dict(summary.get("credits"))
    stopped = _dict(summary.get("stopped"))
    manifest = summary.get("manifest")
    used, limit = credits.get("account_used"), credits.get("account_limit")
    return RunFacts(
        title=str(summary.get("name") or out_dir.resolve().name),
        manifest=PurePosixPath(str(manifest)).name if manifest else "",
        started_at=str(summary.get("started_at") or "") or None,
        duration=_number(summary.get("wall_seconds")),
        states=states,
        skipped=_int_or_none(counts.get("skipped")),
        retry_reasons=reasons,
        credits=_int_or_none(credits.get("estimated")),
        account=f"{used:,} of {limit:,} used" if used is not None and limit is not None else None,
        jobs_per_minute=_number(throughput.get("jobs_per_minute")),
        images_per_minute=_number(throughput.get("images_per_minute")),
        exit_code=_int_or_none(summary.get("exit_code")),
        stopped=str(stopped.get("message") or stopped.get("reason") or "") or None,
        notes=notes,
        chart_since=str(summary.get("started_at") or "") or None,
    )


def _facts_from_ledger(
    out_dir: Path, view: RunRecord, states: Counter[str], notes: list[str]
) -> RunFacts:
    first, last = parse_ts(view.first_ts), parse_ts(view.last_ts)
    duration = (last - first).total_seconds() if first and last else None
    per_minute = 60 / duration if duration else None
    return RunFacts(
        title=out_dir.resolve().name,
        manifest="",
        started_at=view.first_ts,
        duration=duration,
        states=states,
        skipped=None,
        retry_reasons=dict(view.retry_reasons),
        credits=view.credits,
        account=None,
        jobs_per_minute=round(states["succeeded"] * per_minute, 2) if per_minute else None,
        images_per_minute=round(view.images * per_minute, 2) if per_minute else None,
        exit_code=None,
        stopped=None,
        notes=notes,
        chart_since=None,
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _cumulative(
    events: Sequence[tuple[float, str]], t0: float, span: float
) -> tuple[list[int], list[int]]:
    """Counts at CHART_POINTS evenly spaced moments: one walk over the sorted events."""
    ok, failed, index = 0, 0, 0
    ok_line, failed_line = [0], [0]
    for step in range(1, CHART_POINTS + 1):
        until = t0 + span * step / CHART_POINTS
        while index < len(events) and events[index][0] <= until + 1e-9:
            if events[index][1] == "succeeded":
                ok += 1
            else:
                failed += 1
            index += 1
        ok_line.append(ok)
        failed_line.append(failed)
    return ok_line, failed_line


def progress_series(
    finished: Sequence[tuple[str, str]], since: str | None
) -> dict[str, Any] | None:
    """Cumulative succeeded and failed counts at CHART_POINTS moments, for the page to draw."""
    start = parse_ts(since)
    events: list[tuple[float, str]] = []
    for ts, status in finished:
        moment = parse_ts(ts)
        if moment is None:
            continue
        try:
            if start is not None and moment < start:
                continue  # an earlier run: the chart shows the run the header describes
        except TypeError:
            continue
        events.append((moment.timestamp(), status))
    if not events:
        return None
    events.sort()
    t0 = start.timestamp() if start is not None else events[0][0]
    span = max(events[-1][0] - t0, 1e-3)
    ok_line, failed_line = _cumulative(events, t0, span)
    return {"ok": ok_line, "failed": failed_line, "span": round(span, 3)}


def binned_series(
    moments: Callable[[], Iterator[tuple[float, bool]]], since: str | None
) -> dict[str, Any] | None:
    """``progress_series`` from (seconds, succeeded?) moments, in two passes over them and
    CHART_POINTS counters: no list of a million finished jobs is made or sorted."""
    start = parse_ts(since)
    floor = start.timestamp() if start is not None and start.tzinfo is not None else None
    first = last = None
    for moment, _ in moments():
        if floor is not None and moment < floor:
            continue  # an earlier run: the chart shows the run the header describes
        first = moment if first is None or moment < first else first
        last = moment if last is None or moment > last else last
    if first is None or last is None:
        return None
    t0 = floor if floor is not None else first
    span = max(last - t0, 1e-3)
    ok_bins, failed_bins = [0] * (CHART_POINTS + 1), [0] * (CHART_POINTS + 1)
    for moment, succeeded in moments():
        if moment < t0:
            continue
        step = max(1, math.ceil((moment - t0) / span * CHART_POINTS - 1e-9))
        (ok_bins if succeeded else failed_bins)[min(step, CHART_POINTS)] += 1
    return {"ok": _running(ok_bins), "failed": _running(failed_bins), "span": round(span, 3)}


def _running(bins: list[int]) -> list[int]:
    total, line = 0, []
    for count in bins:
        total += count
        line.append(total)
    return line


def header_data(out_dir: Path, view: RunRecord, summary: dict[str, Any] | None) -> dict[str, Any]:
    """Everything the page's header shows, as JSON-ready data (the script draws it)."""
    facts = run_facts(out_dir, view, summary)
    data = asdict(facts)
    data["states"] = dict(facts.states)
    data["unfinished"] = sum(facts.states[s] for s in UNFINISHED)
    data["chart"] = view.chart(facts.chart_since)
    return data


# -- the compact fold, for the report at any size -------------------------------------------------

# A status code's rank on the page, as a table for ``bytes.translate`` (one pass in C).
RANK_OF_STATUS = bytes(
    STATUS_RANK.get(STATUSES[code].value, 1) if code < len(STATUSES) else 1 for code in range(256)
)


class ReportFold:
    """The ledger's compact fold (``LedgerState``, as resume reads it) and what only the page
    shows: where each job's latest ``started`` line is (its details are read from there when
    its row is made), its retries since then, the run's first and last stamps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = LedgerState(uuids=False)  # the page shows no record uuid: 16 bytes a job
        offsets = _offset_typecode(path)
        self.started_at = array(offsets)  # offset + 1 of the latest started line with details
        # offset + 1 of the line whose checks judge the job's current outputs (succeeded or
        # refetched, since the latest start); 0: none (not run to the end, or a partial job)
        self.checks_at = array(offsets)
        self.retries: dict[int, Counter[str]] = {}
        self.retry_reasons: Counter[str] = Counter()
        self.first_ts: str | None = None
        self.last_ts: str | None = None
        self._reader: Any = None

    @property
    def damage(self) -> Damage:
        return self.state.damage

    @property
    def credits(self) -> int:
        return self.state.credits_spent

    @property
    def images(self) -> int:
        table, status = self.state.table, self.state.table.status
        delivered = (STATUS_CODE[Status.SUCCEEDED], STATUS_CODE[Status.PARTIAL])
        return sum(table.output_total(n) for n in range(len(table)) if status[n] in delivered)

    def states(self) -> Counter[str]:
        codes = Counter(self.state.table.status)
        return Counter({STATUSES[code].value: count for code, count in codes.items()})

    def chart(self, since: str | None) -> dict[str, Any] | None:
        table = self.state.table
        done = STATUS_CODE[Status.SUCCEEDED]
        # A partial job's end is drawn with the failed ones, as the detailed fold's chart does.
        ended = {done, STATUS_CODE[Status.FAILED], STATUS_CODE[Status.PARTIAL]}

        def moments() -> Iterator[tuple[float, bool]]:
            status, updated = table.status, table.updated
            for number in range(len(table)):
                code = status[number]
                if code in ended and updated[number]:
                    yield updated[number] / 1000, code == done

        return binned_series(moments, since)

    def ranked(self) -> Iterator[int]:
        """Job numbers in the page's order: failed, unfinished, succeeded; first seen first."""
        ranks = self.state.table.status.translate(RANK_OF_STATUS)
        for rank in sorted({RANK_OF_STATUS[code] for code in range(len(STATUSES))}):
            marker = bytes([rank])
            number = ranks.find(marker)
            while number >= 0:
                yield number
                number = ranks.find(marker, number + 1)

    def details(self, number: int) -> JobDetails | None:
        """The job's details, from its latest ``started`` line."""
        line = self._line(self.started_at, number)
        record = decode_line(line) if line is not None else None
        return record.job if isinstance(record, Started) else None

    def group(self, number: int) -> str | None:
        """The job's ``group`` (its product), read alone from its latest ``started`` line."""
        line = self._line(self.started_at, number)
        if line is None:
            return None
        try:
            job = _GROUP_DECODER.decode(line).job
        except msgspec.DecodeError:
            return None
        return job.group if job is not None else None

    def checks(self, number: int) -> tuple[ImageChecks, ...]:
        """The marketplace checks of the job's current outputs (one per output), or ()."""
        line = self._line(self.checks_at, number)
        if line is None:
            return ()
        try:
            return _CHECKS_DECODER.decode(line).checks
        except msgspec.DecodeError:
            return ()  # a line older than the checks, or one broken only there

    def _line(self, offsets: array[int], number: int) -> bytes | None:
        at = offsets[number] - 1 if number < len(offsets) else -1
        if at < 0:
            return None
        if self._reader is None:
            self._reader = self.path.open("rb")
        self._reader.seek(at)
        line: bytes = self._reader.readline()
        return line

    def view(self, number: int, with_checks: bool = False) -> JobView:
        """The page's view of one job (what ``read_ledger_view`` makes for every job);
        ``with_checks``: its outputs' marketplace checks too (one more line read)."""
        job = JobRef(self.state.table, number)
        checks = self.checks(number) if with_checks else ()
        retries = Counter(self.retries.get(number, ()))
        return view_of(job, number, self.details(number), retries, checks)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _GroupOnly(msgspec.Struct):
    group: str | None = None


class _StartedGroup(msgspec.Struct):
    """A ``started`` line read for its job's group alone (the rest is skipped unread)."""

    job: _GroupOnly | None = None


class _ChecksLine(msgspec.Struct):
    """A ``succeeded`` or ``refetched`` line read for its outputs' checks alone."""

    checks: tuple[ImageChecks, ...] = ()


_GROUP_DECODER = msgspec.json.Decoder(_StartedGroup)
_CHECKS_DECODER = msgspec.json.Decoder(_ChecksLine)


# Ledgers below this size keep their line offsets in 4 bytes a job, not 8 (8 MB at a million
# jobs); the margin leaves room for the lines a running run appends while the page reads.
SMALL_LEDGER_BYTES = 2**31


def _offset_typecode(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return "I" if size < SMALL_LEDGER_BYTES else "q"


def read_report_fold(path: Path) -> ReportFold:
    """The whole ledger, folded compactly for the page (see ``ReportFold``). Lines are decoded
    as resume decodes them (details skipped: a row reads its job's from the started line); a
    ``retrying`` line is read again whole for its reason."""
    fold = ReportFold(path)
    state, started_at, retries = fold.state, fold.started_at, fold.retries
    checks_at = fold.checks_at
    cursor = Cursor()
    with collector_paused(), path.open("rb") as again:
        for offset, record in records_from(path, state.damage, cursor):
            if record.ts:
                fold.first_ts = fold.first_ts or record.ts
                fold.last_ts = record.ts
            job = apply(state, record)
            if not isinstance(job, JobRef):
                continue
            number = job.number
            if number >= len(started_at):
                started_at.append(0)
                checks_at.append(0)
            kind = type(record)
            if kind is StartedCore:
                retries.pop(number, None)
                started_at[number] = offset + 1
                checks_at[number] = 0
            elif kind is SucceededCore or kind is Refetched:
                checks_at[number] = offset + 1
            elif kind is Partial:
                checks_at[number] = 0
            elif kind is RetryingCore:
                again.seek(offset)
                whole = decode_line(again.readline())
                reason = whole.error.kind if isinstance(whole, Retrying) else "unknown"
                retries.setdefault(number, Counter())[reason] += 1
                fold.retry_reasons[reason] += 1
    state.offset, state.lines = cursor.offset, cursor.lines
    return fold
