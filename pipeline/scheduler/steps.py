"""``StepRunner``: one step of a job (upload, feature call, poll, download, input fetch), tried
until it succeeds or the retry policy says stop.

Every request to the API host passes the rate gate here, try by try, so a retry is paced and
counted like a first call (result and input downloads do not pass it: the account's limit counts
API requests only). Each failed try is an event (``JobRetrying``: the ledger writes it). The
client makes one attempt per call; this is the only retry loop of the API's requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Gate
from pipeline.errors import ApiError, BudgetReached, RateLimited, Stopped, TransientError
from pipeline.events import EventBus, JobRetrying
from pipeline.scheduler.job import API_STEPS, JobRun, Sleep, StopSignal, error_info

T = TypeVar("T")


class StepRunner:
    def __init__(
        self, gate: Gate, policy: RetryPolicy, bus: EventBus, stop: StopSignal, sleep: Sleep
    ) -> None:
        self.gate = gate
        self.policy = policy
        self._bus = bus
        self._stop = stop
        self._sleep = sleep

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
                    await self.gate.acquire()
                    if self._stop.halts(step):
                        raise Stopped()
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
