"""How each feature call is sent: with ``"async": true`` (answered at once with a processing
record, then polled) or synchronously (the connection held open for the whole edit).

``Purchase`` asks the run's ``SubmitPolicy`` before every call and tells it what it saw: how
long an edit took, and every answer lost after the body was sent (an unknown outcome). The
policy is the seam between buying edits and choosing the mode: ``FixedSubmit`` is ``--async``
and ``--sync``; ``submit: auto`` (sync only while edits finish well inside the CDN gateway's
patience) implements the same protocol. See ``docs/api.md#submit-modes``.
"""

from __future__ import annotations

from typing import Literal, Protocol

FixedMode = Literal["async", "sync"]


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


class FixedSubmit:
    """``--async`` or ``--sync``. A sync run turns async at its first lost answer and stays so:
    a sync call slower than the gateway is charged and its answer lost, every time, while an
    async call answers at once."""

    def __init__(self, mode: FixedMode) -> None:
        self._asynchronous = mode == "async"

    def __repr__(self) -> str:
        return f"FixedSubmit({'async' if self._asynchronous else 'sync'!r})"

    def asynchronous(self) -> bool:
        return self._asynchronous

    def on_finished(self, seconds: float) -> None:
        return None  # a fixed mode learns nothing from how long edits take

    def on_lost_answer(self) -> None:
        self._asynchronous = True


def submit_policy(mode: str) -> SubmitPolicy:
    """The policy of a run's ``submit`` setting. ``auto`` starts async, as the fixed async
    mode does, until its own policy (sync while edits are fast) is built behind this seam."""
    return FixedSubmit("sync" if mode == "sync" else "async")
