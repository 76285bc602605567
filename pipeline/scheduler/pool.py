"""The worker pool: planned jobs stream through a bounded queue to N workers.

Each worker takes one job at a time through upload → feature → (poll) → fetch → store. Retries
happen here, step by step: a failed download is retried from the stored result and never buys
the edit again; an upload is shared by every job with the same input bytes; a record still
processing is polled by its uuid (written to the ledger first), never bought again.

Every request to the API host (upload, feature call, poll) passes the shared throttle; result
and input downloads do not (SPEC 1a). ``--concurrency`` bounds jobs held by workers: in sync
mode that is feature calls open at once. With ``submit: async`` the POST returns at once and
the worker hands the processing record to a task of its own (poll, fetch, the job's last
line) and takes the next job; records in flight are bounded by ``max_outstanding`` (default
``RECORDS_PER_WORKER`` a worker) and, through the shared throttle, by the request budget, so a
run's edit rate is bounded by ``--rpm`` over the requests each edit costs, not by
concurrency over processing time.

Run-fatal errors (key rejected, out of credits, a budget reached, the circuit breaker) and
signals stop the intake; jobs already in flight settle, untouched jobs keep no ledger line and
so stay resumable. The breaker (SPEC 5): when ``breaker_jobs`` jobs in a row run out of retries
on transient errors, the run stops and those jobs are deferred (``JobDeferred``), not failed.

``attempts`` on a job's succeeded/failed line: every feature call sent (each counts, answered
or not) plus every failed try of its other steps (input fetch, upload, poll, download), 429s
excepted (flow control). A clean job shows 1; a job whose download was retried twice shows 3.

The scheduler only emits events; the ledger, progress bar and statistics listen.

The class is split by step, one module each (mixins sharing ``scheduler_base.SchedulerBase``):
``scheduler_base`` (protocols, per-job bookkeeping, budgets, retrying one step),
``scheduler_uploads``, ``scheduler_buying`` (the feature call),
``scheduler_results`` (fetch, check, publish) and ``scheduler_polling``.
This module keeps the run itself: the queue, the workers, one job's course and the breaker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from pipeline.errors import (
    JobFatal,
    PipelineError,
    RecordFailed,
    RecordUnknown,
    RunFatal,
    StopReason,
    StoreError,
    TransientError,
)
from pipeline.events import EventBus, JobDeferred, JobFailed, JobStarted, JobSucceeded, RunStopping
from pipeline.models import FeatureResult, PlannedJob
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.job import (
    Exhausted,
    JobRun,
    ResumeState,
    RunOutcome,
    StopSignal,
    error_info,
    is_systemic,
)
from pipeline.scheduler.polling import Polling
from pipeline.scheduler.purchase import Purchase
from pipeline.scheduler.results import Results
from pipeline.store.local import Store

T = TypeVar("T")
QUEUE_PER_WORKER = 2
RECORDS_PER_WORKER = 8  # --async: records in flight per worker, by default


class Scheduler:
    def __init__(
        self,
        *,
        bus: EventBus,
        store: Store,
        resume: ResumeState,
        purchase: Purchase,
        polling: Polling,
        results: Results,
        credits: CreditBudget,
        stop: StopSignal,
        concurrency: int,
        breaker_jobs: int,
        max_outstanding: int | None,
        clock: Callable[[], float],
    ) -> None:
        self._bus = bus
        self._store = store
        self._resume = resume
        self._purchase = purchase
        self._polling = polling
        self._results = results
        self.credits = credits
        self._stop = stop
        self._concurrency = max(1, concurrency)
        self._breaker_jobs = breaker_jobs
        self._clock = clock
        self._outcome = RunOutcome()
        self._held: list[Exhausted] = []  # the current streak of transient exhaustions
        # --async: records handed to the polling side, each a task that finishes its job.
        outstanding = max_outstanding or self._concurrency * RECORDS_PER_WORKER
        self._outstanding = asyncio.Semaphore(max(outstanding, self._concurrency))
        self._detached: set[asyncio.Task[None]] = set()

    @property
    def credits_spent(self) -> int:
        return self.credits.estimated

    # -- the run ------------------------------------------------------------------------------

    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop taking jobs; in-flight ones settle. The first reason given is the one kept."""
        if self._stop.is_set():
            return
        self._outcome = RunOutcome(reason, message)
        self._stop.set()
        self._bus.emit(RunStopping(reason, message))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, planned: Iterable[PlannedJob]) -> RunOutcome:
        queue: asyncio.Queue[PlannedJob | None] = asyncio.Queue(
            self._concurrency * QUEUE_PER_WORKER
        )
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self._concurrency)]
        feeder = asyncio.create_task(self._feed(planned, queue))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            # Whichever comes first: the plan is fed, or a stop request (then the feeder,
            # possibly blocked on a full queue, is cancelled and the workers see the flag).
            await asyncio.wait({feeder, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            if feeder.done() and not feeder.cancelled() and feeder.exception():
                raise feeder.exception()  # type: ignore[misc]
            if self._stop.is_set():
                for _ in workers:
                    _put_nowait_dropping(queue, None)
            await asyncio.gather(*workers)
            while self._detached:  # --async: the records handed to the polling side
                await asyncio.gather(*list(self._detached))
        finally:
            stopper.cancel()
            for task in (*workers, feeder, *self._detached):
                task.cancel()
            detached = list(self._detached)
            await asyncio.gather(*workers, feeder, stopper, *detached, return_exceptions=True)
            self._settle_held(defer=self._tripped())
        return self._outcome

    async def _feed(self, planned: Iterable[PlannedJob], queue: asyncio.Queue) -> None:
        # The plan already left out what need not run (plan.skip_reason): feed everything.
        for item in planned:
            if self._stop.is_set():
                return
            await queue.put(item)
        for _ in range(self._concurrency):
            await queue.put(None)

    async def _worker(self, queue: asyncio.Queue[PlannedJob | None]) -> None:
        while not self._stop.is_set():
            item = await queue.get()
            if item is None or self._stop.is_set():
                return
            await self._outstanding.acquire()  # --async: records in flight stay bounded
            detached = False
            try:
                detached = bool(await self._guarded(self._run_job(JobRun(item))))
            finally:
                if not detached:
                    self._outstanding.release()

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

    async def _run_job(self, run: JobRun) -> bool:
        """One job up to its paid record; True if the record went to the polling side."""
        job, started = run.job, self._clock()
        self._store.sweep_temps(job.id)
        self._bus.emit(JobStarted(run.planned))
        pending = self._resume.pending_for(job.id, run.planned.key)
        resumed = pending is not None
        try:
            if pending is not None:
                run.attempts = pending.attempts
                result, credits = pending.result, pending.credits
            else:
                result, credits = await self._purchase.buy(run)
        except (JobFatal, TransientError) as exc:
            self._job_ended_badly(run, exc)
            return False
        if self._purchase.asynchronous and not result.result_paths:
            # The worker moves on: polling, fetching and the job's last line happen in a task
            # of their own, so records in flight are bounded by max_outstanding (and the
            # request budget), not by workers sitting out each record's processing time.
            task = asyncio.create_task(self._detached_finish(run, result, credits, started))
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)
            return True
        await self._finish(run, result, credits, started, resumed)
        return False

    async def _detached_finish(
        self, run: JobRun, result: FeatureResult, credits: int | None, started: float
    ) -> None:
        try:
            await self._guarded(self._finish(run, result, credits, started, resumed=False))
        finally:
            self._outstanding.release()

    async def _finish(
        self,
        run: JobRun,
        result: FeatureResult,
        credits: int | None,
        started: float,
        resumed: bool,
    ) -> None:
        """From a paid record to the job's terminal event: poll it if needed, fetch, publish."""
        try:
            if not result.result_paths:
                result, credits = await self._settle_record(run, result, credits, resumed)
            outputs, superseded, written = await self._results.fetch_all(run, result)
        except (JobFatal, TransientError) as exc:
            self._job_ended_badly(run, exc)
            return
        self._job_succeeded()
        run.timings["total"] = self._clock() - started
        self._bus.emit(
            JobSucceeded(
                run.job.id,
                run.planned.key,
                tuple(outputs),
                run.attempts,
                credits,
                result.uuid,
                run.timings,
                tuple(superseded),
                written,
                run.checks,
            )
        )

    async def _settle_record(
        self, run: JobRun, result: FeatureResult, credits: int | None, resumed: bool
    ) -> tuple[FeatureResult, int | None]:
        """Poll a paid record until it has result paths. A FAILED record is bought again within
        the job's attempts (it produced nothing); one the API no longer knows, from an earlier
        run, is bought as a new job would be (nothing exists to pay twice for)."""
        while True:
            try:
                return await self._polling.finish_record(run, result, credits), credits
            except RecordFailed as exc:
                await self._polling.after_record_failed(run, exc)
            except RecordUnknown:
                if not resumed:
                    raise
            resumed = False
            result, credits = await self._purchase.buy(run)
            if result.result_paths:
                return result, credits

    # -- the breaker and terminal events -------------------------------------------------------

    def _job_ended_badly(self, run: JobRun, exc: PipelineError) -> None:
        if self._stop.is_set() and isinstance(exc, TransientError):
            # Cut short by the stop, not failed: the job stays resumable.
            self._bus.emit(JobDeferred(run.job.id, run.planned.key, error_info(exc), run.attempts))
            return
        if not is_systemic(exc):
            self._settle_held(defer=False)  # the host answered: the streak is broken
            self._fail(run, exc)
            return
        self._held.append(Exhausted(run, exc))
        if self._breaker_jobs and len(self._held) >= self._breaker_jobs:
            host = "input host" if run.last_step == "input" else "API"
            reason = (
                StopReason.INPUT_HOST_UNREACHABLE
                if run.last_step == "input"
                else StopReason.API_UNREACHABLE
            )
            count = len(self._held)
            self.request_stop(
                reason, f"{host} unreachable: {count} jobs in a row ran out of retries ({exc})"
            )

    def _job_succeeded(self) -> None:
        self._settle_held(defer=False)  # any success resets the count

    def _tripped(self) -> bool:
        return self._outcome.stop_reason in (
            StopReason.API_UNREACHABLE,
            StopReason.INPUT_HOST_UNREACHABLE,
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


def _put_nowait_dropping(queue: asyncio.Queue[PlannedJob | None], item: None) -> None:
    """Make room for a stop sentinel: drop queued jobs (they keep no ledger line)."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
