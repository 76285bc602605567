"""The rate gate every feature call passes, shared by all workers.

Three things, in order: a pause while an announced ``Retry-After`` is in force (no worker sends a
feature call then); an even-paced aiolimiter for ``--rpm`` (a bucket of one, so no start-up
burst); and AIMD on top: a 429 without a hint halves the rate, each success wins back a small
step of the configured rate, so a client set too fast converges on what the server accepts
(Scrapy's AutoThrottle idea, but honouring Retry-After).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from pipeline.config import RateLimit

# Rebuild the limiter only when the rate moved by more than this share: each rebuild lets the
# waiters of the old bucket through at the old pace once.
REBUILD_THRESHOLD = 0.05
# After a cut, further hint-less 429s within this many intervals at the new rate belong to the
# same congestion event (answers to calls sent before the cut) and do not cut again.
SLOWDOWN_HOLD_INTERVALS = 2.0


class Throttle:
    def __init__(
        self,
        rate: RateLimit,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._configured = rate.rpm
        self._rate = rate
        self._current = rate.rpm
        self._clock = clock
        self._sleep = sleep
        self._pause_until = 0.0
        self._hold_rate_until = 0.0
        self._limiter = self._make_limiter(self._current)
        self._limiter_rpm = self._current
        self.slowdowns = 0

    @property
    def current_rpm(self) -> float:
        return self._current

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @staticmethod
    def _make_limiter(rpm: float) -> AsyncLimiter | None:
        return AsyncLimiter(1, 60.0 / rpm) if rpm > 0 else None

    def _set_rate(self, rpm: float) -> None:
        if self._configured <= 0:
            return
        self._current = min(self._configured, max(self._rate.min_rpm, rpm))
        drift = abs(self._current - self._limiter_rpm)
        back_to_full = self._current == self._configured != self._limiter_rpm
        if drift > REBUILD_THRESHOLD * self._limiter_rpm or back_to_full:
            self._limiter = self._make_limiter(self._current)
            self._limiter_rpm = self._current

    async def _wait_pause(self) -> None:
        while (remaining := self._pause_until - self._now()) > 0:
            await self._sleep(remaining)

    async def acquire(self) -> None:
        """Wait until a feature call may be sent."""
        while True:
            await self._wait_pause()
            if self._limiter is not None:
                await self._limiter.acquire()
            # A Retry-After may have arrived while this worker waited for the bucket.
            if self._pause_until <= self._now():
                return

    def pause(self, seconds: float) -> None:
        """Hold every worker's next feature call for ``seconds`` (an announced Retry-After)."""
        self._pause_until = max(self._pause_until, self._now() + seconds)

    def paused_for(self) -> float:
        return max(0.0, self._pause_until - self._now())

    def on_rate_limited(self, retry_after: float | None) -> None:
        if retry_after is not None:
            self.pause(retry_after)
            return
        if self._now() < self._hold_rate_until:
            # The other calls that were in flight when the server pushed back answer 429 too;
            # that is one congestion event, so the rate is cut once (as TCP does per window).
            return
        self.slowdowns += 1
        self._set_rate(self._current * self._rate.slowdown_factor)
        if self._current > 0:
            interval = 60.0 / self._current
            self.pause(interval)  # let the server's window drain a little
            self._hold_rate_until = self._now() + interval * SLOWDOWN_HOLD_INTERVALS

    def on_success(self) -> None:
        if self._current < self._configured:
            self._set_rate(self._current + self._rate.recovery_step * self._configured)
