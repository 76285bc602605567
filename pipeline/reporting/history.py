"""History, not overwrite (docs/ledger.md#history-and-summaries): `OUT/runs/<started-at>.json` per
run, a folder-wide summary.

Each run that sent anything leaves its own record, so last night's figures survive tonight's run.
`summary.json` describes the folder as a whole (the manifest's jobs by state, credits over every
run) plus the last run that did something: a no-op re-run refreshes the counts but keeps that last
run, instead of overwriting it with zeros. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.durability import atomic_write
from pipeline.layout import RUNS_DIR, SUMMARY_NAME
from pipeline.ledger.schema import utc_now

SCHEMA = "onemin-pipeline/folder-summary/1"
# RunStats counters that mean a request went out (a job starts by uploading or reusing its
# assets and then calls the feature; every attempt passes through one of these)
SENDING_COUNTERS = ("jobs/started", "upload/count", "feature/succeeded", "retry/count")


def sent_anything(run_summary: Mapping[str, Any]) -> bool:
    """Whether a run (a `RunStats.summary()`) sent any call or upload at all."""
    stats = run_summary.get("stats") or {}
    return any(stats.get(name, 0) for name in SENDING_COUNTERS)


def run_stamp(started_at: str | None) -> str:
    """`2026-12-01T02:15:03.123Z` -> `20261201T021503Z`: sortable, safe in any file system."""
    moment = None
    if started_at:
        try:
            moment = datetime.fromisoformat(started_at)
        except ValueError:
            moment = None
    if moment is None:
        moment = datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_run_record(out_dir: Path, run_summary: Mapping[str, Any]) -> Path:
    """Write `OUT/runs/<stamp>.json` (`<stamp>-2.json`... if taken); returns its path."""
    runs = Path(out_dir) / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    stamp = run_stamp(run_summary.get("started_at"))
    temp = runs / f".{stamp}.{os.getpid()}.tmp"
    temp.write_bytes(_dumps(run_summary))
    try:
        return _claim(temp, runs, stamp)
    finally:
        temp.unlink(missing_ok=True)


def _claim(temp: Path, runs: Path, stamp: str) -> Path:
    """Give `temp` the first free name; a hard link never replaces a record already there."""
    for n in range(1, 10_000):
        target = runs / (f"{stamp}.json" if n == 1 else f"{stamp}-{n}.json")
        try:
            os.link(temp, target)
            return target
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some mounts): the output lock keeps us alone
            if target.exists():
                continue
            os.replace(temp, target)
            return target
    raise FileExistsError(f"too many run records named {stamp} in {runs}")


def folder_summary(
    *,
    manifest_name: str,
    manifest_total: int,
    states: Mapping[str, int],
    credits_all_runs: float,
    last_run: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
    possibly_charged: int = 0,
) -> dict[str, Any]:
    """The folder as a whole; `last_run=None` (a run that sent nothing) keeps the previous one."""
    earlier = _previous_last_run(previous)
    kept = dict(last_run) if last_run is not None else earlier
    last_success = (previous or {}).get("last_success_at")
    if kept is not None and kept.get("exit_code") == 0:
        last_success = kept.get("finished_at") or last_success
    return {
        "schema": SCHEMA,
        "manifest": manifest_name,
        "updated_at": utc_now(),
        "jobs": {"total": manifest_total, **{state: int(n) for state, n in states.items()}},
        "credits_all_runs": credits_all_runs,
        "possibly_charged": possibly_charged,  # feature calls whose answer was lost, all runs
        "last_success_at": last_success,
        "last_run": kept,
    }


def _previous_last_run(previous: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The last run of an earlier summary; an older version's summary *was* a run summary."""
    if not previous:
        return None
    if previous.get("schema") == SCHEMA:
        last = previous.get("last_run")
        return dict(last) if isinstance(last, Mapping) else None
    return dict(previous) if "started_at" in previous else None


def write_folder_summary(out_dir: Path, summary: Mapping[str, Any]) -> Path:
    path = Path(out_dir) / SUMMARY_NAME
    atomic_write(path, _dumps(summary))
    return path


def read_folder_summary(out_dir: Path) -> dict[str, Any] | None:
    """`summary.json`, or None when missing or unreadable (the next write replaces it)."""
    try:
        summary = orjson.loads((Path(out_dir) / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def list_run_records(out_dir: Path) -> list[Path]:
    """Run records oldest first (the stamps sort as time does)."""
    runs = Path(out_dir) / RUNS_DIR
    if not runs.is_dir():
        return []
    return sorted(runs.glob("*.json"), key=lambda p: _record_order(p.stem))


def _record_order(stem: str) -> tuple[str, int]:
    stamp, _, n = stem.partition("-")
    return stamp, int(n) if n.isdigit() else 1


def _dumps(value: Mapping[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
