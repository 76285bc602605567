"""Run statistics: Scrapy-style counters with slash keys, and ``OUT/summary.json``.

A listener on the event bus, like the ledger: it counts what the scheduler reports and never
asks it anything.

API requests are counted by kind (``requests/upload``, ``requests/feature``,
``requests/poll``: every try, from ``RequestSent``); the summary reports them per delivered
image and the budget's use: requests sent over what ``--rpm`` allowed from the first request to
the last. Jobs in flight, the pool's limit and the edits a minute the budget allows (``--rpm``
over the requests an edit has cost so far) are what the progress line and the heartbeat show.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.events import (
    AnswerLostAfterSending,
    AssetsUploaded,
    ConcurrencyChanged,
    Event,
    FeatureSubmitted,
    JobFailed,
    JobPartial,
    JobRetrying,
    JobsSkipped,
    JobStarted,
    JobSucceeded,
    RequestSent,
    RunStopping,
)
from pipeline.ledger.schema import utc_now

REQUEST_KINDS = {"upload": "uploads", "feature": "calls", "poll": "polls"}
RECENT_SECONDS = 60.0  # "edits a minute" of the progress line: over the last minute


@dataclass
class RunStats:
    clock: Callable[[], float] = time.monotonic
    counters: Counter[str] = field(default_factory=Counter)
    started_at: str = field(default_factory=utc_now)
    started: float = 0.0
    used_credit: int | None = None
    credit_limit: int | None = None
    stop_reason: str | None = None
    stop_message: str = ""
    in_flight: set[str] = field(default_factory=set)
    retrying: set[str] = field(default_factory=set)
    rpm: float | None = None  # the run's --rpm: what the budget allows
    limit: int | None = None  # jobs the pool may keep in flight now
    first_request: float | None = None  # clock time of the run's first and last API request
    last_request: float | None = None
    recent_ends: deque[float] = field(default_factory=deque)  # job ends of the last minute

    def __post_init__(self) -> None:
        self.started = self.clock()

    def __call__(self, event: Event) -> None:
        count = self.counters
        match event:
            case JobStarted(planned=planned):
                count["jobs/started"] += 1
                self.in_flight.add(planned.job.id)
            case JobsSkipped(reason=reason, count=skipped):
                count[f"jobs/skipped/{reason}"] += skipped
            case AssetsUploaded(uploads=uploads):
                count["upload/count"] += uploads
            case FeatureSubmitted(result=result, credits=credits):
                count["feature/succeeded"] += 1
                count["credits/estimated"] += credits or 0
                if result.used_credit is not None:
                    self.used_credit, self.credit_limit = result.used_credit, result.credit_limit
            case AnswerLostAfterSending(credits=credits):
                count["feature/possibly_charged"] += 1  # an unknown outcome
                count["credits/possibly_charged"] += credits or 0
            case JobRetrying(step=step, error=error, job_id=job_id):
                count["retry/count"] += 1
                count[f"retry/step/{step}"] += 1
                count[f"retry/reason/{error.kind}"] += 1
                if error.http_status:
                    count[f"retry/http/{error.http_status}"] += 1
                self.retrying.add(job_id)
            case JobSucceeded(job_id=job_id, outputs=outputs, bytes_written=written):
                count["jobs/succeeded"] += 1
                count["images/written"] += len(outputs)
                count["bytes/written"] += written
                self._settle(job_id)
            case JobPartial(job_id=job_id, outputs=outputs, bytes_written=written):
                count["jobs/partial"] += 1
                count["images/written"] += len(outputs)
                count["bytes/written"] += written
                self._settle(job_id)
            case JobFailed(job_id=job_id, error=error):
                count["jobs/failed"] += 1
                count[f"failed/reason/{error.kind}"] += 1
                self._settle(job_id)
            case RequestSent(kind=kind):
                count[f"requests/{kind}"] += 1
                now = self.clock()
                self.first_request = now if self.first_request is None else self.first_request
                self.last_request = now
            case ConcurrencyChanged(limit=limit):
                self.limit = limit
            case RunStopping(reason=reason, message=message):
                self.stop_reason, self.stop_message = reason, message

    def _settle(self, job_id: str) -> None:
        self.in_flight.discard(job_id)
        self.retrying.discard(job_id)
        self._forget_old_ends(now := self.clock())
        self.recent_ends.append(now)

    def _forget_old_ends(self, now: float) -> None:
        while self.recent_ends and self.recent_ends[0] < now - RECENT_SECONDS:
            self.recent_ends.popleft()

    # -- the request budget -----------------------------------------------------------------

    @property
    def requests(self) -> int:
        return sum(self.counters[f"requests/{kind}"] for kind in REQUEST_KINDS)

    def requests_per_edit(self) -> float | None:
        """API requests a finished job has cost so far (failed ones included: they spent)."""
        ended = self.succeeded + self.failed
        return self.requests / ended if ended else None

    def budget_allows(self) -> float | None:
        """Edits a minute ``--rpm`` allows at the requests an edit has cost so far."""
        per_edit = self.requests_per_edit()
        if not self.rpm or not per_edit:
            return None
        return self.rpm / per_edit

    def edits_per_minute(self) -> float | None:
        """Jobs ended over the last minute (or since the start, if shorter), a minute."""
        now = self.clock()
        self._forget_old_ends(now)
        window = min(RECENT_SECONDS, now - self.started)
        if window <= 0:
            return None
        return len(self.recent_ends) / window * 60.0

    def request_summary(self) -> dict[str, Any]:
        """Requests sent by kind, per delivered image, and the share of the budget used."""
        images = self.counters["images/written"]
        sent = {name: self.counters[f"requests/{kind}"] for kind, name in REQUEST_KINDS.items()}
        sent["total"] = sum(sent.values())
        span = (
            self.last_request - self.first_request
            if self.first_request is not None and self.last_request is not None
            else 0.0
        )
        # The span holds one request more than its intervals: N requests paced 60/rpm apart
        # take (N - 1) intervals.
        allowed = self.rpm * span / 60.0 + 1 if self.rpm and sent["total"] else None
        return {
            "sent": sent,
            "per_image": {k: round(v / images, 3) for k, v in sent.items()} if images else None,
            "rpm": self.rpm,
            "span_seconds": round(span, 3),
            "budget_use": round(sent["total"] / allowed, 3) if allowed else None,
        }

    @property
    def succeeded(self) -> int:
        return self.counters["jobs/succeeded"]

    @property
    def failed(self) -> int:
        return self.counters["jobs/failed"]

    @property
    def partial(self) -> int:
        return self.counters["jobs/partial"]

    @property
    def possibly_charged(self) -> int:
        """Feature calls whose answer was lost after sending: maybe charged."""
        return self.counters["feature/possibly_charged"]

    @property
    def skipped(self) -> int:
        return self.counters["jobs/skipped/done"] + self.counters["jobs/skipped/failed"]

    def elapsed(self) -> float:
        return self.clock() - self.started

    def summary(self, **extra: Any) -> dict[str, Any]:
        wall = self.elapsed()
        done = self.succeeded
        return {
            "started_at": self.started_at,
            "finished_at": utc_now(),
            "wall_seconds": round(wall, 3),
            "counts": {
                "succeeded": done,
                "failed": self.failed,
                "partial": self.partial,
                "skipped": self.skipped,
                "interrupted": len(self.in_flight),
            },
            "throughput": {
                "jobs_per_minute": round(done / wall * 60, 2) if wall > 0 else None,
                "images_per_minute": round(self.counters["images/written"] / wall * 60, 2)
                if wall > 0
                else None,
            },
            "requests": self.request_summary(),
            "credits": {
                "estimated": self.counters["credits/estimated"],
                "possibly_charged": self.possibly_charged,
                "possibly_charged_credits": self.counters["credits/possibly_charged"],
                "account_used": self.used_credit,
                "account_limit": self.credit_limit,
            },
            "stopped": {"reason": self.stop_reason, "message": self.stop_message}
            if self.stop_reason
            else None,
            "stats": dict(sorted(self.counters.items())),
            **extra,
        }


def in_flight_text(in_flight: int, limit: int | None) -> str:
    """``25/30``: jobs in flight and the pool's limit (the progress line and the heartbeat)."""
    return f"{in_flight}" if limit is None else f"{in_flight}/{limit}"
