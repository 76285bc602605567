"""Review and delivery: the run's page (static or served), decisions, exports and channel files."""

from __future__ import annotations

from pipeline.layout import REPORT_NAME
from pipeline.ledger.decisions import (
    Decision,
    read_decisions,
    record_decisions,
    rejected_for,
    standing,
)
from pipeline.review.channels import ChannelOptions, Profile, export_channel
from pipeline.review.page import build_payload, write_report
from pipeline.review.thumbs import ThumbnailPrefetcher

__all__ = [
    "REPORT_NAME",
    "ChannelOptions",
    "Decision",
    "Profile",
    "ThumbnailPrefetcher",
    "build_payload",
    "export_channel",
    "read_decisions",
    "record_decisions",
    "rejected_for",
    "standing",
    "write_report",
]
