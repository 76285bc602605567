"""The pool against the request budget in the account's regime, on virtual time.

Edits of 20 to 120 s, ``--rpm 150``, distinct photos: minutes of a run simulated in a second or
two. The event loop's clock jumps to the next timer whenever every task waits, so the throttle,
the sleeps and the scripted edit times all run on it and nothing sleeps for real. Asserted: the
budget is never exceeded in any 60 s, jobs in flight never exceed the ceiling, and with
``--concurrency auto`` the edits a minute reach what ``--rpm`` allows at the requests an edit
costs, where a fixed small concurrency does not.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import pytest

from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Throttle
from pipeline.config import GATEWAY_TIMEOUT, RateLimit
from pipeline.errors import AnswerLost
from pipeline.events import (
    ConcurrencyChanged,
    Event,
    EventBus,
    JobStarted,
    JobSucceeded,
    RequestSent,
)
from pipeline.models import FeatureResult, Job
from pipeline.scheduler import CreditBudget, SchedulerOptions, Timing, build_scheduler
from pipeline.scheduler.inflight import INITIAL_LIMIT
from pipeline.scheduler.submit import MIN_EDITS_SEEN
from pipeline.store.local import Store
from tests.helpers.fakes import FakeClient
from tests.test_scheduler import make_jobs

pytestmark = pytest.mark.slow  # minutes of a run simulated on virtual time: seconds of CPU each

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
RPM = 150.0
JITTER = 0.2


class _Now:
    value = 0.0


class _JumpingSelector(selectors.DefaultSelector):
    """Real I/O is looked at without blocking; a wait for a timer moves the clock instead."""

    def __init__(self, now: _Now) -> None:
        super().__init__()
        self._now = now

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is set")
        self._now.value += max(timeout, 0.0)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _Now()
        super().__init__(_JumpingSelector(self._virtual))

    def time(self) -> float:
        return self._virtual.value

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        """Run ``asyncio.to_thread``'s work (a result's marketplace checks) inline: a thread
        finishing in real time would leave every task waiting with no timer to jump to."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting task, as the executor would
            future.set_exception(exc)
        return future


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class TimedClient(FakeClient):
    """Edits that take ``edit`` seconds (jitter +-20 %, seeded) of the loop's clock: a sync call
    is held that long; an async record is finished once that long has passed. Every API request
    is noted with its time."""

    def __init__(self, edit: float, seed: int = 1, gateway: float | None = None) -> None:
        super().__init__()
        self.edit = edit
        # A sync call held longer than this is answered 524 at this age, the edit charged.
        self.gateway = gateway
        self.charges: dict[str, int] = {}  # edits the account paid, per job
        self.calls: list[tuple[float, bool]] = []  # when each feature call was sent, async?
        self.first_lost: float | None = None  # when the first answer was lost
        self._random = random.Random(seed)
        self._due: dict[str, float] = {}
        self.sent: list[float] = []  # when each API request (upload, call, poll) arrived

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _duration(self) -> float:
        return self.edit * (1 + JITTER * (2 * self._random.random() - 1))

    async def upload_asset(self, data: bytes, filename: str, content_type: str) -> Any:
        self.sent.append(self._now())
        return await super().upload_asset(data, filename, content_type)

    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> FeatureResult:
        self.sent.append(self._now())
        duration = self._duration()
        self.charges[job.id] = self.charges.get(job.id, 0) + 1
        self.calls.append((self._now(), asynchronous))
        if not asynchronous:
            if self.gateway is not None and duration > self.gateway:
                await asyncio.sleep(self.gateway)
                if self.first_lost is None:
                    self.first_lost = self._now()
                raise AnswerLost("HTTP 524: the CDN gave up", 524, seen="server_error")
            await asyncio.sleep(duration)
            return await super().run_feature(job, image_path, mask_path)
        record = await super().run_feature(job, image_path, mask_path, asynchronous=True)
        self._due[record.uuid] = self._now() + duration
        return record

    async def poll_result(self, uuid: str) -> FeatureResult:
        self.sent.append(self._now())
        self.polls.append(uuid)
        if self._now() < self._due[uuid]:
            return FeatureResult(uuid, (), None, 100, 10_000, finished=False, status="PROCESSING")
        return self._finished(uuid)


class Run:
    def __init__(self, client: TimedClient, events: list[Event], jobs: int) -> None:
        self.client, self.events, self.jobs = client, events, jobs

    def paid_twice(self) -> int:
        return sum(count - 1 for count in self.client.charges.values())

    def most_in_window(self, seconds: float = 60.0) -> int:
        """The most API requests in any half-open window of ``seconds`` (less a rounding error:
        requests paced 0.4 s apart put the 151st at 60 s, give or take a last bit)."""
        times = sorted(self.client.sent)
        span = seconds - 1e-6
        return max(bisect.bisect_left(times, t + span) - i for i, t in enumerate(times))

    def most_in_flight(self) -> int:
        now = most = 0
        for event in self.events:
            if isinstance(event, JobStarted):
                now += 1
                most = max(most, now)
            elif isinstance(event, JobSucceeded):
                now -= 1
        return most

    def limits(self) -> list[int]:
        return [e.limit for e in self.events if isinstance(e, ConcurrencyChanged)]

    def requests_per_edit(self) -> float:
        return len(self.client.sent) / self.jobs

    def steady_edits_per_minute(self, start: float, end: float) -> float:
        """Edits finished a minute between ``start`` and ``end`` (s of the run's clock)."""
        done = [t for t in self.finished if start <= t < end]
        return len(done) / (end - start) * 60.0

    def polls_per_edit(self, start: float, end: float) -> float:
        polls = sum(
            1
            for e, t in zip(self.events, self.stamps, strict=True)
            if start <= t < end and isinstance(e, RequestSent) and e.kind == "poll"
        )
        return polls / len([t for t in self.finished if start <= t < end])

    finished: list[float]
    stamps: list[float]


def simulate(
    tmp_path: Path,
    *,
    edit: float,
    jobs: int,
    concurrency: int | str = "auto",
    submit: str = "auto",
    max_concurrency: int = 256,
    gateway: float | None = None,
) -> Run:
    client = TimedClient(edit, gateway=gateway)
    events: list[Event] = []
    stamps: list[float] = []
    finished: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bus = EventBus()
        bus.subscribe(events.append)
        bus.subscribe(lambda e: stamps.append(loop.time()))
        bus.subscribe(
            lambda e: finished.append(loop.time()) if isinstance(e, JobSucceeded) else None
        )
        store = Store(tmp_path / "out")
        store.prepare()
        scheduler = build_scheduler(
            client,
            store,
            bus,
            Throttle(RateLimit(rpm=RPM)),  # on the loop's clock
            _NoResume(),
            policy=RetryPolicy(),
            options=SchedulerOptions(
                concurrency=concurrency,
                max_concurrency=max_concurrency,
                submit=submit,  # type: ignore[arg-type]
            ),
            credits=CreditBudget(),
            credits_for=lambda job: 1000,
            timing=Timing(sleep=asyncio.sleep, clock=loop.time, rand=random.Random(2).random),
        )
        await scheduler.run(make_jobs(tmp_path, jobs, shared_image=False))

    run_virtual(main)
    run = Run(client, events, jobs)
    run.finished = finished
    run.stamps = stamps
    assert len(finished) == jobs
    return run


class _NoResume:
    def __init__(self) -> None:
        self._assets: dict[str, Any] = {}

    def pending_for(self, job_id: str, key: str) -> None:
        return None

    def parts_for(self, job_id: str, key: str) -> dict[int, Any]:
        return {}

    def partial_for(self, job_id: str, key: str) -> None:
        return None

    def lost_answers(self, job_id: str, key: str) -> int:
        return 0

    def asset_for(self, digest: str | None) -> Any:
        return None

    def forget_asset(self, digest: str | None) -> None:
        return None

    def remember_asset(self, digest: str, path: str) -> None:
        return None


def budget_allows(run: Run) -> float:
    """Edits a minute ``--rpm`` allows at the requests an edit this run needed."""
    return RPM / run.requests_per_edit()


def test_virtual_time_moves_only_through_timers() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.gather(asyncio.sleep(3600), asyncio.sleep(60))
        return loop.time()

    assert run_virtual(main) == pytest.approx(3600.0)


def test_auto_fills_the_budget_with_20_s_edits_and_runs_sync_after_its_first_records(
    tmp_path: Path,
) -> None:
    run = simulate(tmp_path, edit=20.0, jobs=320)
    assert run.most_in_window() <= RPM  # never more than --rpm in any 60 s
    flags = run.client.async_flags
    assert flags[:MIN_EDITS_SEEN] == [True] * MIN_EDITS_SEEN and not any(flags[60:])
    assert run.requests_per_edit() < 2.2  # an upload and a call, once sync
    last = run.finished[-1]
    rate = run.steady_edits_per_minute(60.0, last - 30.0)
    assert rate >= 0.95 * budget_allows(run)  # 75 edits a minute at two requests an edit
    assert max(run.limits()) < 60  # about Little's 25 and a few: no pile at the gate


@pytest.mark.parametrize(("edit", "jobs"), [(60.0, 320), (120.0, 440)])
def test_auto_fills_the_budget_with_slow_edits_and_stays_async(
    tmp_path: Path, edit: float, jobs: int
) -> None:
    run = simulate(tmp_path, edit=edit, jobs=jobs)
    assert run.most_in_window() <= RPM
    assert all(run.client.async_flags)  # 72 s and more is past half of the gateway's 100 s
    # Steady: after the first waves (a cold start sends its first records all at once, and
    # their polls and replacements come in waves that take a few edit times to smooth out).
    start, end = 3 * edit, run.finished[-1] - edit
    assert run.polls_per_edit(start, end) <= 1.1  # timed by the records seen finish
    assert len(run.client.polls) / run.jobs <= 1.45  # the first wave's included
    assert run.steady_edits_per_minute(start, end) >= 0.95 * budget_allows(run)
    assert run.most_in_flight() <= max(run.limits())


def test_a_fixed_concurrency_caps_the_rate_below_the_budget(tmp_path: Path) -> None:
    """Today's old default: 8 sync calls of 20 s make 24 edits a minute, whatever --rpm."""
    run = simulate(tmp_path, edit=20.0, jobs=60, concurrency=8, submit="sync")
    assert run.most_in_flight() == 8 and run.limits() == [8]
    rate = run.steady_edits_per_minute(20.0, run.finished[-1] - 20.0)
    assert rate < 0.4 * budget_allows(run)


def test_never_more_in_flight_than_max_concurrency(tmp_path: Path) -> None:
    run = simulate(tmp_path, edit=60.0, jobs=60, max_concurrency=12)
    assert run.most_in_flight() <= 12 and max(run.limits()) == 12
    assert run.most_in_window() <= RPM


def test_sync_calls_slower_than_the_gateway_cost_at_most_the_first_few_edits_twice(
    tmp_path: Path,
) -> None:
    """``--sync`` with 120 s edits behind a 100 s gateway: each call open when the first one
    is answered 524 was paid and is sent again async. Until a sync call has been seen to
    finish, auto keeps only its first few jobs in flight, so that is all a wrong guess costs
    (the limit grew to about Little's 150 before: 107 edits paid twice in the bench)."""
    run = simulate(tmp_path, edit=120.0, jobs=40, submit="sync", gateway=GATEWAY_TIMEOUT)
    client = run.client
    sync_sent = [when for when, asynchronous in client.calls if not asynchronous]
    # A first sync call finished (a jittered 96 s) lets a few more go before the first 524.
    assert 0 < run.paid_twice() <= 2 * INITIAL_LIMIT
    assert client.first_lost is not None and max(sync_sent) < client.first_lost
    assert len(run.finished) == 40  # each lost answer re-sent once, async, and delivered


def test_sync_calls_inside_the_gateway_grow_the_limit_once_one_has_finished(
    tmp_path: Path,
) -> None:
    run = simulate(tmp_path, edit=20.0, jobs=120, submit="sync", gateway=GATEWAY_TIMEOUT)
    assert run.paid_twice() == 0 and not any(run.client.async_flags)
    assert max(run.limits()) > 2 * INITIAL_LIMIT  # Little's 25 and the headroom
