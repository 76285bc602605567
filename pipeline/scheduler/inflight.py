"""How many jobs ``--concurrency auto`` keeps in flight, and the gate that admits them.

The request budget, not the server, is the bottleneck. The account allows ``--rpm`` API requests
a minute; every edit spends a few of them (its upload, its call, its polls); an edit takes tens of
seconds that no concurrency of ours shortens. So the budget fixes the rate of edits (edits a
second = requests a second / requests an edit) and Little's law gives the jobs that must be in
flight to keep that rate: ``L = edits a second x seconds an edit takes``. ``InflightController``
measures both factors from the jobs that end and keeps the limit a little above L::

    limit = ceil(L x (1 + HEADROOM_SHARE)) + HEADROOM_JOBS

so that a few requests always wait at the rate gate (it never idles: the budget is used whole)
and only a few (jobs do not pile up at the gate: at 75 edits a minute the limit is about 30, not
hundreds).

Why not the latency-driven limits of TCP Vegas or Netflix's concurrency-limits (Vegas,
gradient)? They read a growing latency as a queue that their own concurrency builds and cut the
limit. Here the queue we build is at our own gate, where we can see it, and an edit getting
slower is the API's pace: it calls for *more* jobs in flight (Little), the opposite of their
reaction. What is borrowed from Vegas is the aim (a small queue at the bottleneck, never empty,
never long) and its no-load latency: the seconds a job spent waiting at our gate are taken out
of its time before averaging. Without that, a larger limit would mean longer waits, a longer
average time and a larger limit again.

- **Start.** Before any job has ended the edit time is unknown, but the jobs in flight were
  admitted over the last t seconds and none has ended, so an edit takes at least t (twice their
  median age): the limit is Little's at t, growing with the first jobs' age from
  ``INITIAL_LIMIT`` about as fast as the gate can start jobs. ``Slots`` asks again every
  ``RECHECK_SECONDS`` meanwhile. Later, the jobs in flight still say when edits take longer
  than the ended ones did (``edit_seconds``).
- **Estimates** are weighted averages (``ESTIMATE_WEIGHT``) over the jobs that ended: seconds in
  flight less the gate's waits, and API requests sent (retries and polls included). Requests an
  edit start from the caller's prior (two for a sync call with its upload, three for an async
  one with its poll), weighed as one job.
- **429s.** When 429s say the account's limit is reached the gate cuts its pace
  (``api.throttle``); the budget the controller reads is that pace, so the limit follows it
  down. After any 429 the limit does not grow for ``HOLD_AFTER_429`` seconds.
- **Waves.** A cold start admits its first jobs together; they end together and, replaced
  together, would keep the gate busy while they start and idle while they all wait, edit time
  after edit time. The pool spreads admissions at a little more than the rate the budget allows
  edits (``admission_interval``), so a burst of ends becomes an even stream of starts.
- **Bounds.** Never above ``ceiling`` (``--max-concurrency``), never below 1. An unpaced gate
  (``--rpm 0`` in tests) has no budget to fill: the ceiling.

The controller is arithmetic on an injected clock (tests drive it without an event loop);
``Slots`` is the small asyncio gate the pool admits jobs through, under any limit function.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pipeline.api.throttle import Gate

INITIAL_LIMIT = 4  # jobs in flight before anything is known
HEADROOM_SHARE = 0.25  # above Little's L, as a share of it ...
HEADROOM_JOBS = 4  # ... and a few jobs more: requests waiting at the gate, so it never idles
ESTIMATE_WEIGHT = 0.1  # weight of each ended job in the average edit time (about 20 jobs)
RECENT_JOBS = 31  # the jobs whose median gives the requests an edit
HOLD_AFTER_429 = 30.0  # seconds after a 429 during which the limit does not grow
RECHECK_SECONDS = 1.0  # while the limit grows with time alone, Slots asks again this often
REQUESTS_SYNC = 2.0  # requests an edit before any has ended: upload + call
REQUESTS_ASYNC = 3.0  # upload + call + one poll
MIN_REQUESTS = 1.0  # an edit costs at least its call (shared uploads may make it just that)
IN_FLIGHT_AGE_FACTOR = 2.0  # jobs in flight: an edit takes about twice their median age


@dataclass(frozen=True)
class InflightView:
    """What the controller holds now, for the progress line and the log."""

    limit: int
    edits_per_minute: float | None  # what the budget allows at the requests an edit seen
    edit_seconds: float | None  # seconds a job is in flight (the gate's waits left out)
    requests_per_edit: float


class InflightController:
    """Jobs in flight to fill the request budget: Little's law on measured factors.

    ``budget``: API requests a second the gate allows now (0: unpaced). ``clock``: monotonic
    seconds. ``requests_prior``: requests an edit until a job has ended.
    """

    def __init__(
        self,
        *,
        budget: Callable[[], float],
        clock: Callable[[], float],
        ceiling: int,
        requests_prior: float = REQUESTS_ASYNC,
        initial: int = INITIAL_LIMIT,
        cautious: Callable[[], bool] = lambda: False,
    ) -> None:
        self._budget = budget
        # While this says so and no job has ended, the limit stays at ``initial``: sync calls
        # whose edits may outlive the CDN's patience (``SubmitPolicy.sync_untried``).
        self._cautious = cautious
        self._clock = clock
        self.ceiling = max(1, ceiling)
        self._initial = max(1, min(initial, self.ceiling))
        # Requests of the recent jobs that ended, for their median (the prior until then).
        # The first wave's jobs (admitted before any had ended) do not count: they were
        # polled while nothing had finished yet (the first record many times, the others
        # early), a cost of the start that later jobs do not pay.
        self._requests_prior = requests_prior
        self._recent_requests: deque[int] = deque(maxlen=RECENT_JOBS)
        self._seconds: float | None = None  # a weighted average; None until a job has ended
        # Tickets below this were the first wave: in flight when the first job ended. Until
        # they have ended, the fastest of them are all that has, and the others' ages say more.
        self._first_wave_end: int | None = None
        self._first_wave_left = 0
        # Tickets in flight -> when they started, and their waits at the gate so far.
        self._started: dict[int, tuple[float, AtGate]] = {}
        self._next_ticket = 0
        self._hold_until = -math.inf
        self._held_limit = self.ceiling
        self._last = self._initial

    # -- what the pool tells it ---------------------------------------------------------------

    def started(self, job: AtGate | None = None) -> int:
        """A job was admitted; ``job`` says whether and how long it has waited at the rate gate
        (none: never). The ticket goes back with ``ended``."""
        ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
        self._started[ticket] = (self._clock(), job or _NEVER_AT_GATE)
        return ticket

    def ended(self, ticket: int, *, requests: int, gate_wait: float) -> None:
        """A job left the pool (done, failed or deferred) after ``requests`` API requests;
        ``gate_wait``: seconds its uploads and calls waited at the rate gate (before its edit
        could start; a poll's wait overlaps the edit and is not counted)."""
        entry = self._started.pop(ticket, None)
        if entry is None:
            return
        began = entry[0]
        seconds = max(0.0, self._clock() - began - gate_wait)
        if self._first_wave_end is None:
            self._first_wave_end = self._next_ticket
            self._first_wave_left = len(self._started) + 1
        self._seconds = _average(self._seconds, seconds)
        if ticket < self._first_wave_end:
            self._first_wave_left -= 1
        else:
            self._recent_requests.append(requests)

    def rate_limited(self) -> None:
        """A 429 came back: no growth for a while (the gate cuts the budget if it must)."""
        now = min(self._last, self._target())  # the gate has cut its pace already, if it must
        self._held_limit = min(self._held_limit, now) if self._holding() else now
        self._hold_until = self._clock() + HOLD_AFTER_429

    # -- what it answers ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._started)

    @property
    def requests_per_edit(self) -> float:
        """The median of the recent jobs' requests (the prior before any has ended)."""
        if not self._recent_requests:
            return self._requests_prior
        ordered = sorted(self._recent_requests)
        return float(ordered[len(ordered) // 2])

    @property
    def grows_with_time(self) -> bool:
        """True while no job has ended: the limit rises with the age of the first jobs."""
        return self._seconds is None

    def limit(self) -> int:
        """Jobs that may be in flight now."""
        value = self._target()
        if self._seconds is None and self._cautious():
            value = min(value, self._initial)
        if self._holding():
            value = min(value, self._held_limit)
        self._last = value
        return value

    def admission_interval(self) -> float:
        """Seconds between admissions: a little faster than the budget allows edits (by the
        headroom, so that it only smooths bursts), 0 when unpaced. Jobs admitted in a burst
        (the first wave ending together) would stay in step, wave after wave: the gate busy
        while they start, idle while they all wait."""
        per_second = self._budget()
        if per_second <= 0:
            return 0.0
        return self.requests_per_edit / per_second / (1.0 + HEADROOM_SHARE)

    def view(self) -> InflightView:
        per_second = self._budget()
        per_edit = self.requests_per_edit
        allowed = per_second / max(per_edit, MIN_REQUESTS) * 60.0 if per_second > 0 else None
        return InflightView(self.limit(), allowed, self.edit_seconds() or None, per_edit)

    # -- the arithmetic -----------------------------------------------------------------------

    def _target(self) -> int:
        """Little's L and the headroom at the budget and estimates of now, within the bounds."""
        per_second = self._budget()
        if per_second <= 0:
            return self.ceiling  # unpaced: nothing to fill, only the ceiling bounds it
        value = max(1, self._little(per_second))
        if self._seconds is None:
            value = max(value, self._initial)
        return min(self.ceiling, value)

    def _little(self, requests_per_second: float) -> int:
        edits_per_second = requests_per_second / max(self.requests_per_edit, MIN_REQUESTS)
        needed = edits_per_second * self.edit_seconds()  # Little's L
        return math.ceil(needed * (1.0 + HEADROOM_SHARE)) + HEADROOM_JOBS

    def edit_seconds(self) -> float:
        """Seconds a job is in flight: the jobs that ended say it, unless the jobs in flight
        say more. Those were admitted evenly over about one edit time, so the median is half
        way through it: twice its age is an edit time the ended jobs alone would miss at the
        start (the first to end are the fastest) and when edits get slower (before the slow
        ones end). A single stuck job does not move a median."""
        from_ages = IN_FLIGHT_AGE_FACTOR * self._median_age()
        if self._seconds is None:
            return from_ages
        if self._first_wave_left > 0:
            return max(self._seconds, from_ages)
        return self._seconds

    def _median_age(self) -> float:
        """The median age of the jobs in flight, their waits at the gate left out (else a queue
        at the gate would read as slower edits and grow the limit, and the queue with it)."""
        if not self._started:
            return 0.0
        now = self._clock()
        ages = sorted(now - began - job.gate_seconds(now) for began, job in self._started.values())
        return ages[len(ages) // 2]

    def admits_now(self) -> bool:
        """Whether a job may be admitted now, as far as the gate's queue goes: while more jobs
        wait at the gate than the headroom means to keep there, one more would only wait too
        (when the first wave's records are all due at once, their polls go first)."""
        waiting = sum(1 for _, job in self._started.values() if job.at_gate)
        return waiting <= self._queue_kept()

    def _queue_kept(self) -> int:
        per_second = self._budget()
        if per_second <= 0:
            return self.ceiling
        needed = per_second / max(self.requests_per_edit, MIN_REQUESTS) * self.edit_seconds()
        return math.ceil(needed * HEADROOM_SHARE) + HEADROOM_JOBS

    def _holding(self) -> bool:
        return self._clock() < self._hold_until


class AtGate(Protocol):
    """A job in flight as the controller sees it (``scheduler.job.JobRun`` is one)."""

    @property
    def at_gate(self) -> bool: ...  # waiting at the rate gate now

    def gate_seconds(self, now: float) -> float: ...  # waited there so far, now's wait too


class _NeverAtGate:
    at_gate = False

    def gate_seconds(self, now: float) -> float:
        return 0.0


_NEVER_AT_GATE = _NeverAtGate()


def _average(current: float | None, sample: float) -> float:
    if current is None:
        return sample
    return current + ESTIMATE_WEIGHT * (sample - current)


Sleep = Callable[[float], Awaitable[object]]


class Slots:
    """Admission under a limit that may change: ``acquire`` waits until fewer than ``limit()``
    jobs are in flight; ``release`` frees a slot and wakes the waiter.

    The limit is asked again at every release and, while ``time_bound()`` says it may grow with
    time alone, every ``RECHECK_SECONDS`` (on the injected sleep). Jobs already in flight are
    never stopped when the limit falls; fewer are admitted until they have ended.
    """

    def __init__(
        self,
        limit: Callable[[], int],
        *,
        sleep: Sleep = asyncio.sleep,
        time_bound: Callable[[], bool] = lambda: False,
    ) -> None:
        self._limit = limit
        self._sleep = sleep
        self._time_bound = time_bound
        self._changed = asyncio.Event()
        self.in_flight = 0

    def limit(self) -> int:
        return self._limit()

    async def acquire(self) -> None:
        while self.in_flight >= self._limit():
            await self._wait_for_change()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._changed.set()

    def wake(self) -> None:
        """Something may have raised the limit: ask again."""
        self._changed.set()

    async def _wait_for_change(self) -> None:
        self._changed.clear()
        if not self._time_bound():
            await self._changed.wait()
            return
        changed = asyncio.ensure_future(self._changed.wait())
        timer = asyncio.ensure_future(self._sleep(RECHECK_SECONDS))
        try:
            await asyncio.wait({changed, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (changed, timer):
                task.cancel()
            await asyncio.gather(changed, timer, return_exceptions=True)


class WatchedGate:
    """The run's rate gate, unchanged, telling the controller of every 429 it hears of."""

    def __init__(self, gate: Gate, controller: InflightController) -> None:
        self._gate = gate
        self._controller = controller

    async def acquire(self) -> None:
        await self._gate.acquire()

    def on_success(self) -> None:
        self._gate.on_success()

    def on_rate_limited(self, retry_after: float | None) -> None:
        self._gate.on_rate_limited(retry_after)
        self._controller.rate_limited()

    def paused_for(self) -> float:
        return self._gate.paused_for()

    @property
    def current_rpm(self) -> float:
        return self._gate.current_rpm
