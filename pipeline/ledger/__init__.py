"""The append-only JSONL ledger: the run's memory across stops, kills and crashes.

- ``schema``: one frozen record type per status, and the ``Status`` enum;
- ``writer``: ``LedgerWriter``, an event listener appending one line per record (and keeping
  the checkpoint of the state it folds as it writes);
- ``fold``: ``apply``, the one fold from lines to job states (resume, status, report), and the
  two states it folds into (``LedgerState`` compact, ``DetailedLedger`` with every detail);
- ``compact``: the columns ``LedgerState`` keeps its jobs in (about 85 bytes a done job);
- ``checkpoint``: ``ledger.checkpoint``, the folded state beside the ledger;
- ``reader``: ``read_ledger``, the checkpoint and the lines after it;
- ``lock``: ``OutputLock``, the ``flock`` that keeps two runs out of one folder.
"""

from __future__ import annotations

from pipeline.layout import LEDGER_NAME, LOCK_NAME
from pipeline.ledger.checkpoint import CHECKPOINT_SUFFIX, checkpoint_path, write_checkpoint
from pipeline.ledger.compact import JobRef
from pipeline.ledger.fold import (
    Damage,
    DetailedLedger,
    FoldedJob,
    JobState,
    LedgerState,
    PartialJob,
    Pending,
    ResumeState,
    read_records,
)
from pipeline.ledger.lock import OutputLock
from pipeline.ledger.reader import read_ledger
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
    "CHECKPOINT_SUFFIX",
    "LEDGER_NAME",
    "LOCK_NAME",
    "Damage",
    "DetailedLedger",
    "FoldedJob",
    "JobRef",
    "JobState",
    "LedgerState",
    "LedgerWriter",
    "OutputLock",
    "PartialJob",
    "Pending",
    "Record",
    "ResumeState",
    "Status",
    "checkpoint_path",
    "decode_line",
    "parse_record",
    "read_ledger",
    "read_records",
    "record_for",
    "to_dict",
    "to_line",
    "utc_now",
    "write_checkpoint",
]
