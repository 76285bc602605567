"""Compatibility shim: the review page moved to ``pipeline.review`` (remove once cli.py uses it)."""

from __future__ import annotations

from pipeline.review.page import REPORT_NAME, build_report, write_report
from pipeline.review.thumbs import ThumbnailPrefetcher
from pipeline.review.view import read_ledger_view

__all__ = ["REPORT_NAME", "ThumbnailPrefetcher", "build_report", "read_ledger_view", "write_report"]
