"""One request budget for every shard: a named, detached Ray actor per API key.

The actor hands out *leases*: ``acquire(n)`` reserves ``n`` consecutive slots of the shared,
evenly paced schedule (``60 / rpm`` seconds apart), sleeps until the first one is due and returns
the spacing. The shard spends the rest of its lease locally at that spacing, so one actor
round-trip buys up to ``LEASE_SECONDS`` of permits and the actor is not the bottleneck at
thousands of requests a minute. A lease is capped at ``rpm / 60 * LEASE_SECONDS`` permits in the
actor, and each shard asks for that divided by the number of shards, so no shard ever holds the
whole budget (at 3,000 rpm and 20 shards: leases of 2 permits, 40 ms of the schedule).

A 429 from any shard is reported to the actor, whose ``RateControl`` applies the same rule as a
run on one machine (``api.throttle``): a lone 429 delays its own call only; correlated ones
pause the shared schedule and cut the pace; successes, reported with the next lease, win it
back. Kept simple on purpose: a lease already handed out (at most ``LEASE_SECONDS``) is not
recalled; the shard that saw the 429 drops what is left of its own.

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
from typing import Any

import ray
from ray.exceptions import RayActorError

from pipeline.api.throttle import RateControl
from pipeline.config import RateLimit

NAMESPACE = "onemin-pipeline"
LEASE_SECONDS = 1.0


def budget_name(api_key: str) -> str:
    """The actor's name: a hash of the key, never the key (actor names are visible in Ray)."""
    return "onemin-budget-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class LeaseBook:
    """The shared schedule, without Ray (tested directly, and wrapped by the actor): leases of
    consecutive slots, paced and paused by one ``RateControl``."""

    def __init__(self, rate: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.control = RateControl(rate, clock)
        self._next_free = 0.0
        self.granted = 0

    @property
    def rpm(self) -> float:
        return self.control.current_rpm

    def max_lease(self) -> int:
        return max(1, int(self.control.current_rpm / 60.0 * LEASE_SECONDS))

    def reserve(self, n: int, successes: int = 0) -> tuple[float, float]:
        """Reserve up to ``n`` slots: (seconds until the first is due, their spacing)."""
        if successes:
            self.control.on_success(successes)
        if self.control.current_rpm <= 0:
            return 0.0, 0.0  # --rpm 0: no limit
        n = max(1, min(n, self.max_lease()))
        interval = self.control.interval()
        now = self._clock()
        first = max(now, self._next_free, self.control.pause_until)
        self._next_free = first + n * interval
        self.granted += n
        return first - now, interval

    def on_rate_limited(self, retry_after: float | None) -> None:
        self.control.on_rate_limited(retry_after)

    def set_rpm(self, rpm: float) -> None:
        self.control.set_rpm(rpm)

    def paused_for(self) -> float:
        return self.control.paused_for()


@ray.remote
class RateBudget:
    """The async actor around ``LeaseBook``; its methods are the shards' only coupling."""

    def __init__(self, rate: RateLimit) -> None:
        self._budget = LeaseBook(rate)

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


def get_budget(name: str, rate: RateLimit) -> Any:
    """The named budget actor, created if absent (detached: it outlives one driver)."""
    return RateBudget.options(  # type: ignore[attr-defined]
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_concurrency=10_000,
        num_cpus=0,
    ).remote(rate)


class RemoteThrottle:
    """The ``Throttle`` API inside a shard, spending permits leased from the budget actor.

    One lease request at a time per shard (a lock); workers then take the lease's permits at its
    spacing. On ``RayActorError`` the actor is re-resolved by name (a restarted one starts
    empty) and the permit is asked for again.
    """

    def __init__(
        self,
        name: str,
        rate: RateLimit,
        shards: int,
        clock: Callable[[], float] = time.monotonic,
        lease_cap: int | None = None,
    ) -> None:
        self._name, self._rate, self._rpm = name, rate, rate.rpm
        self._shards = max(1, shards)
        self._clock = clock
        self._lease_cap = lease_cap  # the bench sets 1 to measure the actor's round-trips
        self._actor = get_budget(name, rate)
        self._permits: deque[float] = deque()  # local monotonic times the leased permits are due
        self._lock = asyncio.Lock()
        self._successes = 0
        self._interval = 60.0 / self._rpm if self._rpm > 0 else 0.0

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
                self._actor = get_budget(self._name, self._rate)
        self._successes -= successes
        self._interval = interval
        start = self._clock()
        self._permits.extend(start + i * interval for i in range(n))

    def on_rate_limited(self, retry_after: float | None) -> None:
        # The rule is the actor's (one RateControl for every shard); this shard only drops what
        # is left of its lease, so its next request asks the actor, which knows of any pause.
        self._permits.clear()
        self._actor.on_rate_limited.remote(retry_after)  # fire and forget

    def on_success(self) -> None:
        self._successes += 1  # reported with the next lease: no round-trip per call

    def paused_for(self) -> float:
        return 0.0  # pauses are the actor's: a lease waits for them
