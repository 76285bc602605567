"""How each feature call is sent: with ``"async": true`` (answered at once with a processing
record, then polled) or synchronously (the connection held open for the whole edit).

``Purchase`` asks the run's ``SubmitPolicy`` before every call and tells it what it saw: how
long an edit took, and every answer lost after the body was sent (an unknown outcome). The
policy is the seam between buying edits and choosing the mode: ``FixedSubmit`` is ``--async``
and ``--sync``; ``AutoSubmit`` is ``submit: auto``, the default. See
``docs/api.md#submit-modes``.

Why switch at all: a sync call is held open for the whole render behind a CDN that gives up
after ``timeouts.gateway`` seconds (an HTML 524 while the origin may still finish and charge the
edit), while an async call answers at once and costs at least one poll of the one request
budget. When the budget binds, sync calls make more edits a minute (a distinct photo costs an
upload and a call, not those and a poll), but only while edits finish well inside the gateway's
patience. ``AutoSubmit`` starts async; sends sync calls only once ``MIN_EDITS_SEEN`` edits have
finished, while the p99 of the last ``RECENT_EDITS`` edit times is under ``SAFE_SHARE`` of the
gateway's patience, and never again after a lost answer. A slow edit turns it back to async at
once (with fewer than 100 edits in the window the p99 is the slowest) until that edit has left
the window. Edit times come from both kinds of call: a sync call's duration, an async record's
time from its POST to the poll that saw it finished (the longer measure: it only makes the
policy more careful).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from typing import Literal, Protocol

from pipeline.config import GATEWAY_TIMEOUT

FixedMode = Literal["async", "sync"]
MIN_EDITS_SEEN = 8  # edits finished before the first sync call
RECENT_EDITS = 64  # the window the p99 is taken over
SAFE_SHARE = 0.5  # sync only while the p99 is under this share of the gateway's patience
QUANTILE = 0.99


class SubmitPolicy(Protocol):
    def asynchronous(self) -> bool:
        """Send the next call with ``"async": true``?"""
        ...

    def on_finished(self, seconds: float) -> None:
        """An edit (sync or async) took ``seconds`` from its POST to its finished record."""
        ...

    def on_lost_answer(self) -> None:
        """A feature call's answer was lost after its body was sent (52x, HTML 5xx, timeout,
        dropped connection): an unknown outcome."""
        ...

    def sync_untried(self) -> bool:
        """Whether the next call would be held open (sync) while no edit has been seen to
        finish: how long edits take is unknown, and each call open when the first one outlives
        the gateway is paid twice (its answer lost, then sent again async). The in-flight
        controller keeps the run small until this turns False."""
        ...


class FixedSubmit:
    """``--async`` or ``--sync``. A sync run turns async at its first lost answer and stays so:
    a sync call slower than the gateway is charged and its answer lost, every time, while an
    async call answers at once."""

    def __init__(self, mode: FixedMode) -> None:
        self._asynchronous = mode == "async"
        self._seen_finish = False

    def __repr__(self) -> str:
        return f"FixedSubmit({'async' if self._asynchronous else 'sync'!r})"

    def asynchronous(self) -> bool:
        return self._asynchronous

    def on_finished(self, seconds: float) -> None:
        self._seen_finish = True  # how long does not matter: the mode is fixed

    def on_lost_answer(self) -> None:
        self._asynchronous = True

    def sync_untried(self) -> bool:
        return not self._asynchronous and not self._seen_finish


class AutoSubmit:
    """``submit: auto``: async until edits are seen to finish well inside the gateway's
    patience (``gateway``: ``timeouts.gateway``); async for good after a lost answer."""

    def __init__(
        self,
        gateway: float = GATEWAY_TIMEOUT,
        *,
        min_seen: int = MIN_EDITS_SEEN,
        window: int = RECENT_EDITS,
    ) -> None:
        self._threshold = gateway * SAFE_SHARE
        self._min_seen = max(1, min_seen)
        self._recent: deque[float] = deque(maxlen=max(1, window))
        self._lost = False

    def __repr__(self) -> str:
        return f"AutoSubmit(sync below {self._threshold:g} s)"

    def asynchronous(self) -> bool:
        if self._lost or len(self._recent) < self._min_seen:
            return True
        return p99(self._recent) >= self._threshold

    def on_finished(self, seconds: float) -> None:
        self._recent.append(seconds)

    def on_lost_answer(self) -> None:
        self._lost = True

    def sync_untried(self) -> bool:
        return False  # it sends sync calls only once edits were seen to finish fast


def p99(values: Collection[float]) -> float:
    """The nearest-rank 99th percentile (of fewer than 100 values: the largest)."""
    ordered = sorted(values)
    rank = math.ceil(QUANTILE * len(ordered))
    return ordered[max(0, rank - 1)]


def submit_policy(mode: str, gateway: float = GATEWAY_TIMEOUT) -> SubmitPolicy:
    """The policy of a run's ``submit`` setting: ``auto``, ``async`` or ``sync``."""
    if mode == "auto":
        return AutoSubmit(gateway)
    return FixedSubmit("sync" if mode == "sync" else "async")
