"""Review and delivery: the run's page (static or served), decisions, exports (SPEC 6)."""

from __future__ import annotations

from pipeline.review.decisions import (
    Decision,
    read_decisions,
    record_decisions,
    rejected_for,
    standing,
)
from pipeline.review.page import REPORT_NAME, build_payload, write_report
from pipeline.review.thumbs import ThumbnailPrefetcher

__all__ = [
    "REPORT_NAME",
    "Decision",
    "ThumbnailPrefetcher",
    "build_payload",
    "read_decisions",
    "record_decisions",
    "rejected_for",
    "standing",
    "write_report",
]
