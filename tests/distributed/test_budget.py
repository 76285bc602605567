"""The rate budget: even pacing across callers, bounded leases, 429 cuts, and a restart."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_leases_are_consecutive_slots_of_one_schedule() -> None:
    from pipeline.config import RateLimit
    from pipeline.distributed.budget import LeaseBook

    clock = Clock()
    budget = LeaseBook(RateLimit(rpm=600), clock=clock)  # 10 a second: slots 0.1 s apart
    assert budget.reserve(3) == (0.0, pytest.approx(0.1))
    delay, _ = budget.reserve(2)  # a second shard queues behind the first lease
    assert delay == pytest.approx(0.3)
    assert budget.granted == 5


def test_a_lease_is_capped_at_one_second_of_the_rate() -> None:
    from pipeline.config import RateLimit
    from pipeline.distributed.budget import LeaseBook

    clock = Clock()
    budget = LeaseBook(RateLimit(rpm=600), clock=clock)
    budget.reserve(1000)
    assert budget.granted == 10  # a shard never holds more than LEASE_SECONDS of the budget


def test_the_budget_reacts_to_429s_by_the_one_rule_of_the_throttle() -> None:
    from pipeline.config import RateLimit
    from pipeline.distributed.budget import LeaseBook

    clock = Clock()
    rate = RateLimit(rpm=600, slowdown_factor=0.5, recovery_step=0.1)
    budget = LeaseBook(rate, clock=clock)
    budget.on_rate_limited(None)
    budget.on_rate_limited(None)  # the same congestion event
    assert budget.rpm == 300
    delay, interval = budget.reserve(1)
    assert delay == pytest.approx(0.2) and interval == pytest.approx(0.2)
    budget.reserve(1, successes=5)
    assert budget.rpm == 600
    clock.now += 60.0
    budget.reserve(1, successes=20)  # the two 429s above have left the share window
    budget.on_rate_limited(7.0)  # a lone 429 with Retry-After delays its own call only
    assert budget.rpm == 600 and budget.paused_for() == 0.0
    budget.on_rate_limited(7.0)
    budget.on_rate_limited(7.0)  # three in force at once: the account's limit, everyone waits
    assert budget.paused_for() == pytest.approx(7.0) and budget.rpm == 300


@pytest.mark.usefixtures("ray_local")
def test_a_killed_budget_actor_comes_back_empty_and_permits_flow_again() -> None:
    import ray

    from pipeline.config import RateLimit
    from pipeline.distributed.budget import NAMESPACE, RemoteThrottle

    name = "onemin-budget-test-restart"

    async def main() -> int:
        throttle = RemoteThrottle(name, RateLimit(rpm=6000), shards=1)
        for _ in range(5):
            await throttle.acquire()
        before = await throttle._actor.stats.remote()
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
        for _ in range(150):  # more than the lease held locally (100): the actor must be asked
            await throttle.acquire()
        after = await throttle._actor.stats.remote()
        assert before["granted"] >= 5
        return after["granted"]

    granted = asyncio.run(main())
    assert 0 < granted <= 150  # a new, empty actor: it counts only what it granted itself
    ray.kill(ray.get_actor(name, namespace=NAMESPACE))
