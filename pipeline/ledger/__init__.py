"""The append-only JSONL ledger: the run's memory across stops, kills and crashes.

- ``schema``: one frozen record type per status, and the ``Status`` enum;
- ``writer``: ``LedgerWriter``, an event listener appending one line per record;
- ``fold``: ``read_ledger``, the one fold from lines to job states (resume, status, report);
- ``lock``: ``OutputLock``, the ``flock`` that keeps two runs out of one folder.
"""

from __future__ import annotations

from pipeline.layout import LEDGER_NAME, LOCK_NAME
from pipeline.ledger.fold import (
    Damage,
    JobState,
    LedgerState,
    PartialJob,
    Pending,
    ResumeState,
    read_ledger,
    read_records,
)
from pipeline.ledger.lock import OutputLock
from pipeline.ledger.schema import (
    Record,
    Status,
    decode_line,
    parse_record,
    to_dict,
    to_line,
    utc_now,
)
from pipeline.ledger.writer import LedgerWriter, record_for

__all__ = [
    "LEDGER_NAME",
    "LOCK_NAME",
    "Damage",
    "JobState",
    "LedgerState",
    "LedgerWriter",
    "OutputLock",
    "PartialJob",
    "Pending",
    "Record",
    "ResumeState",
    "Status",
    "decode_line",
    "parse_record",
    "read_ledger",
    "read_records",
    "record_for",
    "to_dict",
    "to_line",
    "utc_now",
]
