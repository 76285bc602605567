"""Settings of the emulator: the account it simulates and the faults it injects."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

RETRY_AFTER_FORMATS = ("seconds", "http-date", "none")
# The word a failed record carries: the seeds say FAILED, the real API also answers FAILURE;
# "mixed" alternates them (seeded), so a client must accept both.
FAILURE_WORDS = ("FAILED", "FAILURE", "mixed")
# Where error answers put their message (SPEC 1a): always `message`, or varied among
# `message`, `error.message` and `error` (a string) as the real API's answers are.
ERROR_BODIES = ("varied", "message")
BAD_KEY_STATUSES = (401, 403)

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
    "rate_processing",
    "rate_processing_failed",
    "rate_403_html",
)


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's answers. Rates are probabilities in 0..1."""

    api_key: str = "emulator-key"
    credit_limit: int = 10_000_000
    used_credit: int = 0
    rpm_limit: float | None = None
    window_limit: int | None = None
    window_seconds: float = 60.0
    bad_key_status: int = 401
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
    rate_processing: float = 0.0
    processing_seconds: float = 5.0
    processing_jitter: float = 0.0
    rate_processing_failed: float = 0.0
    rate_403_html: float = 0.0
    failure_status: str = "mixed"
    error_bodies: str = "varied"
    drift: int = 4
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
        self._check_choices()
        self._check_window()
        for name in (
            "latency",
            "jitter",
            "asset_latency",
            "slow_seconds",
            "processing_seconds",
            "processing_jitter",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.huge_bytes < 0:
            raise ValueError("huge_bytes must not be negative")
        if not 0 <= self.drift <= 64:
            raise ValueError(f"drift must be from 0 to 64 levels, got {self.drift}")
        if self.credit_limit < 0 or self.used_credit < 0:
            raise ValueError("credit_limit and used_credit must not be negative")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.request_log is not None and not isinstance(self.request_log, Path):
            self.request_log = Path(self.request_log)

    def _check_choices(self) -> None:
        if self.failure_status not in FAILURE_WORDS:
            raise ValueError(
                f"failure_status must be one of {', '.join(FAILURE_WORDS)}, "
                f"got {self.failure_status!r}"
            )
        if self.error_bodies not in ERROR_BODIES:
            raise ValueError(
                f"error_bodies must be one of {', '.join(ERROR_BODIES)}, got {self.error_bodies!r}"
            )
        if self.bad_key_status not in BAD_KEY_STATUSES:
            raise ValueError(f"bad_key_status must be 401 or 403, got {self.bad_key_status}")

    def _check_window(self) -> None:
        if self.rpm_limit is not None and self.rpm_limit <= 0:
            raise ValueError(f"rpm_limit must be positive, got {self.rpm_limit}")
        if self.window_limit is not None and self.window_limit <= 0:
            raise ValueError(f"window_limit must be positive, got {self.window_limit}")
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds}")
        if self.rpm_limit is not None and self.window_limit is not None:
            raise ValueError("give rpm_limit (per 60 s) or window_limit (per window_seconds)")
        if self.rpm_limit is not None and self.window_seconds != 60.0:
            raise ValueError(
                "rpm_limit counts per 60 s; use window_limit with window_seconds instead"
            )

    @property
    def window(self) -> tuple[float, float] | None:
        """(requests, seconds) of the one rolling window over every API-host request, if any."""
        if self.window_limit is not None:
            return float(self.window_limit), self.window_seconds
        if self.rpm_limit is not None:
            return self.rpm_limit, 60.0
        return None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
