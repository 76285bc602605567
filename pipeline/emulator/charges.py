"""The account's money, per edit: what the origin charged and whether the client was told.

Answers are not the truth about money: a sync call the CDN gave up on (HTML 524), or an answer
lost after the charge, was paid for all the same, and the client never learned its uuid. Tests
and benchmarks count money from this log, never from answers. `--charge-log PATH` writes it as
JSONL too, for an emulator running as its own process (`read_charge_log` reads it back).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

# How a charged edit was answered: "sync" (the finished record reached the client), "async"
# (an unfinished record with its uuid reached the client), "lost" (the answer never reached it:
# the CDN's 524, an answer lost after the charge, or a client that had hung up).
ANSWERED = ("sync", "async", "lost")
# A background render that broke gives its credits back: a charge of minus the cost.
REFUND = "refund"


@dataclass(frozen=True)
class Charge:
    """One charge of the account (or the refund of one)."""

    uuid: str
    feature_type: str
    cost: int
    n: int
    prompt: str
    image_url: str
    at: float  # the server's clock (what a test moves)
    ts: str  # wall time, ISO-8601 UTC
    answered: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Charge:
        return cls(**values)


class ChargeLog:
    """Every charge in order; written through to a JSONL file when one is open."""

    def __init__(self) -> None:
        self.entries: list[Charge] = []
        self._file: IO[str] | None = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, charge: Charge) -> None:
        self.entries.append(charge)
        if self._file is not None:
            self._file.write(charge.to_json() + "\n")
            self._file.flush()


def read_charge_log(path: Path) -> list[Charge]:
    """The charges a `--charge-log` file holds (a torn last line is ignored)."""
    charges = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            charges.append(Charge.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return charges


# --------------------------------------------------------------------------- sums for tests


def credits_charged(charges: Iterable[Charge]) -> int:
    """Credits the account paid (refunds subtracted)."""
    return sum(charge.cost for charge in charges)


def edits_charged(charges: Iterable[Charge]) -> int:
    """Edits the account paid for (a refunded edit is not one)."""
    counted = Counter(charge.answered == REFUND for charge in charges)
    return counted[False] - counted[True]


def images_charged(charges: Iterable[Charge]) -> int:
    """Images the account paid for: the `n` of every paid edit."""
    return sum(-c.n if c.answered == REFUND else c.n for c in charges)


def charges_by_prompt(charges: Iterable[Charge]) -> dict[str, list[Charge]]:
    """The paid edits of each prompt, in order (refunded edits left out)."""
    charges = list(charges)
    refunded = {charge.uuid for charge in charges if charge.answered == REFUND}
    grouped: dict[str, list[Charge]] = {}
    for charge in charges:
        if charge.answered != REFUND and charge.uuid not in refunded:
            grouped.setdefault(charge.prompt, []).append(charge)
    return grouped


def lost_charges(charges: Iterable[Charge]) -> list[Charge]:
    """Edits paid for whose answer never reached the client."""
    return [charge for charge in charges if charge.answered == "lost"]
