"""``pipeline status OUT``: where every job stands, from the ledger alone."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ledger import LedgerState, iter_records

FAILED_SHOWN = 50


@dataclass
class RunStatus:
    states: Counter[str] = field(default_factory=Counter)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> its failed line
    ledger: LedgerState = field(default_factory=LedgerState)


def read_status(ledger_path: Path) -> RunStatus:
    status = RunStatus()
    latest: dict[str, str] = {}
    for record in iter_records(ledger_path, status.ledger):
        if record["status"] == "uploaded":
            continue  # says nothing about where the job stands
        job_id = record["job_id"]
        latest[job_id] = record["status"]
        if record["status"] == "failed":
            status.failed[job_id] = record
        else:
            status.failed.pop(job_id, None)
    status.states.update(latest.values())
    return status


def format_status(status: RunStatus) -> str:
    total = sum(status.states.values())
    lines = [f"{total} jobs in the ledger"]
    for state in ("succeeded", "failed", "submitted", "retrying", "uploaded", "started"):
        if status.states[state]:
            lines.append(f"  {state:<10} {status.states[state]}")
    unfinished = total - status.states["succeeded"] - status.states["failed"]
    if unfinished:
        lines.append(f"  ({unfinished} unfinished: a re-run of the same command resumes them)")
    if status.ledger.corrupt_lines:
        numbers = ", ".join(map(str, status.ledger.corrupt_lines[:10]))
        lines.append(f"unreadable ledger lines skipped: {numbers}")
    if status.failed:
        lines.append("")
        lines.append("failed jobs (run again with --retry-failed):")
        for job_id, record in list(status.failed.items())[:FAILED_SHOWN]:
            error = record.get("error") or {}
            http = f" HTTP {error['http_status']}" if error.get("http_status") else ""
            lines.append(
                f"  {job_id}: {error.get('kind', '?')}{http}: {error.get('message', '')} "
                f"(attempts: {record.get('attempts', '?')})"
            )
        if len(status.failed) > FAILED_SHOWN:
            lines.append(f"  ... and {len(status.failed) - FAILED_SHOWN} more")
    return "\n".join(lines)
