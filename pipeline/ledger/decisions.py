"""``OUT/reviews.jsonl``: a person's decisions (approve, reject, pick a variant), appended,
never rewritten.

Each line is ``{ts, job_id, key, decision, note}``, and ``index`` on a pick. A line is written
with one ``write()`` on a file opened with ``O_APPEND``, so lines from the review page, the CLI
and a run in progress never interleave and nothing needs the run's lock. The latest line per job
wins; a decision is about the content ``key`` it was made for, so a job whose content changed
since is no longer rejected.

A pick (``picked``, with the chosen image's ``index``) approves the job and says which of its
images is *the* image: it reads as an approval carrying ``pick``. A later approval of the same
content keeps the pick (approving a product's jobs must not forget the variant chosen for one of
them); a rejection drops it, and a new pick replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import orjson

from pipeline.layout import REVIEWS_NAME
from pipeline.ledger.schema import utc_now

DECISIONS = ("approved", "rejected")
APPROVED, REJECTED = DECISIONS
PICKED = "picked"  # on a line only: it reads back as an approval with its ``pick``


@dataclass(frozen=True, slots=True)
class Decision:
    job_id: str
    key: str | None  # the job's content key when it was reviewed
    decision: str  # "approved" | "rejected"
    note: str
    ts: str
    pick: int | None = None  # the chosen image's index (a pick): the job's one image to deliver

    def applies_to(self, key: str | None) -> bool:
        """True when this decision was made for the content ``key`` (None: unknown, so yes)."""
        return self.key is None or key is None or self.key == key


def record_decisions(
    out_dir: Path,
    decisions: Iterable[tuple[str, str | None, str]],
    note: str = "",
    ts: str | None = None,
) -> int:
    """Append one line per ``(job_id, key, decision)``; returns how many were written."""
    stamp = ts or utc_now()
    lines = []
    for job_id, key, decision in decisions:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}: {decision!r}")
        record = {"ts": stamp, "job_id": job_id, "key": key, "decision": decision, "note": note}
        lines.append(orjson.dumps(record) + b"\n")
    return _append(out_dir, lines)


def record_picks(
    out_dir: Path,
    picks: Iterable[tuple[str, str | None, int]],
    note: str = "",
    ts: str | None = None,
) -> int:
    """Append one ``picked`` line per ``(job_id, key, index)``; returns how many were written."""
    stamp = ts or utc_now()
    lines = []
    for job_id, key, index in picks:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"a pick's index is an image's index (0, 1, ...): {index!r}")
        record = {"ts": stamp, "job_id": job_id, "key": key, "decision": PICKED}
        lines.append(orjson.dumps({**record, "index": index, "note": note}) + b"\n")
    return _append(out_dir, lines)


def _append(out_dir: Path, lines: list[bytes]) -> int:
    if not lines:
        return 0
    fd = os.open(out_dir / REVIEWS_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for line in lines:
            # One write per line: O_APPEND makes each land whole at the end, whoever else writes.
            os.write(fd, line)
    finally:
        os.close(fd)
    return len(lines)


def read_decisions(out_dir: Path) -> dict[str, Decision]:
    """The latest decision per job id (a pick reads as an approval with its ``pick``, kept by a
    later approval of the same content); torn or foreign lines are skipped."""
    decisions: dict[str, Decision] = {}
    try:
        raw = (out_dir / REVIEWS_NAME).read_bytes()
    except FileNotFoundError:
        return decisions
    for line in raw.splitlines():
        decision = _parse(line)
        if decision is None:
            continue
        earlier = decisions.get(decision.job_id)
        if (
            decision.decision == APPROVED
            and decision.pick is None
            and earlier is not None
            and earlier.pick is not None
            and earlier.key == decision.key
        ):
            decision = replace(decision, pick=earlier.pick)
        decisions[decision.job_id] = decision
    return decisions


def _parse(line: bytes) -> Decision | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    job_id, key, decision = record.get("job_id"), record.get("key"), record.get("decision")
    if not isinstance(job_id, str) or decision not in (*DECISIONS, PICKED):
        return None
    pick = None
    if decision == PICKED:
        pick = record.get("index")
        if isinstance(pick, bool) or not isinstance(pick, int) or pick < 0:
            return None  # a pick that names no image is no decision
        decision = APPROVED
    note = record.get("note")
    return Decision(
        job_id=job_id,
        key=key if isinstance(key, str) else None,
        decision=str(decision),
        note=note if isinstance(note, str) else "",
        ts=str(record.get("ts") or ""),
        pick=pick,
    )


def standing(decision: Decision | None, key: str | None, updated: str = "") -> Decision | None:
    """The decision that still holds for a job's current outputs, or None. The one rule for the
    plan's redo, the review page and ``export`` (docs/ledger.md#reviews-file):

    - it was made for the job's current content ``key`` (a changed job is new content);
    - a rejection holds only until the job's ledger moves on after it (``updated``, the time of
      its latest line): the redo it asked for has run, and its new images await a new review.
      An approval holds for its content: nothing re-buys an approved job's images.
    """
    if decision is None or not decision.applies_to(key):
        return None
    if decision.decision == "rejected" and not _later(decision.ts, updated):
        return None
    return decision


def rejected_for(
    decisions: dict[str, Decision], job_id: str, key: str | None, updated: str = ""
) -> bool:
    """True when the job's latest decision is a rejection that still holds (``standing``)."""
    decision = standing(decisions.get(job_id), key, updated)
    return decision is not None and decision.decision == "rejected"


def _later(first: str, than: str) -> bool:
    if not than:
        return True  # the job has no line since: nothing consumed the decision
    try:
        return datetime.fromisoformat(first) > datetime.fromisoformat(than)
    except (TypeError, ValueError):  # a timestamp is missing or odd: trust the decision
        return True
