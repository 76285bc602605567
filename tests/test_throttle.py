"""The rate gate, with the clock and sleep injected: nothing here really waits."""

from __future__ import annotations

import asyncio

from pipeline.config import RateLimit
from pipeline.throttle import Throttle


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def throttle(rpm: float = 0, **kw: float) -> tuple[Throttle, FakeTime]:
    fake = FakeTime()
    return Throttle(RateLimit(rpm=rpm, **kw), clock=fake.clock, sleep=fake.sleep), fake


async def test_retry_after_pauses_every_caller() -> None:
    gate, fake = throttle()
    gate.pause(5.0)
    await asyncio.gather(gate.acquire(), gate.acquire())
    assert fake.now >= 5.0
    assert gate.paused_for() == 0


async def test_longer_pause_wins_over_shorter() -> None:
    gate, _ = throttle()
    gate.pause(10.0)
    gate.pause(2.0)
    assert gate.paused_for() == 10.0


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


def test_a_burst_of_429s_from_calls_in_flight_cuts_the_rate_once() -> None:
    gate, fake = throttle(rpm=120)
    for _ in range(8):  # eight workers' calls, all sent before the server pushed back
        gate.on_rate_limited(None)
        fake.now += 0.1
    assert gate.current_rpm == 60 and gate.slowdowns == 1


def test_retry_after_does_not_slow_the_rate() -> None:
    gate, _ = throttle(rpm=60)
    gate.on_rate_limited(3.0)
    assert gate.current_rpm == 60
    assert gate.paused_for() == 3.0


async def test_even_pacing_without_burst(monkeypatch) -> None:
    """aiolimiter reads the loop clock: drive it by hand, as aiolimiter's own tests do."""
    loop = asyncio.get_running_loop()
    now = [1000.0]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    gate = Throttle(RateLimit(rpm=60))
    await gate.acquire()  # the first call goes at once
    second = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    assert not second.done()  # a bucket of one: no start-up burst
    now[0] += 1.0
    # wake the limiter's timer: it was scheduled on the patched clock
    for _ in range(50):
        await asyncio.sleep(0)
        if second.done():
            break
    await asyncio.wait_for(second, 1)
