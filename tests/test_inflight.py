"""The in-flight controller (``--concurrency auto``) on an injected clock, and ``Slots``.

The controller is arithmetic: the tests tell it of jobs starting and ending at chosen moments
and read the limit. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from pipeline.scheduler.inflight import (
    HEADROOM_JOBS,
    HEADROOM_SHARE,
    HOLD_AFTER_429,
    INITIAL_LIMIT,
    RECHECK_SECONDS,
    InflightController,
    Slots,
)

RPM = 150.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Budget:
    """Requests a second the gate allows: what ``Throttle.current_rpm`` / 60 gives."""

    def __init__(self, rpm: float = RPM) -> None:
        self.rpm = rpm

    def __call__(self) -> float:
        return self.rpm / 60.0


def controller(
    clock: Clock, budget: Budget | None = None, ceiling: int = 256, prior: float = 2.0
) -> InflightController:
    return InflightController(
        budget=budget or Budget(), clock=clock, ceiling=ceiling, requests_prior=prior
    )


def little(rpm: float, requests: float, seconds: float) -> float:
    """Jobs in flight that keep the budget full: edits a second x seconds an edit."""
    return rpm / 60.0 / requests * seconds


def most(needed: float) -> int:
    """Little's L and the headroom: the limit the controller keeps for ``needed``."""
    return math.ceil(needed * (1 + HEADROOM_SHARE)) + HEADROOM_JOBS


def steady(
    control: InflightController,
    clock: Clock,
    seconds: float,
    jobs: int,
    requests: int = 2,
    gate_wait: float = 0.0,
) -> None:
    """``jobs`` jobs, each in flight ``seconds`` (``gate_wait`` of it at the gate), one after
    another as the budget would admit them."""
    for _ in range(jobs):
        ticket = control.started()
        clock.now += seconds
        control.ended(ticket, requests=requests, gate_wait=gate_wait)


def test_starts_small_and_grows_as_the_first_jobs_age() -> None:
    """Nothing has ended: the jobs in flight, admitted as the gate lets them start (an upload
    and a call each, 0.8 s at 150 a minute), say an edit takes at least as long as they have
    been in flight, and the limit follows Little's law at that time."""
    clock = Clock()
    control = controller(clock)
    assert control.limit() == INITIAL_LIMIT
    limits = {}
    for tick in range(1, 26):  # 20 s in steps of one admission's worth of the gate
        clock.now = tick * 0.8
        if control.in_flight < control.limit():
            control.started()
        limits[clock.now] = control.limit()
    values = list(limits.values())
    # Rising (an admission makes the median age younger by a little: never by more than one)
    assert values[-1] > INITIAL_LIMIT and all(b >= a - 1 for a, b in itertools.pairwise(values))
    assert limits[20.0] >= little(RPM, 2.0, 20.0)  # 25: what 20 s edits need
    assert limits[10.4] <= most(little(RPM, 2.0, 10.4)) + 2


def test_grows_to_fill_the_budget_at_the_edit_time_seen() -> None:
    clock = Clock()
    control = controller(clock)
    steady(control, clock, seconds=20.0, jobs=50)
    needed = little(RPM, 2.0, 20.0)  # 25 jobs: 75 edits a minute of 20 s
    assert needed < control.limit() <= most(needed)
    view = control.view()
    assert view.edits_per_minute == pytest.approx(75.0)
    assert view.edit_seconds == pytest.approx(20.0)


def test_requests_an_edit_are_measured() -> None:
    """Async edits of distinct photos cost an upload, a call and a poll: 50 a minute at 150."""
    clock = Clock()
    control = controller(clock, prior=2.0)
    steady(control, clock, seconds=20.0, jobs=60, requests=3)
    assert control.view().requests_per_edit == pytest.approx(3.0, rel=0.01)
    assert control.view().edits_per_minute == pytest.approx(50.0, rel=0.01)
    assert control.limit() > little(RPM, 3.0, 20.0)
    assert control.limit() < most(little(RPM, 2.0, 20.0))  # what two requests an edit need


def test_grows_when_edits_get_slower() -> None:
    clock = Clock()
    control = controller(clock)
    steady(control, clock, seconds=20.0, jobs=50)
    before = control.limit()
    steady(control, clock, seconds=60.0, jobs=50)
    assert control.limit() > 2.5 * before
    assert control.limit() > little(RPM, 2.0, 60.0)


def test_shrinks_when_edits_get_faster() -> None:
    clock = Clock()
    control = controller(clock)
    steady(control, clock, seconds=60.0, jobs=50)
    before = control.limit()
    steady(control, clock, seconds=5.0, jobs=60)
    assert control.limit() < before / 5
    assert control.limit() > little(RPM, 2.0, 5.0)


def test_waits_at_the_gate_do_not_count_as_edit_time() -> None:
    """A job 30 s in flight of which 10 s waiting for the gate: the edit took 20 s. Counting
    the wait would let a bigger limit make longer waits make a bigger limit."""
    clock = Clock()
    control = controller(clock)
    steady(control, clock, seconds=30.0, jobs=50, gate_wait=10.0)
    assert control.view().edit_seconds == pytest.approx(20.0)
    assert control.limit() <= most(little(RPM, 2.0, 20.0))


def test_shrinks_when_429s_cut_the_pace_and_does_not_grow_for_a_while() -> None:
    clock, budget = Clock(), Budget()
    control = controller(clock, budget)
    steady(control, clock, seconds=20.0, jobs=50)
    full = control.limit()
    budget.rpm = RPM / 2  # correlated 429s: the gate halves its pace (api.throttle)
    control.rate_limited()
    cut = control.limit()
    assert cut <= full / 2 + HEADROOM_JOBS
    budget.rpm = RPM  # the pace recovers at once ...
    clock.now += HOLD_AFTER_429 / 2
    assert control.limit() == cut  # ... but the limit waits
    clock.now += HOLD_AFTER_429
    assert control.limit() == full


def test_never_exceeds_the_ceiling() -> None:
    clock = Clock()
    control = controller(clock, ceiling=10)
    steady(control, clock, seconds=120.0, jobs=30)
    assert little(RPM, 2.0, 120.0) > 10
    assert control.limit() == 10
    for _ in range(40):
        control.started()
    clock.now += 1000.0
    assert control.limit() == 10


def test_an_unpaced_gate_has_no_budget_to_fill() -> None:
    clock = Clock()
    control = controller(clock, Budget(rpm=0.0), ceiling=32)
    assert control.limit() == 32


def test_the_limit_is_never_below_one() -> None:
    clock = Clock()
    control = controller(clock, Budget(rpm=1.0))
    steady(control, clock, seconds=0.01, jobs=20)
    assert control.limit() >= 1


def test_a_job_ended_twice_counts_once() -> None:
    clock = Clock()
    control = controller(clock)
    ticket = control.started()
    clock.now = 20.0
    control.ended(ticket, requests=2, gate_wait=0.0)
    control.ended(ticket, requests=100, gate_wait=0.0)
    assert control.view().requests_per_edit == 2.0 and control.in_flight == 0


# -- Slots -------------------------------------------------------------------------------------


async def test_slots_admit_up_to_the_limit_and_follow_it_when_it_changes() -> None:
    limit = 2
    slots = Slots(lambda: limit)
    await slots.acquire()
    await slots.acquire()
    third = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)
    assert not third.done() and slots.in_flight == 2
    limit = 3
    slots.wake()
    await asyncio.wait_for(third, 1)
    assert slots.in_flight == 3
    limit = 1  # lowered: nobody is stopped, fewer are admitted
    fourth = asyncio.ensure_future(slots.acquire())
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert not fourth.done() and slots.in_flight == 1
    slots.release()
    await asyncio.wait_for(fourth, 1)
    assert slots.in_flight == 1


async def test_slots_ask_again_on_the_injected_sleep_while_the_limit_grows_with_time() -> None:
    slept: list[float] = []
    limit = 1

    async def sleep(seconds: float) -> None:
        nonlocal limit
        slept.append(seconds)
        limit += 1  # time passed: the first jobs are older, the limit higher
        await asyncio.sleep(0)

    slots = Slots(lambda: limit, sleep=sleep, time_bound=lambda: True)
    await slots.acquire()
    await asyncio.wait_for(slots.acquire(), 1)
    assert slept == [RECHECK_SECONDS] and slots.in_flight == 2


def test_the_first_waves_requests_do_not_set_the_cost_of_an_edit() -> None:
    """The first record polled many times while nothing had finished: a cost of the start."""
    clock = Clock()
    control = controller(clock, prior=3.0)
    first_wave = [control.started() for _ in range(10)]
    clock.now = 20.0
    control.ended(first_wave[0], requests=15, gate_wait=0.0)
    assert control.requests_per_edit == 3.0
    later = control.started()
    for ticket in first_wave[1:]:
        control.ended(ticket, requests=5, gate_wait=0.0)
    clock.now = 40.0
    control.ended(later, requests=2, gate_wait=0.0)
    assert control.requests_per_edit == 2.0


class Job:
    """What the controller sees of a job in flight (``JobRun`` in the pool)."""

    def __init__(self, at_gate: bool = False, waited: float = 0.0) -> None:
        self.at_gate = at_gate
        self.waited = waited

    def gate_seconds(self, now: float) -> float:
        return self.waited


def test_admissions_wait_while_the_gates_queue_is_longer_than_the_headroom() -> None:
    clock = Clock()
    control = controller(clock)
    steady(control, clock, seconds=20.0, jobs=50)  # Little's L: 25 jobs
    queue = [Job(at_gate=True) for _ in range(40)]
    tickets = [control.started(job) for job in queue]
    assert not control.admits_now()  # 40 requests waiting: one more job would only wait too
    for job in queue[: 40 - HEADROOM_JOBS]:
        job.at_gate = False
    assert control.admits_now()
    for ticket in tickets:
        control.ended(ticket, requests=2, gate_wait=0.0)


def test_admissions_are_spread_at_a_little_more_than_the_budget_allows_edits() -> None:
    control = controller(Clock(), prior=2.0)  # 150 a minute at two requests: 1.25 edits a second
    assert control.admission_interval() == pytest.approx(0.8 / (1 + HEADROOM_SHARE))
    assert controller(Clock(), Budget(rpm=0.0)).admission_interval() == 0.0


def test_a_jobs_uploads_waiting_at_the_gate_do_not_age_it() -> None:
    """Before anything has ended, the ages of the jobs in flight bound the edit time: a job
    still waiting for its upload has not started its edit."""
    clock = Clock()
    control = controller(clock)
    for _ in range(9):
        control.started(Job(at_gate=True, waited=0.0))
    clock.now = 30.0
    young = control.limit()
    control2 = controller(clock)
    clock.now = 0.0
    jobs = [Job(at_gate=True) for _ in range(9)]
    for job in jobs:
        control2.started(job)
    clock.now = 30.0
    for job in jobs:
        job.waited = 25.0  # 25 of the 30 s at the gate
    assert control2.limit() < young


def test_jobs_that_sent_nothing_do_not_break_the_arithmetic() -> None:
    """Resumed jobs whose records were paid and finished by an earlier run only download."""
    clock = Clock()
    control = controller(clock)
    steady(control, clock, seconds=1.0, jobs=40, requests=0)
    view = control.view()
    assert view.requests_per_edit == 0.0 and view.edits_per_minute == RPM  # one request each
    assert 1 <= control.limit() <= control.ceiling


def test_a_cautious_start_holds_the_first_jobs_until_one_has_ended_or_caution_ends() -> None:
    """Sync calls of unknown length: each one open when the first outlives the gateway is paid
    twice, so the limit stays at its start while the policy says so and no job has ended."""
    clock, cautious = Clock(), [True]
    control = InflightController(
        budget=Budget(), clock=clock, ceiling=256, requests_prior=2.0, cautious=lambda: cautious[0]
    )
    tickets = [control.started() for _ in range(INITIAL_LIMIT)]
    clock.now = 90.0  # jobs that old would let the limit grow to about Little's 112
    assert control.limit() == INITIAL_LIMIT
    cautious[0] = False  # a sync call finished (or the run turned async)
    assert control.limit() > 10 * INITIAL_LIMIT
    cautious[0] = True
    control.ended(tickets[0], requests=2, gate_wait=0.0)  # a job has ended: no caution needed
    assert control.limit() > INITIAL_LIMIT
