"""Run statistics: Scrapy-style counters with slash keys, and ``OUT/summary.json``.

A listener on the event bus, like the ledger: it counts what the scheduler reports and never
asks it anything.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.events import (
    AnswerLostAfterSending,
    AssetsUploaded,
    Event,
    FeatureSubmitted,
    JobFailed,
    JobPartial,
    JobRetrying,
    JobSkipped,
    JobsSkipped,
    JobStarted,
    JobSucceeded,
    RunStopping,
)
from pipeline.ledger.schema import utc_now


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

    def __post_init__(self) -> None:
        self.started = self.clock()

    def __call__(self, event: Event) -> None:
        count = self.counters
        match event:
            case JobStarted(planned=planned):
                count["jobs/started"] += 1
                self.in_flight.add(planned.job.id)
            case JobSkipped(reason=reason):
                count[f"jobs/skipped/{reason}"] += 1
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
            case RunStopping(reason=reason, message=message):
                self.stop_reason, self.stop_message = reason, message

    def _settle(self, job_id: str) -> None:
        self.in_flight.discard(job_id)
        self.retrying.discard(job_id)

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
