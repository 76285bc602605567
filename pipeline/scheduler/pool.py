"""The pool: planned jobs are admitted as in-flight slots free up, each run as a task of its own.

Each job goes through upload → feature → (poll) → fetch → store. Retries happen here, step by
step: a failed download is retried from the stored result and never buys the edit again; an
upload is shared by every job with the same input bytes; a record still processing is polled by
its uuid (written to the ledger first), never bought again.

Every request to the API host (upload, feature call, poll) passes the shared throttle; result
and input downloads do not. ``--concurrency`` bounds jobs in flight, from admission to their last
line, whether their call is held open (sync) or their record is polled (async): a fixed number,
or under ``auto`` the limit ``inflight.InflightController`` keeps to fill the request budget at
the edit time it observes (it changes during the run; ``inflight.Slots`` admits under it). A
run's edit rate is so bounded by ``--rpm`` over the requests each edit costs, not by
concurrency over processing time.

Run-fatal errors (key rejected, out of credits, a budget reached, the circuit breaker) and
signals stop the intake; jobs already in flight settle, untouched jobs keep no ledger line and
so stay resumable. The breaker: when ``breaker_jobs`` jobs in a row run out of retries on
transient errors, the run stops and those jobs are deferred (``JobDeferred``), not failed.

``attempts`` on a job's succeeded/failed line: every feature call sent (each counts, answered
or not) plus every failed try of its other steps (input fetch, upload, poll, download), 429s
excepted (flow control). A clean job shows 1; a job whose download was retried twice shows 3.

The scheduler only emits events; the ledger, progress bar and statistics listen. Its parts are
objects of their own (``purchase``, ``polling``, ``results``; ``build.build_scheduler``); this
module keeps the run itself: admission, one job's course and the breaker.

A job's course is its parts (``job.Part``): one paid call for the whole job, or one per image
where the result bucket serves a record's first result only. Each part is polled if needed and
fetched; a paid image out of reach makes the job ``partial`` (``JobPartial``), never a silent
purchase. A job failed on answers lost twice (``outcome_unknown``) is counted too: as many in a
row as the breaker counts stop the run.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from pipeline.errors import (
    InputUnreadable,
    JobFatal,
    OutcomeUnknown,
    PipelineError,
    RecordFailed,
    RecordUnknown,
    RunFatal,
    StopReason,
    StoreError,
    TransientError,
)
from pipeline.events import (
    ConcurrencyChanged,
    EventBus,
    JobDeferred,
    JobFailed,
    JobPartial,
    JobStarted,
    JobSucceeded,
    RunStopping,
)
from pipeline.models import PlannedJob
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.inflight import InflightController, Slots
from pipeline.scheduler.job import (
    Exhausted,
    JobRun,
    Part,
    PartialImages,
    ResumeState,
    RunOutcome,
    Sleep,
    StopSignal,
    cdn_challenged,
    error_info,
    is_systemic,
)
from pipeline.scheduler.polling import Polling
from pipeline.scheduler.purchase import Purchase
from pipeline.scheduler.results import Fetched, Results
from pipeline.scheduler.uploads import Uploads
from pipeline.store.local import Store

T = TypeVar("T")
SETTLING_STOPS = frozenset(
    {StopReason.MAX_CREDITS, StopReason.MAX_TOTAL_CREDITS, StopReason.INTERRUPTED}
)
ADMISSION_BURST = 4  # under auto, admissions this many intervals ahead of the pace may go now
MIN_QUEUE_RECHECK = 0.1  # seconds: how often a held admission looks at the gate's queue again


class Scheduler:
    def __init__(
        self,
        *,
        bus: EventBus,
        store: Store,
        resume: ResumeState,
        uploads: Uploads,
        purchase: Purchase,
        polling: Polling,
        results: Results,
        credits: CreditBudget,
        stop: StopSignal,
        slots: Slots,
        inflight: InflightController | None,
        breaker_jobs: int,
        clock: Callable[[], float],
        sleep: Sleep,
    ) -> None:
        self._bus = bus
        self._store = store
        self._resume = resume
        self._uploads = uploads
        self._purchase = purchase
        self._polling = polling
        self._results = results
        self.credits = credits
        self._stop = stop
        self._slots = slots  # admission: at most the limit of jobs in flight
        self._inflight = inflight  # the limit's controller under --concurrency auto
        self._breaker_jobs = breaker_jobs
        self._clock = clock
        self._sleep = sleep
        self._outcome = RunOutcome()
        self._held: list[Exhausted] = []  # the current streak of transient exhaustions
        self._lost_streak = 0  # jobs in a row failed on answers lost twice (outcome_unknown)
        self._jobs: set[asyncio.Task[None]] = set()  # jobs in flight, a task each
        self._crashes: list[BaseException] = []  # bugs raised by job tasks, raised by run()
        self._shown_limit: int | None = None
        self._next_admission = -math.inf

    @property
    def credits_spent(self) -> int:
        return self.credits.estimated

    # -- the run ------------------------------------------------------------------------------

    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop taking jobs; in-flight ones settle. The first reason given is the one kept."""
        if self._stop.is_set():
            return
        self._outcome = RunOutcome(reason, message)
        # A credit budget or a signal stops the buying only: records already paid are still
        # polled and fetched ("finishing the jobs in flight"; a second signal exits at once).
        self._stop.set(records_settle=reason in SETTLING_STOPS)
        self._bus.emit(RunStopping(reason, message))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, planned: Iterable[PlannedJob]) -> RunOutcome:
        self._note_limit()
        dispatcher = asyncio.create_task(self._dispatch(planned))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            # Whichever comes first: the plan is admitted, or a stop request (then the
            # dispatcher, possibly waiting for a slot, is cancelled; jobs in flight settle).
            await asyncio.wait({dispatcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not dispatcher.done():
                dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)
            if not dispatcher.cancelled() and dispatcher.exception():
                raise dispatcher.exception()  # type: ignore[misc]
            while self._jobs:
                await asyncio.gather(*list(self._jobs))
            if self._crashes:
                raise self._crashes[0]
        finally:
            stopper.cancel()
            jobs = list(self._jobs)
            for task in (dispatcher, *jobs):
                task.cancel()
            await asyncio.gather(dispatcher, stopper, *jobs, return_exceptions=True)
            self._settle_held(defer=self._tripped())
        return self._outcome

    async def _dispatch(self, planned: Iterable[PlannedJob]) -> None:
        """Admit the plan's jobs one by one as the limit allows; each runs in a task of its own.
        (The plan already left out what need not run: ``plan.skip_reason``.)"""
        for item in planned:
            if self._stop.is_set():
                return
            await self._slots.acquire()
            await self._pace_admission()
            if self._stop.is_set():
                self._slots.release()
                return
            task = asyncio.create_task(self._one_job(item))
            self._jobs.add(task)
            task.add_done_callback(self._job_task_done)
            self._note_limit()

    async def _pace_admission(self) -> None:
        """Under auto, admissions are spread at the rate the budget allows edits (a few may
        go at once: ``ADMISSION_BURST``), so jobs that ended together are not replaced
        together; and held while the gate's queue is longer than the limit's headroom means
        (``InflightController.admits_now``)."""
        if self._inflight is None:
            return
        interval = self._inflight.admission_interval()
        now = self._clock()
        earliest = self._next_admission - ADMISSION_BURST * interval
        if now < earliest:
            await self._sleep(earliest - now)
        while not self._inflight.admits_now() and not self._stop.is_set():
            await self._sleep(max(interval, MIN_QUEUE_RECHECK))  # the gate's queue drains
        now = self._clock()
        self._next_admission = max(now, self._next_admission) + interval

    async def _one_job(self, item: PlannedJob) -> None:
        run = JobRun(item)
        ticket = None
        if self._inflight is not None:
            ticket = self._inflight.started(run)
        try:
            await self._guarded(self._run_job(run))
        finally:
            self._slots.release()
            if self._inflight is not None and ticket is not None:
                self._inflight.ended(ticket, requests=run.requests, gate_wait=run.gate_wait)
            self._note_limit()

    def _job_task_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._crashes.append(task.exception())  # type: ignore[arg-type]

    def _note_limit(self) -> None:
        """Tell the listeners the jobs that may be in flight, when that changed."""
        if self._inflight is None:
            if self._shown_limit is None:
                self._shown_limit = self._slots.limit()
                self._bus.emit(ConcurrencyChanged(self._shown_limit, None))
            return
        view = self._inflight.view()
        if view.limit != self._shown_limit:
            self._shown_limit = view.limit
            self._bus.emit(ConcurrencyChanged(view.limit, view.edits_per_minute))

    async def _guarded(self, work: Awaitable[T]) -> T | None:
        """Run-fatal errors stop the intake; a bug stops it too, and is raised to be seen."""
        try:
            return await work
        except RunFatal as exc:
            self.request_stop(exc.kind, str(exc))
        except StoreError as exc:
            self.request_stop(StopReason.STORE, str(exc))
        except Exception:
            # A bug must not hang the run: a dead worker leaves the feeder blocked on a full
            # queue forever. Stop the intake so run() returns, and let the error be seen.
            self.request_stop(StopReason.CRASHED, "an unexpected error stopped the run")
            raise
        return None

    # -- one job ------------------------------------------------------------------------------

    async def _run_job(self, run: JobRun) -> None:
        """One job from its first step to its terminal event."""
        job, started = run.job, self._clock()
        self._store.sweep_temps(job.id)
        if run.planned.unread is not None:  # a first run's new photo: read once, keyed now
            try:
                await self._uploads.read_photo(run)
            except InputUnreadable as exc:
                self._bus.emit(JobStarted(run.planned))
                self._fail(run, exc)  # the photo's fault: nothing was sent
                return
        key = run.planned.key
        self._bus.emit(JobStarted(run.planned))
        run.lost_answers = self._resume.lost_answers(job.id, key)
        pending = self._resume.pending_for(job.id, key)
        partial = self._resume.partial_for(job.id, key)  # --redo-missing buys what it misses
        resumed = pending is not None
        try:
            if pending is not None:  # a call paid by an earlier run: fetched, never bought
                run.attempts = pending.attempts
                indexes = tuple(range(job.expected_outputs))
                parts = [Part(indexes, pending.result, pending.credits)]
            else:
                wanted = partial.missing if partial is not None else None
                paid = self._resume.parts_for(job.id, key)
                resumed = bool(paid)
                parts = await self._purchase.buy(run, wanted, paid)
        except (JobFatal, TransientError) as exc:
            self._job_ended_badly(run, exc)
            return
        await self._finish(run, parts, started, resumed, partial)

    async def _finish(
        self,
        run: JobRun,
        parts: list[Part],
        started: float,
        resumed: bool,
        partial: PartialImages | None,
    ) -> None:
        """From paid records to the job's last event: poll them if needed, fetch, publish."""
        kept = partial.delivered if partial is not None else ()
        try:
            parts = [await self._settle_record(run, part, resumed) for part in parts]
            fetched = await self._results.fetch_all(run, parts, keep=kept)
        except (JobFatal, TransientError) as exc:
            self._job_ended_badly(run, exc)
            return
        self._job_succeeded()
        run.timings["total"] = self._clock() - started
        outputs, uuids = _merged(run, parts, fetched, partial)
        credits = _credits(parts)
        uuid = parts[0].result.uuid if parts else ""
        key = run.planned.key
        if fetched.missing:
            assert fetched.why_missing is not None
            self._bus.emit(
                JobPartial(
                    run.job.id,
                    key,
                    outputs,
                    tuple(sorted(fetched.missing)),
                    run.attempts,
                    credits,
                    uuid,
                    fetched.why_missing,
                    uuids,
                    tuple(fetched.superseded),
                    fetched.written,
                )
            )
            return
        self._bus.emit(
            JobSucceeded(
                run.job.id,
                key,
                outputs,
                run.attempts,
                credits,
                uuid,
                run.timings,
                tuple(fetched.superseded),
                fetched.written,
                checks=run.checks,
                uuids=uuids,
            )
        )

    async def _settle_record(self, run: JobRun, part: Part, resumed: bool) -> Part:
        """Poll a paid record until it has result paths. A FAILED record is bought again within
        the job's attempts (it produced nothing); one the API no longer knows, from an earlier
        run, is bought as a new job would be (nothing exists to pay twice for)."""
        while not part.result.result_paths:
            try:
                record = await self._polling.finish_record(
                    run, part.result, part.credits, part.ledger_part
                )
                return replace(part, result=record)
            except RecordFailed as exc:
                await self._polling.after_record_failed(run, exc)
            except RecordUnknown:
                if not resumed:
                    raise
            resumed = False
            part = await self._purchase.buy_again(run, part)
        return part

    # -- the breaker and terminal events -------------------------------------------------------

    def _job_ended_badly(self, run: JobRun, exc: PipelineError) -> None:
        if self._stop.is_set() and isinstance(exc, TransientError):
            # Cut short by the stop, not failed: the job stays resumable.
            self._bus.emit(JobDeferred(run.job.id, run.planned.key, error_info(exc), run.attempts))
            return
        if isinstance(exc, OutcomeUnknown):
            self._answers_lost(run, exc)
            return
        if not is_systemic(exc):
            self._settle_held(defer=False)  # the host answered: the streak is broken
            self._fail(run, exc)
            return
        self._held.append(Exhausted(run, exc))
        if self._breaker_jobs and len(self._held) >= self._breaker_jobs:
            self._trip(run, exc)

    def _trip(self, run: JobRun, exc: PipelineError) -> None:
        count = len(self._held)
        if all(cdn_challenged(item.error) for item in self._held):
            self.request_stop(
                StopReason.CDN_CHALLENGE,
                f"the CDN in front of the API refuses this client: a challenge page (HTML "
                f"403) answered every try of {count} jobs in a row; try again later",
            )
            return
        host = "input host" if run.last_step == "input" else "API"
        reason = (
            StopReason.INPUT_HOST_UNREACHABLE
            if run.last_step == "input"
            else StopReason.API_UNREACHABLE
        )
        self.request_stop(
            reason, f"{host} unreachable: {count} jobs in a row ran out of retries ({exc})"
        )

    def _answers_lost(self, run: JobRun, exc: OutcomeUnknown) -> None:
        """A job failed on its second lost answer: failed (a person decides), and counted, so
        that answers lost job after job stop the run before more may be paid twice."""
        self._fail(run, exc)
        self._lost_streak += 1
        if self._breaker_jobs and self._lost_streak >= self._breaker_jobs:
            self.request_stop(
                StopReason.API_UNREACHABLE,
                f"the answers of {self._lost_streak} jobs in a row were lost twice after "
                "sending (each call possibly charged): the API or the CDN in front of it is "
                "losing answers",
            )

    def _job_succeeded(self) -> None:
        self._settle_held(defer=False)  # any success resets the count
        self._lost_streak = 0

    def _tripped(self) -> bool:
        return self._outcome.stop_reason in (
            StopReason.API_UNREACHABLE,
            StopReason.INPUT_HOST_UNREACHABLE,
            StopReason.CDN_CHALLENGE,
        )

    def _settle_held(self, *, defer: bool) -> None:
        held, self._held = self._held, []
        for item in held:
            run = item.run
            if defer:
                info = error_info(item.error, transient=True)
                self._bus.emit(JobDeferred(run.job.id, run.planned.key, info, run.attempts))
            else:
                self._fail(run, item.error)

    def _fail(self, run: JobRun, exc: PipelineError) -> None:
        info = error_info(exc, transient=is_systemic(exc))
        self._bus.emit(JobFailed(run.job.id, run.planned.key, info, run.attempts))


def _merged(
    run: JobRun, parts: list[Part], fetched: Fetched, partial: PartialImages | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The job's outputs after this run (a partial job's earlier ones with the new ones), and,
    for a job bought one call per image, each output's record in index order."""
    delivered = partial.delivered if partial is not None else ()
    outputs = tuple(sorted({*delivered, *fetched.outputs}, key=_output_index))
    if not any(part.per_image for part in parts) and partial is None:
        return outputs, ()
    by_index = dict(enumerate(partial.uuids)) if partial is not None else {}
    for part in parts:
        for index in part.indexes:
            by_index[index] = part.result.uuid
    count = run.job.expected_outputs
    return outputs, tuple(by_index.get(index, "") for index in range(count))


def _output_index(output: str) -> int:
    stem = output.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(stem) if stem.isdigit() else 0


def _credits(parts: list[Part]) -> int | None:
    known = [part.credits for part in parts if part.credits is not None]
    return sum(known) if known else None
