"""Settings of the emulator: the account it simulates and the faults it injects."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

RETRY_AFTER_FORMATS = ("seconds", "http-date", "none")

# Names of the fields that are probabilities; validated together and reused by the CLI.
RATE_FIELDS = (
    "rate_429",
    "rate_5xx",
    "rate_drop",
    "rate_malformed",
    "rate_failed",
    "rate_truncate",
    "rate_expire",
    "rate_forget",
    "rate_slow",
    "rate_huge",
)


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's answers. Rates are probabilities in 0..1."""

    api_key: str = "emulator-key"
    credit_limit: int = 10_000_000
    used_credit: int = 0
    rpm_limit: float | None = None
    retry_after: str = "seconds"
    latency: float = 0.0
    jitter: float = 0.0
    asset_latency: float = 0.0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    rate_failed: float = 0.0
    rate_truncate: float = 0.0
    rate_expire: float = 0.0
    rate_forget: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 30.0
    rate_huge: float = 0.0
    huge_bytes: int = 256 * 1024 * 1024
    foreign_temporary_url: bool = False
    seed: int = 0
    request_log: Path | None = None

    def __post_init__(self) -> None:
        # Fail at construction, not on the first request: a typo in a fault option should be loud.
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.retry_after not in RETRY_AFTER_FORMATS:
            raise ValueError(
                f"retry_after must be one of {', '.join(RETRY_AFTER_FORMATS)}, "
                f"got {self.retry_after!r}"
            )
        if self.rpm_limit is not None and self.rpm_limit <= 0:
            raise ValueError(f"rpm_limit must be positive, got {self.rpm_limit}")
        for name in ("latency", "jitter", "asset_latency", "slow_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.huge_bytes < 0:
            raise ValueError("huge_bytes must not be negative")
        if self.credit_limit < 0 or self.used_credit < 0:
            raise ValueError("credit_limit and used_credit must not be negative")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.request_log is not None and not isinstance(self.request_log, Path):
            self.request_log = Path(self.request_log)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
