"""A pure retry policy: which errors are retried, and how long to wait before the next try.

No sleeping and no clock here: the scheduler sleeps, tests call ``delay`` with a seeded random
source (stamina's and openai-python's shape: exponential backoff, jitter, a cap, Retry-After).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pipeline.config import RetrySettings
from pipeline.errors import ApiError, RateLimited, TransientError

# A server that answers 429 forever must not keep a job alive forever. 429s do not use up
# --max-attempts (they are flow control), so they get their own, much larger, allowance.
MAX_RATE_LIMITED_WAITS = 100

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff: ``base`` after the first try, doubling, never above ``cap``."""
    exponent = min(max(attempt - 1, 0), 32)
    return min(cap, base * 2.0**exponent)


async def retry_loop(
    attempt: Callable[[int], Awaitable[T]],
    *,
    tries: int,
    delay: Callable[[int], float],
    retry_on: tuple[type[BaseException], ...] = (),
    retry_if: Callable[[T], bool] = lambda _result: False,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """The one retry loop of the side requests (remote inputs, the notify hook): call
    ``attempt(n)`` (n from 1) up to ``tries`` times, again after an exception in ``retry_on`` or
    a result ``retry_if`` holds worth another try, sleeping ``delay(n)`` between. The last try's
    exception is raised, or its result returned. API-host requests retry in the scheduler's
    ``StepRunner`` instead: each of their tries passes the rate gate and is recorded.
    """
    for n in range(1, tries + 1):
        try:
            result = await attempt(n)
        except retry_on:
            if n >= tries:
                raise
        else:
            if n >= tries or not retry_if(result):
                return result
        await sleep(delay(n))
    raise ValueError("retry_loop needs at least one try")


@dataclass(frozen=True)
class RetryPolicy:
    settings: RetrySettings = field(default_factory=RetrySettings)
    random: Callable[[], float] = random.random

    @property
    def max_attempts(self) -> int:
        return self.settings.max_attempts

    @staticmethod
    def counts_as_attempt(error: ApiError) -> bool:
        """A 429 is flow control, not a failure of the job (docs/api.md#429-too-many-requests)."""
        return not isinstance(error, RateLimited)

    def should_retry(self, error: ApiError, attempts: int, rate_limited: int = 0) -> bool:
        """``attempts``: tries that counted so far; ``rate_limited``: 429s so far."""
        if not isinstance(error, TransientError):
            return False
        if isinstance(error, RateLimited):
            return rate_limited < MAX_RATE_LIMITED_WAITS
        return attempts < self.settings.max_attempts

    def announced_wait(self, error: RateLimited) -> float | None:
        """The server's Retry-After capped at ``retry_after_max``, or None if it gave none.

        The one place the cap is applied, so the job's own wait and the pause of every worker
        (``Throttle.on_rate_limited``) agree: a server announcing a day is waited 15 minutes.
        """
        if error.retry_after is None:
            return None
        return min(error.retry_after, self.settings.retry_after_max)

    def delay(self, error: ApiError, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1``; ``attempt`` counts from 1."""
        announced = self.announced_wait(error) if isinstance(error, RateLimited) else None
        if announced is not None:
            return announced
        wait = backoff(attempt, self.settings.backoff_base, self.settings.backoff_max)
        return wait * (1.0 - self.settings.jitter * self.random())
