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

A job's course is its parts (``job.Part``): one paid call for the whole job, or one per image
where the result bucket serves a record's first result only. Each part is polled if needed and
fetched; a paid image out of reach makes the job ``partial`` (``JobPartial``), never a silent
purchase. A job failed on answers lost twice (``outcome_unknown``) is counted too: as many in a
row as the breaker counts stop the run.

The steps are objects of their own (``purchase``, ``polling``, ``results``, ``uploads``, the
``steps`` retry loop); this module keeps the run itself: the queue, the workers, one job's
course and the breaker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from pipeline.errors import (
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
from pipeline.scheduler.job import (
    Exhausted,
    JobRun,
    Part,
    PartialImages,
    ResumeState,
    RunOutcome,
    StopSignal,
    cdn_challenged,
    error_info,
    is_systemic,
)
from pipeline.scheduler.polling import Polling
from pipeline.scheduler.purchase import Purchase
from pipeline.scheduler.results import Fetched, Results
from pipeline.store.local import Store

T = TypeVar("T")
SETTLING_STOPS = frozenset(
    {StopReason.MAX_CREDITS, StopReason.MAX_TOTAL_CREDITS, StopReason.INTERRUPTED}
)
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
        self._lost_streak = 0  # jobs in a row failed on answers lost twice (outcome_unknown)
        # --async: records handed to the polling side, each a task that finishes its job.
        outstanding = max_outstanding or self._concurrency * RECORDS_PER_WORKER
        self._outstanding = asyncio.Semaphore(max(outstanding, self._concurrency))
        self._detached: set[asyncio.Task[None]] = set()
        self._crashes: list[BaseException] = []  # bugs raised by records' tasks

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
            if self._crashes:  # a bug in a record's task that ended before anyone awaited it
                raise self._crashes[0]
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
        """One job up to its paid record(s); True if they went to the polling side."""
        job, key, started = run.job, run.planned.key, self._clock()
        self._store.sweep_temps(job.id)
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
            return False
        unfinished = any(not part.result.result_paths for part in parts)
        detach = run.sent_async if not resumed else self._purchase.submit.asynchronous()
        if detach and unfinished:
            # The worker moves on: polling, fetching and the job's last line happen in a task
            # of their own, so records in flight are bounded by max_outstanding (and the
            # request budget), not by workers sitting out each record's processing time.
            task = asyncio.create_task(self._detached_finish(run, parts, started, partial))
            self._detached.add(task)
            task.add_done_callback(self._record_task_done)
            return True
        await self._finish(run, parts, started, resumed, partial)
        return False

    def _record_task_done(self, task: asyncio.Task[None]) -> None:
        self._detached.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._crashes.append(error)

    async def _detached_finish(
        self, run: JobRun, parts: list[Part], started: float, partial: PartialImages | None
    ) -> None:
        try:
            await self._guarded(self._finish(run, parts, started, False, partial))
        finally:
            self._outstanding.release()

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


def _put_nowait_dropping(queue: asyncio.Queue[PlannedJob | None], item: None) -> None:
    """Make room for a stop sentinel: drop queued jobs (they keep no ledger line)."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


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
