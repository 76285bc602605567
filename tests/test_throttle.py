"""The rate gate, on virtual time: the clock and sleep are injected, nothing here really waits."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine
from typing import Any

import pytest

from pipeline.api.throttle import Throttle
from pipeline.config import RateLimit


class VirtualTime:
    """A clock that jumps to the next sleeper's wake-up once every task is blocked."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(seconds, 0.0), self._seq, future))
        self._seq += 1
        await future

    async def run(self, *coros: Coroutine[Any, Any, Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(coro) for coro in coros]
        while not all(task.done() for task in tasks):
            for _ in range(20):  # let every task run up to its next sleep
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                break
            assert self._timers, "deadlock: tasks wait and nobody sleeps"
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            future.set_result(None)
        return [task.result() for task in tasks]

    async def sent_at(self, gate: Throttle, workers: int) -> list[float]:
        """Each of ``workers`` acquires once; the virtual times they were let through, sorted."""
        times: list[float] = []

        async def one() -> None:
            await gate.acquire()
            times.append(self.now)

        await self.run(*(one() for _ in range(workers)))
        return sorted(times)


def throttle(rpm: float = 0, **kw: Any) -> tuple[Throttle, VirtualTime]:
    fake = VirtualTime()
    return Throttle(RateLimit(rpm=rpm, **kw), clock=fake.clock, sleep=fake.sleep), fake


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_even_pacing_without_burst() -> None:
    gate, fake = throttle(rpm=60)
    times = await fake.sent_at(gate, 5)
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0]  # the first at once, then one a second


async def test_idle_gate_sends_at_once_but_never_two_together() -> None:
    gate, fake = throttle(rpm=60)
    await fake.sent_at(gate, 1)
    fake.now = 100.0  # a long idle spell does not save up a burst
    assert await fake.sent_at(gate, 3) == [100.0, 101.0, 102.0]


async def test_unpaced_gate_never_waits() -> None:
    gate, fake = throttle(rpm=0)
    assert await fake.sent_at(gate, 4) == [0.0] * 4


async def test_pause_holds_every_caller_and_longer_wins() -> None:
    gate, fake = throttle()
    gate.pause(10.0)
    gate.pause(2.0)
    assert gate.paused_for() == 10.0
    assert await fake.sent_at(gate, 2) == [10.0, 10.0]  # unpaced: nothing to spread
    assert gate.paused_for() == 0


async def test_lone_429_delays_no_other_worker() -> None:
    gate, fake = throttle(rpm=60)
    gate.on_rate_limited(5.0)
    assert gate.paused_for() == 0
    assert gate.current_rpm == 60 and gate.slowdowns == 0 and gate.pauses == 0
    assert await fake.sent_at(gate, 3) == [0.0, 1.0, 2.0]  # the others go on at the pace


async def test_two_429s_in_one_window_are_still_lone() -> None:
    gate, _ = throttle(rpm=60)
    gate.on_rate_limited(5.0)
    gate.on_rate_limited(5.0)
    assert gate.paused_for() == 0 and gate.current_rpm == 60


async def test_429s_further_apart_than_their_waits_never_pause() -> None:
    gate, fake = throttle(rpm=60)
    for _ in range(6):
        gate.on_rate_limited(5.0)
        for _ in range(10):  # enough successes between them to keep the share low too
            gate.on_success()
        fake.now += 6.0
    assert gate.pauses == 0 and gate.current_rpm == 60


async def test_three_429s_in_one_window_pause_everyone_and_cut() -> None:
    gate, fake = throttle(rpm=60, slowdown_factor=0.5)
    for _ in range(3):
        gate.on_rate_limited(5.0)
        fake.now += 0.5
    # The third came at 1.0 and announced 5 s: no worker sends before 6.0.
    assert gate.pauses == 1 and gate.slowdowns == 1
    assert gate.current_rpm == 30
    assert gate.paused_for() == pytest.approx(4.5)
    times = await fake.sent_at(gate, 4)
    assert times[0] == pytest.approx(6.0)
    assert all(gap >= 2.0 - 1e-9 for gap in gaps(times))  # one interval at the cut pace


async def test_late_429s_of_calls_in_flight_extend_the_pause_but_cut_once() -> None:
    gate, fake = throttle(rpm=60, slowdown_factor=0.5)
    for _ in range(6):
        gate.on_rate_limited(5.0)
        fake.now += 0.2
    assert gate.slowdowns == 1 and gate.current_rpm == 30
    assert gate.paused_for() == pytest.approx(5.0 - 0.2)  # the latest one's announced time


async def test_release_after_pause_is_spread() -> None:
    """Workers that queued before the pause and during it leave one interval apart after it."""
    gate, fake = throttle(rpm=60, slowdown_factor=1.0)
    times: list[float] = []

    async def worker(start: float) -> None:
        await fake.sleep(start)
        await gate.acquire()
        times.append(fake.now)

    async def limit_hits() -> None:
        await fake.sleep(0.5)
        for _ in range(3):
            gate.on_rate_limited(4.0)

    await fake.run(*(worker(0.1 * i) for i in range(8)), limit_hits())
    sent_after = [t for t in times if t >= 4.5]
    assert gate.pauses == 1
    assert len(sent_after) == 7  # only the first worker got out before the pause at 0.5
    assert sent_after[0] == pytest.approx(4.5)
    assert all(gap >= 1.0 - 1e-9 for gap in gaps(sent_after))  # no burst at the end of the pause


async def test_pace_change_keeps_one_stream_of_slots() -> None:
    """Recovery while workers queue: the new pace spaces the next sender, no second queue."""
    gate, fake = throttle(rpm=60, min_rpm=1, recovery_step=0.5)
    gate.on_rate_limited(None)  # cut to 30/min
    fake.now += 10.0  # past the pause and the hold
    times: list[float] = []

    async def worker() -> None:
        await gate.acquire()
        times.append(fake.now)
        gate.on_success()

    await fake.run(*(worker() for _ in range(4)))
    assert gate.current_rpm == 60
    assert all(gap >= 1.0 - 1e-9 for gap in gaps(sorted(times)))


async def test_rising_share_of_429s_trips_without_a_burst_in_time() -> None:
    gate, fake = throttle(rpm=60, slowdown_factor=0.5)
    outcomes = [True] + [False] * 8 + [True] + [False] * 8 + [True]  # 3 of 19 answers: > 10%
    for limited in outcomes:
        assert gate.pauses == 0  # two 429s among these answers were still lone ones
        if limited:
            gate.on_rate_limited(1.0)
        else:
            gate.on_success()
        fake.now += 1.5  # each 429's one-second wait is over before the next answer
    assert gate.pauses == 1 and gate.slowdowns == 1 and gate.current_rpm < 60


async def test_a_share_at_the_limit_does_not_trip() -> None:
    gate, fake = throttle(rpm=60)
    for _ in range(5):  # two 429s in every twenty answers: exactly 10%, not more
        for limited in [True] + [False] * 9:
            if limited:
                gate.on_rate_limited(1.0)
            else:
                gate.on_success()
            fake.now += 1.5
    assert gate.pauses == 0 and gate.current_rpm == 60


async def test_limit_just_reached_makes_the_next_429_pause_at_once() -> None:
    gate, fake = throttle(rpm=60, slowdown_factor=0.5)
    for _ in range(3):
        gate.on_rate_limited(10.0)
    fake.now += 15.0  # the pause ended at 10; one announced wait later (20) it is forgotten
    gate.on_rate_limited(10.0)
    assert gate.pauses == 2 and gate.paused_for() == 10.0
    fake.now += 40.0
    gate.on_rate_limited(10.0)
    assert gate.pauses == 2 and gate.paused_for() == 0  # a lone 429 again


async def test_recovery_after_a_correlated_cut() -> None:
    gate, _ = throttle(rpm=150, slowdown_factor=0.5, recovery_step=0.05, min_rpm=1)
    for _ in range(3):
        gate.on_rate_limited(2.0)
    assert gate.current_rpm == 75
    steps = []
    for _ in range(12):
        gate.on_success()
        steps.append(gate.current_rpm)
    assert steps[:3] == pytest.approx([82.5, 90.0, 97.5])  # additive, 5% of --rpm a success
    assert steps[-1] == 150  # back to, never above, the configured pace


def test_hintless_429_halves_rate_and_successes_recover() -> None:
    gate, fake = throttle(rpm=120, recovery_step=0.1, min_rpm=1)
    gate.on_rate_limited(None)
    assert gate.current_rpm == 60
    assert gate.paused_for() == 1.0  # one interval at the new rate
    fake.now += 2.5  # past the hold: a new congestion event
    gate.on_rate_limited(None)
    assert gate.current_rpm == 30
    for _ in range(20):
        gate.on_success()
    assert gate.current_rpm == 120  # back to, never above, the configured rate


def test_rate_never_below_floor() -> None:
    gate, fake = throttle(rpm=4, min_rpm=1)
    for _ in range(10):
        gate.on_rate_limited(None)
        fake.now += 1000
    assert gate.current_rpm == 1


def test_a_burst_of_hintless_429s_from_calls_in_flight_cuts_the_rate_once() -> None:
    gate, fake = throttle(rpm=120)
    for _ in range(8):  # eight workers' calls, all sent before the server pushed back
        gate.on_rate_limited(None)
        fake.now += 0.1
    assert gate.current_rpm == 60 and gate.slowdowns == 1


def test_settings_on_rate_limit_override_the_defaults() -> None:
    fake = VirtualTime()
    gate = Throttle(RateLimit(rpm=60, correlated_429s=2), clock=fake.clock, sleep=fake.sleep)
    gate.on_rate_limited(5.0)
    gate.on_rate_limited(5.0)
    assert gate.pauses == 1


async def test_a_late_event_loop_does_not_slow_the_pace() -> None:
    """Every wake comes 5 % of an interval late (a busy machine): the senders still leave at the
    pace on average, and never faster than one interval made up."""
    fake = VirtualTime()
    late = 0.05

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds + late)

    gate = Throttle(RateLimit(rpm=60), clock=fake.clock, sleep=late_sleep)
    times = await fake.sent_at(gate, 101)
    assert times[-1] - times[0] == pytest.approx(100.0, abs=1.0)  # 100 intervals: not 105 s
    assert min(gaps(times)) >= 1.0 - late - 1e-9
