"""``StepRunner``: one step of a job (upload, feature call, poll, download, input fetch), tried
until it succeeds or the retry policy says stop.

Every request to the API host passes the rate gate here, try by try, so a retry is paced and
counted like a first call (result and input downloads do not pass it: the account's limit counts
API requests only). Each request sent is an event (``RequestSent``: the statistics count them by
kind) and is charged to its job (``JobRun.requests``; for uploads and calls their wait at the
gate, ``gate_wait``): what the in-flight controller learns an edit costs. Each failed try is an
event (``JobRetrying``: the ledger writes it). The client makes one attempt per call; this is the
only retry loop of the API's requests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Gate
from pipeline.errors import ApiError, BudgetReached, RateLimited, Stopped, TransientError
from pipeline.events import EventBus, JobRetrying, RequestSent
from pipeline.scheduler.job import (
    API_STEPS,
    START_STEPS,
    JobRun,
    Sleep,
    StopSignal,
    error_info,
)

T = TypeVar("T")


class StepRunner:
    def __init__(
        self,
        gate: Gate,
        policy: RetryPolicy,
        bus: EventBus,
        stop: StopSignal,
        sleep: Sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = gate
        self.policy = policy
        self._bus = bus
        self._stop = stop
        self._sleep = sleep
        self._clock = clock

    async def run(
        self,
        run: JobRun,
        step: str,
        attempt: Callable[[], Awaitable[T]],
        final: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Run one step with retries. Feature tries are counted per job (``run.feature_tries``,
        since a failed record is a try too), other steps per call. ``final``: errors raised at
        once, not retried."""
        tries = limited = 0
        while True:
            try:
                if step in API_STEPS:
                    await self._pass_gate(run, step)
                value = await attempt()
            except (Stopped, BudgetReached):
                raise  # nothing was sent: not a try
            except final:
                raise
            except TransientError as exc:
                run.last_step = step
                if isinstance(exc, RateLimited):
                    limited += 1
                    if step in API_STEPS:
                        self.gate.on_rate_limited(self.policy.announced_wait(exc))
                if self.policy.counts_as_attempt(exc):
                    run.attempts += 1
                    if step == "feature":
                        run.feature_tries += 1
                    tries = run.feature_tries if step == "feature" else tries + 1
                if self._stop.halts(step) or not self.policy.should_retry(exc, tries, limited):
                    raise
                delay = self.policy.delay(exc, max(tries, 1))
                self._bus.emit(
                    JobRetrying(
                        run.job.id, run.planned.key, step, run.attempts, error_info(exc), delay
                    )
                )
                await self._sleep(delay)
                continue
            except ApiError:
                run.last_step = step
                if step == "feature":
                    run.attempts += 1  # sent and refused: it was a try
                raise
            if step in API_STEPS:
                self.gate.on_success()
            if step == "feature":
                run.attempts += 1
            return value

    async def _pass_gate(self, run: JobRun, step: str) -> None:
        """Wait for the rate gate; the request is then sent (counted) unless the run stops."""
        before = self._clock()
        run.gate_since, run.gate_step = before, step
        try:
            await self.gate.acquire()
        finally:
            run.gate_since = None
            waited = self._clock() - before
            if step in START_STEPS:
                run.gate_wait += waited
        if self._stop.halts(step):
            raise Stopped()
        run.requests += 1
        self._bus.emit(RequestSent(run.job.id, step, waited))
