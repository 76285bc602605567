"""A tqdm progress bar driven by events: done, failed, retrying, rate and ETA."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from pipeline.events import Event, JobFailed, JobRetrying, JobSkipped, JobSucceeded
from pipeline.reporting.stats import RunStats


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
        if isinstance(event, JobSucceeded | JobFailed | JobSkipped):
            self._bar.update(1)
            self._refresh()
        elif isinstance(event, JobRetrying):
            self._refresh()

    def _refresh(self) -> None:
        stats = self._stats
        self._bar.set_postfix(
            done=stats.succeeded,
            failed=stats.failed,
            skipped=stats.skipped,
            retrying=len(stats.retrying),
            refresh=False,
        )

    def close(self) -> None:
        self._bar.close()
