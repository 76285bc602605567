"""A tqdm progress bar driven by events: done, failed, retrying, rate and ETA; jobs in flight
beside the pool's limit, and edits a minute beside what the request budget allows."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from pipeline.events import (
    ConcurrencyChanged,
    Event,
    JobFailed,
    JobRetrying,
    JobSucceeded,
)
from pipeline.reporting.stats import RunStats, in_flight_text


class ProgressBar:
    def __init__(
        self, total: int | None, stats: RunStats, initial: int = 0, stream: TextIO = sys.stderr
    ) -> None:
        self._stats = stats
        self._bar = tqdm(
            total=total,
            initial=initial,  # jobs done before this run: never fed, already counted
            unit="job",
            file=stream,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobSucceeded | JobFailed):
            self._bar.update(1)
            self._refresh()
        elif isinstance(event, JobRetrying | ConcurrencyChanged):
            self._refresh()

    def _refresh(self) -> None:
        stats = self._stats
        self._bar.set_postfix(
            done=stats.succeeded,
            failed=stats.failed,
            skipped=stats.skipped,
            retrying=len(stats.retrying),
            in_flight=in_flight_text(len(stats.in_flight), stats.limit),
            edits_min=edits_text(stats),
            refresh=False,
        )

    def close(self) -> None:
        self._bar.close()


def edits_text(stats: RunStats) -> str:
    """``74.8 of 75.0``: edits a minute over the last minute, and what the budget allows."""
    rate, allowed = stats.edits_per_minute(), stats.budget_allows()
    shown = "-" if rate is None else f"{rate:.1f}"
    return shown if allowed is None else f"{shown} of {allowed:.1f}"
