"""What the emulator remembers: the stored assets, the charges and the counters tests inspect."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import charges as money
from .charges import Charge, ChargeLog
from .imaging import SourceImage

ASSET_PREFIX = "development/images"


@dataclass
class StoredAsset:
    path: str
    name: str
    data: bytes
    mime: str
    width: int
    height: int
    digest: str
    uuid: str

    @property
    def source(self) -> SourceImage:
        return SourceImage(self.digest, self.data)


@dataclass
class EmulatorState:
    """Everything the emulator remembers; tests inspect it directly."""

    credit_limit: int
    used_credit: int
    # What remains of the team's balance (None: no such limit); `credit_limit` is the member's.
    team_balance: int | None = None
    assets: dict[str, StoredAsset] = field(default_factory=dict)
    # Credits of calls being rendered: counted against the limit so that concurrent calls
    # cannot together overspend it.
    reserved_credit: int = 0
    feature_calls: int = 0
    uploads: int = 0
    downloads: int = 0
    polls: int = 0
    successes: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)
    # Every path ever handed out, forgotten assets' too: a client may still hold an old one.
    issued_paths: set[str] = field(default_factory=set)
    charge_log: ChargeLog = field(default_factory=ChargeLog)
    uploads_in_flight: int = 0

    @property
    def charges(self) -> list[Charge]:
        """Every charge, in order: the account's money (count money here, not from answers)."""
        return self.charge_log.entries

    @property
    def credits_charged(self) -> int:
        return money.credits_charged(self.charges)

    @property
    def edits_charged(self) -> int:
        return money.edits_charged(self.charges)

    @property
    def images_charged(self) -> int:
        return money.images_charged(self.charges)

    def charges_by_prompt(self) -> dict[str, list[Charge]]:
        return money.charges_by_prompt(self.charges)

    def lost_charges(self) -> list[Charge]:
        return money.lost_charges(self.charges)

    def can_afford(self, cost: int) -> bool:
        """Whether the member's cap and the team's balance both leave room for `cost`."""
        if self.used_credit + self.reserved_credit + cost > self.credit_limit:
            return False
        return self.team_balance is None or self.reserved_credit + cost <= self.team_balance

    def charge(self, charge: Charge) -> int:
        """Book a charge; returns the member's used credit as it stood before it."""
        before = self.used_credit
        self.used_credit += charge.cost
        if self.team_balance is not None:
            self.team_balance -= charge.cost
        self.charge_log.add(charge)
        return before

    @property
    def counters(self) -> dict[str, int]:
        return {
            "feature_calls": self.feature_calls,
            "uploads": self.uploads,
            "downloads": self.downloads,
            "polls": self.polls,
            "successes": self.successes,
            **{f"fault_{name}": count for name, count in self.faults.items()},
        }

    def store(
        self, name: str, data: bytes, digest: str, mime: str, width: int, height: int
    ) -> StoredAsset:
        """Keep an upload or a rendered result under a new, never reused path."""
        asset = StoredAsset(
            path=self._new_path(name),
            name=name,
            data=data,
            mime=mime,
            width=width,
            height=height,
            digest=digest,
            uuid=str(uuid.uuid4()),
        )
        self.assets[asset.path] = asset
        return asset

    def _new_path(self, name: str) -> str:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y_%m_%d_%H_%M_%S_") + f"{now.microsecond // 1000:03d}"
        path = f"{ASSET_PREFIX}/{stamp}_{name}"
        counter = 0
        while path in self.issued_paths:
            counter += 1
            path = f"{ASSET_PREFIX}/{stamp}_{counter}_{name}"
        self.issued_paths.add(path)
        return path
