"""The rate gate every request to the API host passes (uploads, feature calls, result polls).

The rule (docs/api.md#rate-budget), exactly:

- **Pace.** Requests leave one at a time, evenly spaced at ``--rpm`` (one interval = 60 / rpm
  seconds apart; a bucket of one, so no burst at start-up, after idling or after a pause). A
  sender that waited takes the slot it waited for even if it woke a little late, so the event
  loop's lateness does not slow the pace.
- **A lone 429 with Retry-After** delays only the call that got it (the scheduler sleeps the
  policy's delay for it, the announced wait capped at ``retry_after_max``). The pace is not cut;
  every other worker goes on.
- **Correlated 429s mean the account's limit is reached.** They are: ``correlated_429s``
  (default 3) 429s whose announced waits are in force at once (each counts from its arrival for
  its announced wait, at least ``CORRELATION_INTERVALS`` intervals), or more than
  ``share_limit`` (10%) 429s among the last ``share_window`` (20) answers, or any 429 with a
  Retry-After within one announced wait after a pause for correlated 429s ended (the limit was
  reached a moment ago: this is the same limit, not a lone 429). Then new calls from every worker
  pause until the announced time of the latest 429 (a pause only ever grows), and the pace is cut
  once per congestion event (multiplied by ``slowdown_factor``, never below ``min_rpm``).
- **A 429 without Retry-After** cuts the pace and pauses every worker one interval at the new
  pace; the other calls that were in flight answer 429 too, so further hint-less 429s within
  ``SLOWDOWN_HOLD_INTERVALS`` intervals belong to the same event and do not cut again.
- **Recovery.** Each success adds ``recovery_step`` of the configured pace back, up to (never
  above) ``--rpm``: additive increase, multiplicative decrease (AIMD).
- **Release after a pause is spread.** Senders queue in arrival order and leave one interval
  apart, a pause holding the head of the queue: when a pause ends, the waiting workers leave one
  interval apart, never at once.

The rule lives in ``RateControl``, pure arithmetic on an injected clock: ``Throttle`` (one
process) and the Ray budget actor (``distributed.budget``, every shard) both own one, so a run
on one machine and a run on a cluster react to 429s the same way. ``Gate`` is what the
scheduler needs of either.

The pacer is this module's own (a FIFO queue and the time of the last send) rather than
aiolimiter's bucket: it runs on the injected clock and sleep, and a change of pace applies to the
same single queue (rebuilding an aiolimiter bucket on each change of pace left the old bucket's
waiters running at the old pace beside the new one's: a burst above the pace).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from pipeline.config import RateLimit

# A Retry-After of 0 or a fraction of a second still groups the 429s of one burst: an announced
# wait counts as at least this many intervals at the current pace.
CORRELATION_INTERVALS = 3.0
# After a pause for correlated 429s ends, a 429 with a hint within this many announced waits is
# the same limit again (a server's window refills on its own period), so it pauses everyone at
# once instead of being allowed as a lone 429.
LIMIT_MEMORY_WAITS = 1.0
# After a cut, further 429s within this many intervals at the new pace (answers to calls sent
# before the cut) belong to the same congestion event and do not cut again.
SLOWDOWN_HOLD_INTERVALS = 2.0

_NEVER = -math.inf


class Gate(Protocol):
    """What the scheduler asks of the rate budget: a ``Throttle`` here, a lease of the shared
    budget on a Ray shard (``distributed.budget.RemoteThrottle``)."""

    async def acquire(self) -> None: ...
    def on_success(self) -> None: ...
    def on_rate_limited(self, retry_after: float | None) -> None: ...
    def paused_for(self) -> float: ...

    @property
    def current_rpm(self) -> float: ...


class RateControl:
    """The pace and the 429 reaction, without sending anything: the one owner of the rule.

    ``clock`` is any monotonic clock in seconds. The pace is ``current_rpm`` (0: unpaced); a
    pause holds every sender until ``pause_until``.
    """

    def __init__(self, rate: RateLimit, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self.configured_rpm = rate.rpm
        self.current_rpm = rate.rpm
        self._answers: deque[bool] = deque(maxlen=rate.share_window)
        self.pause_until = _NEVER
        self._hold_rate_until = _NEVER
        self._limit_known_until = _NEVER
        self._in_force: deque[float] = deque()  # when the announced waits of recent 429s end
        self.slowdowns = 0  # cuts of the pace
        self.pauses = 0  # correlated 429s that paused every sender

    def interval(self) -> float:
        return 60.0 / self.current_rpm if self.current_rpm > 0 else 0.0

    def set_rpm(self, rpm: float) -> None:
        """A new configured pace (the Ray driver's ``--rpm`` for a budget that outlives runs)."""
        self.configured_rpm = self.current_rpm = rpm

    def pause(self, seconds: float) -> None:
        """Hold every sender's next request for ``seconds``; a pause never shrinks."""
        self.pause_until = max(self.pause_until, self._clock() + seconds)

    def paused_for(self) -> float:
        return max(0.0, self.pause_until - self._clock())

    # -- answers ------------------------------------------------------------------------------

    def on_success(self, count: int = 1) -> None:
        """``count`` answers that were not 429s: additive recovery, one step each."""
        for _ in range(count):
            self._record_answer(limited=False)
        if 0 < self.current_rpm < self.configured_rpm:
            step = self._rate.recovery_step * self.configured_rpm * count
            self._set_rate(self.current_rpm + step)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429; ``retry_after``: the announced wait, capped (``RetryPolicy.announced_wait``)."""
        share_tripped = self._record_answer(limited=True)
        if retry_after is None:
            self._slow_down()
            if self.current_rpm > 0:
                self.pause(self.interval())  # let the server's window drain a little
            return
        now = self._clock()
        self._in_force.append(now + max(retry_after, CORRELATION_INTERVALS * self.interval()))
        while self._in_force and self._in_force[0] <= now:
            self._in_force.popleft()
        if (
            share_tripped
            or now < self._limit_known_until
            or len(self._in_force) >= self._rate.correlated_429s
        ):
            self._limit_reached(retry_after)
        # else: a lone 429; its own call waits (the scheduler sleeps the policy's delay).

    def _record_answer(self, limited: bool) -> bool:
        """Note an answer; True if 429s now pass their share of the recent answers."""
        self._answers.append(limited)
        if not limited or self._answers.maxlen is None:
            return False
        tripped = self._answers.count(True) > self._rate.share_limit * self._answers.maxlen
        if tripped:
            self._answers.clear()  # one trip per rising share, not one per later 429
        return tripped

    def _limit_reached(self, retry_after: float) -> None:
        self.pauses += 1
        self.pause(retry_after)
        self._slow_down()
        # The pause may end before the cut's hold: calls in flight at the cut still answer late.
        self._hold_rate_until = max(self._hold_rate_until, self.pause_until)
        memory = LIMIT_MEMORY_WAITS * retry_after
        self._limit_known_until = max(self._limit_known_until, self.pause_until + memory)

    def _slow_down(self) -> None:
        """Cut the pace, once per congestion event."""
        now = self._clock()
        if self.configured_rpm <= 0 or now < self._hold_rate_until:
            # The other calls in flight when the server pushed back answer 429 too; that is one
            # congestion event, so the pace is cut once (as TCP does per window).
            return
        self.slowdowns += 1
        self._set_rate(self.current_rpm * self._rate.slowdown_factor)
        self._hold_rate_until = now + self.interval() * SLOWDOWN_HOLD_INTERVALS

    def _set_rate(self, rpm: float) -> None:
        # The next sender is spaced at the new pace from the last one: still a single stream.
        self.current_rpm = min(self.configured_rpm, max(self._rate.min_rpm, rpm))


class Throttle:
    """The rate gate of one process: a FIFO of senders, one interval apart, under a
    ``RateControl``."""

    def __init__(
        self,
        rate: RateLimit,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.control = RateControl(rate, self._now)
        self._turn = asyncio.Lock()
        self._last_sent = _NEVER

    @property
    def current_rpm(self) -> float:
        return self.control.current_rpm

    @property
    def slowdowns(self) -> int:
        return self.control.slowdowns

    @property
    def pauses(self) -> int:
        return self.control.pauses

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def acquire(self) -> None:
        """Wait until a request to the API host may go: after any pause, one interval apart."""
        # One sender at a time, in arrival order (asyncio.Lock is FIFO): the head of the queue
        # waits for both the pause and its slot, the others wait behind it, so the end of a
        # pause lets exactly one through and the next one an interval later.
        async with self._turn:
            waited = False
            while (wait := self._ready_at() - self._now()) > 0:
                # Woken early or late, look again: a pause may have begun or grown meanwhile.
                waited = True
                await self._sleep(wait)
            now = self._now()
            # A sender that waited takes the slot it waited for, not the moment it woke: an
            # event loop late by a few milliseconds at every wake must not add up over a queue
            # of senders (on a busy machine it cost a tenth of the pace). At most one interval
            # is made up, so the pace is never exceeded by more than a request. One that found
            # the gate free takes now (no burst after idling).
            self._last_sent = (
                max(self._ready_at(), now - self.control.interval()) if waited else now
            )

    def _ready_at(self) -> float:
        return max(self.control.pause_until, self._last_sent + self.control.interval())

    def pause(self, seconds: float) -> None:
        self.control.pause(seconds)

    def paused_for(self) -> float:
        return self.control.paused_for()

    def on_success(self) -> None:
        self.control.on_success()

    def on_rate_limited(self, retry_after: float | None) -> None:
        self.control.on_rate_limited(retry_after)
