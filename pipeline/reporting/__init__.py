"""What a run tells its operator, as listeners of the event bus and files it leaves: counters
and the run summary (``stats``), the progress bar (``progress``), the log with its heartbeat
(``runlog``), ``runs/<stamp>.json`` and ``summary.json`` (``history``), the Prometheus textfile
(``metrics``), the webhook (``notify``), and where every job stands (``status``)."""

from __future__ import annotations

from pipeline.reporting.stats import RunStats
from pipeline.reporting.status import FolderStatus, folder_status, format_status

__all__ = ["FolderStatus", "RunStats", "folder_status", "format_status"]
