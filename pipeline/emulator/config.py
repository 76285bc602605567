"""Settings of the emulator: the account it simulates, the regime it serves and its faults.

The settings a profile decides (see profiles.py) take their defaults from `DEFAULT_PROFILE`;
`EmulatorConfig.live(...)`, `.generous(...)` and `.realistic(...)` name one explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .profiles import DEFAULT_PROFILE, PROFILES

RETRY_AFTER_FORMATS = ("seconds", "http-date", "none")
# The word a failed record carries: the seeds say FAILED, the real API also answers FAILURE;
# "mixed" alternates them (seeded), so a client must accept both.
FAILURE_WORDS = ("FAILED", "FAILURE", "mixed")
# Where error answers put their message (docs/api.md#error-bodies): always `message`, or varied
# among `message`, `error.message` and `error` (a string) as the real API's answers are. "live":
# `errorCode`, `message`, `details` (a JSON string) and `context`, as the live API answers.
ERROR_BODIES = ("varied", "message", "live")
# "seed": SUCCESS, PROCESSING and the failure word; "live": the words live records were seen with.
STATUS_WORDS = ("seed", "live")
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
    "rate_lost_after_charge",
    "rate_busy_400",
)
# Durations in seconds that must not be negative.
_SECONDS_FIELDS = ("latency", "jitter", "asset_latency", "slow_seconds", "edit_seconds")

_DEFAULT = PROFILES[DEFAULT_PROFILE]


@dataclass
class Settings:
    """Everything that shapes the emulator's answers. Rates are probabilities in 0..1.

    Use `EmulatorConfig`, which also accepts the older names of the edit duration.
    """

    api_key: str = "emulator-key"
    credit_limit: int = 10_000_000
    used_credit: int = 0
    # The team's balance, which the member's `creditLimit` does not show; None: no such limit.
    team_balance: int | None = None
    rpm_limit: float | None = _DEFAULT.rpm_limit
    window_limit: int | None = None
    window_seconds: float = 60.0
    bad_key_status: int = 401
    retry_after: str = "seconds"
    latency: float = 0.0
    jitter: float = 0.0
    asset_latency: float = 0.0
    # The origin's render time, for sync calls (held open that long) and records alike.
    edit_seconds: float = _DEFAULT.edit_seconds
    # +- fraction of edit_seconds, seeded (0.5: from half to one and a half times).
    edit_jitter: float = _DEFAULT.edit_jitter
    # Seconds the CDN waits for a sync answer before its HTML 524; None: no CDN.
    gateway_timeout: float | None = _DEFAULT.gateway_timeout
    honour_async: bool = _DEFAULT.honour_async
    public_assets: bool = _DEFAULT.public_assets
    credit_lag: bool = _DEFAULT.credit_lag
    upload_concurrency: int | None = _DEFAULT.upload_concurrency
    status_words: str = _DEFAULT.status_words
    # A word nobody documented, answered by every unfinished record instead of its own.
    unknown_status_word: str | None = None
    require_all_params: bool = _DEFAULT.require_all_params
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
    rate_processing_failed: float = 0.0
    rate_403_html: float = 0.0
    rate_lost_after_charge: float = 0.0
    rate_busy_400: float = 0.0
    failure_status: str = "mixed"
    error_bodies: str = _DEFAULT.error_bodies
    drift: int = 4
    seed: int = 0
    request_log: Path | None = None
    charge_log: Path | None = None

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
        self._check_regime()
        for name in _SECONDS_FIELDS:
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
        for name in ("request_log", "charge_log"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

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
        if self.status_words not in STATUS_WORDS:
            raise ValueError(
                f"status_words must be one of {', '.join(STATUS_WORDS)}, got {self.status_words!r}"
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

    def _check_regime(self) -> None:
        if not 0.0 <= self.edit_jitter <= 1.0:
            raise ValueError(f"edit_jitter is a fraction from 0 to 1, got {self.edit_jitter}")
        if self.gateway_timeout is not None and self.gateway_timeout <= 0:
            raise ValueError(f"gateway_timeout must be positive, got {self.gateway_timeout}")
        if self.upload_concurrency is not None and self.upload_concurrency < 1:
            raise ValueError(
                f"upload_concurrency must be at least 1, got {self.upload_concurrency}"
            )
        if self.team_balance is not None and self.team_balance < 0:
            raise ValueError(f"team_balance must not be negative, got {self.team_balance}")
        if self.unknown_status_word is not None and not self.unknown_status_word.strip():
            raise ValueError("unknown_status_word must not be empty")

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


class EmulatorConfig(Settings):
    """The emulator's settings; also takes the older names of the edit duration.

    `processing_seconds` is `edit_seconds` and `processing_jitter` the same spread in seconds
    (edit_jitter is a fraction): both read and write through, at construction and later.
    """

    def __init__(
        self,
        *,
        processing_seconds: float | None = None,
        processing_jitter: float | None = None,
        **values: Any,
    ) -> None:
        super().__init__(**values)
        if processing_seconds is not None:
            self.processing_seconds = processing_seconds
        if processing_jitter is not None:
            self.processing_jitter = processing_jitter
        self._check_regime()

    @property
    def processing_seconds(self) -> float:
        return self.edit_seconds

    @processing_seconds.setter
    def processing_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("processing_seconds must not be negative")
        self.edit_seconds = seconds

    @property
    def processing_jitter(self) -> float:
        # Rounded so that a spread given in seconds reads back as given.
        return round(self.edit_jitter * self.edit_seconds, 9)

    @processing_jitter.setter
    def processing_jitter(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("processing_jitter must not be negative")
        if seconds > self.edit_seconds:
            raise ValueError(
                f"processing_jitter ({seconds} s) must not exceed processing_seconds "
                f"({self.edit_seconds} s); edit_jitter gives the spread as a fraction"
            )
        self.edit_jitter = seconds / self.edit_seconds if seconds else 0.0

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> EmulatorConfig:
        """The named profile's settings, then `overrides` (any field, or the older names)."""
        if name not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {name!r}")
        values = PROFILES[name].values()
        if "rpm_limit" in overrides or "window_limit" in overrides:
            values.pop("rpm_limit")  # a window given explicitly replaces the profile's
        return cls(**{**values, **overrides})

    @classmethod
    def generous(cls, **overrides: Any) -> EmulatorConfig:
        return cls.profile("generous", **overrides)

    @classmethod
    def live(cls, **overrides: Any) -> EmulatorConfig:
        return cls.profile("live", **overrides)

    @classmethod
    def realistic(cls, **overrides: Any) -> EmulatorConfig:
        return cls.profile("realistic", **overrides)
