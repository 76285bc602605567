"""One request budget for every shard: a named, detached Ray actor per API key.

The actor hands out *leases*: ``acquire(n)`` reserves ``n`` consecutive slots of the shared,
evenly paced schedule (``60 / rpm`` seconds apart), sleeps until the first one is due and returns
the spacing. The shard spends the rest of its lease locally at that spacing, so one actor
round-trip buys up to ``LEASE_SECONDS`` of permits and the actor is not the bottleneck at
thousands of requests a minute. A lease is capped at ``rpm / 60 * LEASE_SECONDS`` permits in the
actor, and each shard asks for that divided by the number of shards, so no shard ever holds the
whole budget (at 3,000 rpm and 20 shards: leases of 2 permits, 40 ms of the schedule).

A 429 from any shard pauses the shared schedule (``Retry-After``, or one interval) and, without a
hint, cuts the rate (``slowdown_factor``) once per congestion window; successes reported with
the next lease win it back step by step. Kept simple on purpose: a lease already handed out
(at most ``LEASE_SECONDS``) is not recalled; the shard that saw the 429 drops its own.

Ray keeps no actor state across a restart: a killed budget actor comes back empty (the rate as
configured, no reservations) and shards, on ``RayActorError``, re-resolve it by name and wait
for permits again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from pipeline.config import MIN_RPM, RECOVERY_STEP, SLOWDOWN_FACTOR, RateLimit

NAMESPACE = "onemin-pipeline"
LEASE_SECONDS = 1.0
HOLD_INTERVALS = 2.0  # hint-less 429s this soon after a cut are the same congestion event


def budget_name(api_key: str) -> str:
    """The actor's name: a hash of the key, never the key (actor names are visible in Ray)."""
    return "onemin-budget-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pacing:
    """How the shared rate reacts to 429s: the throttle's settings, carried to the actor."""

    slowdown_factor: float = SLOWDOWN_FACTOR
    recovery_step: float = RECOVERY_STEP
    min_rpm: float = MIN_RPM

    @classmethod
    def of(cls, rate: RateLimit) -> Pacing:
        return cls(rate.slowdown_factor, rate.recovery_step, rate.min_rpm)


class _Budget:
    """The pacing arithmetic, without Ray (tested directly, and wrapped by the actor)."""

    def __init__(
        self,
        rpm: float,
        pacing: Pacing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pacing = pacing or Pacing()
        self._configured = rpm
        self._current = rpm
        self._slowdown = pacing.slowdown_factor
        self._step = pacing.recovery_step
        self._min = pacing.min_rpm
        self._clock = clock
        self._next_free = 0.0
        self._pause_until = 0.0
        self._hold_until = 0.0
        self.granted = 0

    @property
    def rpm(self) -> float:
        return self._current

    def max_lease(self) -> int:
        return max(1, int(self._current / 60.0 * LEASE_SECONDS))

    def reserve(self, n: int, successes: int = 0) -> tuple[float, float]:
        """Reserve up to ``n`` slots: (seconds until the first is due, spacing, )."""
        self._recover(successes)
        if self._current <= 0:
            return 0.0, 0.0  # --rpm 0: no limit
        n = max(1, min(n, self.max_lease()))
        interval = 60.0 / self._current
        now = self._clock()
        first = max(now, self._next_free, self._pause_until)
        self._next_free = first + n * interval
        self.granted += n
        return first - now, interval

    def on_rate_limited(self, retry_after: float | None) -> None:
        now = self._clock()
        if retry_after is not None:
            self._pause_until = max(self._pause_until, now + retry_after)
            return
        if now < self._hold_until or self._current <= 0:
            return
        self._current = max(self._min, self._current * self._slowdown)
        interval = 60.0 / self._current
        self._pause_until = max(self._pause_until, now + interval)
        self._hold_until = now + interval * HOLD_INTERVALS

    def _recover(self, successes: int) -> None:
        if successes and self._current < self._configured:
            step = self._step * self._configured * successes
            self._current = min(self._configured, self._current + step)

    def set_rpm(self, rpm: float) -> None:
        self._configured = self._current = rpm

    def paused_for(self) -> float:
        return max(0.0, self._pause_until - self._clock())


@ray.remote
class RateBudget:
    """The async actor around ``_Budget``; its methods are the shards' only coupling."""

    def __init__(self, rpm: float, pacing: Pacing | None = None) -> None:
        self._budget = _Budget(rpm, pacing)

    async def acquire(self, n: int = 1, successes: int = 0) -> float:
        """Wait until the first of up to ``n`` permits is due; return their spacing (s)."""
        delay, interval = self._budget.reserve(n, successes)
        if delay > 0:
            await asyncio.sleep(delay)
        return interval

    async def max_lease(self) -> int:
        return self._budget.max_lease()

    async def on_rate_limited(self, retry_after: float | None) -> None:
        self._budget.on_rate_limited(retry_after)

    async def set_rpm(self, rpm: float) -> None:
        self._budget.set_rpm(rpm)

    async def stats(self) -> dict[str, float]:
        return {
            "rpm": self._budget.rpm,
            "granted": self._budget.granted,
            "paused_for": self._budget.paused_for(),
        }


def get_budget(name: str, rpm: float, pacing: Pacing | None = None) -> Any:
    """The named budget actor, created if absent (detached: it outlives one driver)."""
    return RateBudget.options(  # type: ignore[attr-defined]
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_concurrency=10_000,
        num_cpus=0,
    ).remote(rpm, pacing)


class RemoteThrottle:
    """The ``Throttle`` API inside a shard, spending permits leased from the budget actor.

    One lease request at a time per shard (a lock); workers then take the lease's permits at its
    spacing. On ``RayActorError`` the actor is re-resolved by name (a restarted one starts
    empty) and the permit is asked for again.
    """

    def __init__(
        self,
        name: str,
        rpm: float,
        shards: int,
        pacing: Pacing | None = None,
        clock: Callable[[], float] = time.monotonic,
        lease_cap: int | None = None,
    ) -> None:
        self._name, self._rpm, self._pacing = name, rpm, pacing
        self._shards = max(1, shards)
        self._clock = clock
        self._lease_cap = lease_cap  # the bench sets 1 to measure the actor's round-trips
        self._actor = get_budget(name, rpm, pacing)
        self._permits: deque[float] = deque()  # local monotonic times the leased permits are due
        self._lock = asyncio.Lock()
        self._successes = 0
        self._pause_until = 0.0
        self._interval = 60.0 / rpm if rpm > 0 else 0.0
        self.slowdowns = 0

    @property
    def current_rpm(self) -> float:
        return 60.0 / self._interval if self._interval > 0 else self._rpm

    def _lease_size(self) -> int:
        per_second = self.current_rpm / 60.0
        size = max(1, int(per_second * LEASE_SECONDS / self._shards))
        return size if self._lease_cap is None else min(size, self._lease_cap)

    async def acquire(self) -> None:
        """Wait until a feature call may be sent."""
        if self._rpm <= 0:
            return
        async with self._lock:
            if not self._permits:
                await self._lease()
            due = self._permits.popleft()
        if (wait := due - self._clock()) > 0:
            await asyncio.sleep(wait)

    async def _lease(self) -> None:
        n, successes = self._lease_size(), self._successes
        while True:
            try:
                interval = await self._actor.acquire.remote(n, successes)
                break
            except RayActorError:
                await asyncio.sleep(0.05)
                self._actor = get_budget(self._name, self._rpm, self._pacing)
        self._successes -= successes
        self._interval = interval
        start = max(self._clock(), self._pause_until)
        self._permits.extend(start + i * interval for i in range(n))

    def on_rate_limited(self, retry_after: float | None) -> None:
        self._permits.clear()  # this shard's lease was cut short by the server
        pause = retry_after if retry_after is not None else self._interval
        self._pause_until = max(self._pause_until, self._clock() + pause)
        if retry_after is None:
            self.slowdowns += 1
        self._actor.on_rate_limited.remote(retry_after)  # fire and forget

    def on_success(self) -> None:
        self._successes += 1  # reported with the next lease: no round-trip per call

    def paused_for(self) -> float:
        return max(0.0, self._pause_until - self._clock())
