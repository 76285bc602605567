"""Every default as a named constant, grouped in typed settings.

Layers, later wins: built-in defaults < ``--config`` file (YAML, see ``configs/``) < environment
(``ONEMIN_API_BASE``, ``ONEMIN_ASSET_BASE``) < command-line flags.
The API key is deliberately not part of Settings: it is read from ``ONEMIN_API_KEY`` by the CLI
and handed straight to the client, so no settings dump, repr or summary can ever contain it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from pipeline.errors import ConfigError

API_BASE = "https://api.1min.ai"
ASSET_BASE = "https://asset.1min.ai"
KEY_ENV = "ONEMIN_API_KEY"
API_BASE_ENV = "ONEMIN_API_BASE"
ASSET_BASE_ENV = "ONEMIN_ASSET_BASE"

# Jobs in flight: "auto" keeps as many as fill the request budget at the edit time observed
# (scheduler.inflight), up to MAX_CONCURRENCY; a number fixes it.
CONCURRENCY_AUTO = "auto"
CONCURRENCY: int | str = CONCURRENCY_AUTO
MAX_CONCURRENCY = 256
RPM = 150.0  # requests to the API host a minute; the documented account limit is 180
MAX_ATTEMPTS = 5
BACKOFF_BASE = 1.0  # seconds before the first retry
BACKOFF_MAX = 60.0  # no single wait is longer, except an announced Retry-After
RETRY_AFTER_MAX = 900.0  # a Retry-After beyond this is treated as this (a misbehaving server)
JITTER = 0.5  # each wait is scaled by a random factor in [1 - JITTER, 1]

# Circuit breaker (docs/ledger.md#circuit-breaker): this many jobs in a row out of retries on
# transient errors alone means the host is down, not the jobs wrong: stop the run, keep them
# pending.
BREAKER_JOBS = 5

# The live API refuses more uploads than this in flight at once (a reported limit).
UPLOADS_IN_FLIGHT = 5

CONNECT_TIMEOUT = 15.0
UPLOAD_TIMEOUT = 120.0
FEATURE_TIMEOUT = 300.0  # generation is slow; a feature call may legitimately take minutes
DOWNLOAD_TIMEOUT = 120.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # a result bigger than this is a broken or hostile server
MAX_JSON_BYTES = 4 * 1024 * 1024
POLL_TIMEOUT = 60.0
PROCESSING_TIMEOUT = 900.0  # a record unfinished this long after submission fails the job
POLL_INITIAL = 2.0  # first wait before polling a processing record
POLL_MAX = 10.0  # polls back off (x1.5 each) up to this
POLL_GROWTH = 1.5
POLL_JITTER = 0.2  # each poll wait is scaled by a random factor in [1 - POLL_JITTER, 1]
# How long the CDN in front of the API holds a sync call before it answers 524 (Cloudflare's
# 100 s); submit "auto" sends sync calls only while edits finish well inside it.
GATEWAY_TIMEOUT = 100.0

# "auto": a run starts async and may send sync calls while edits are fast (docs/api.md#submit-modes)
SubmitMode = Literal["auto", "sync", "async"]
SUBMIT_MODES: tuple[str, ...] = ("auto", "sync", "async")
SUBMIT: SubmitMode = "auto"

# Adaptive slow-down (AIMD) on 429s that carry no Retry-After.
SLOWDOWN_FACTOR = 0.5  # multiply the rate by this on a hint-less 429
RECOVERY_STEP = 0.05  # add this share of the configured rate back per success
MIN_RPM = 1.0
# When 429s come together the account's limit is reached (throttle.py states the rule).
CORRELATED_429S = 3
SHARE_WINDOW = 20
SHARE_LIMIT = 0.10


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL with a host (one line), or None. The one check of the
    base URLs, ``--notify`` and ``doctor``: ``127.0.0.1:8765`` without a scheme is refused."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL; write it as http://HOST:PORT or https://HOST"
    return None


@dataclass(frozen=True)
class Endpoints:
    api_base: str = API_BASE
    asset_base: str = ASSET_BASE

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_base", self.api_base.rstrip("/"))
        object.__setattr__(self, "asset_base", self.asset_base.rstrip("/"))


@dataclass(frozen=True)
class RateLimit:
    rpm: float = RPM  # API-host requests (uploads, feature calls, polls) per minute, evenly
    # Jobs in flight (sync: feature calls open at once; async: records outstanding): "auto" or
    # a number.
    concurrency: int | str = CONCURRENCY
    max_concurrency: int = MAX_CONCURRENCY  # the ceiling of "auto"
    slowdown_factor: float = SLOWDOWN_FACTOR
    recovery_step: float = RECOVERY_STEP
    min_rpm: float = MIN_RPM
    correlated_429s: int = CORRELATED_429S  # 429s in force at once: the account's limit
    share_window: int = SHARE_WINDOW  # recent answers the share of 429s is taken over
    share_limit: float = SHARE_LIMIT  # more than this share of 429s: the limit is reached

    @property
    def auto(self) -> bool:
        """Whether jobs in flight follow the budget (``--concurrency auto``)."""
        return self.concurrency == CONCURRENCY_AUTO

    @property
    def ceiling(self) -> int:
        """The most jobs ever in flight: the fixed number, or ``max_concurrency`` under auto."""
        return self.max_concurrency if self.auto else int(self.concurrency)


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = MAX_ATTEMPTS
    backoff_base: float = BACKOFF_BASE
    backoff_max: float = BACKOFF_MAX
    retry_after_max: float = RETRY_AFTER_MAX
    jitter: float = JITTER
    breaker_jobs: int = BREAKER_JOBS  # 0 disables the circuit breaker


@dataclass(frozen=True)
class Timeouts:
    connect: float = CONNECT_TIMEOUT
    upload: float = UPLOAD_TIMEOUT
    feature: float = FEATURE_TIMEOUT
    download: float = DOWNLOAD_TIMEOUT
    max_download_bytes: int = MAX_DOWNLOAD_BYTES
    max_json_bytes: int = MAX_JSON_BYTES
    poll: float = POLL_TIMEOUT  # one GET of a record's state
    processing: float = PROCESSING_TIMEOUT
    poll_initial: float = POLL_INITIAL
    poll_max: float = POLL_MAX
    gateway: float = GATEWAY_TIMEOUT  # the CDN's patience with a sync call


@dataclass(frozen=True)
class Settings:
    endpoints: Endpoints = field(default_factory=Endpoints)
    rate: RateLimit = field(default_factory=RateLimit)
    retry: RetrySettings = field(default_factory=RetrySettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_credits: float | None = None  # this run's spend, counted from calls sent
    max_total_credits: float | None = None  # the output folder's spend over all runs
    submit: SubmitMode = SUBMIT  # how feature calls are sent: "auto", "async" or "sync"


_GROUPS: dict[str, type] = {
    "endpoints": Endpoints,
    "rate": RateLimit,
    "retry": RetrySettings,
    "timeouts": Timeouts,
}


def concurrency_value(value: Any) -> int | str:
    """``"auto"`` or a whole number of at least 1; raises ConfigError naming the setting."""
    if isinstance(value, str) and value.strip().lower() == CONCURRENCY_AUTO:
        return CONCURRENCY_AUTO
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"rate.concurrency: expected auto or a number, got {value!r}") from exc
    if isinstance(value, float) and value != number:
        raise ConfigError(f"rate.concurrency: expected a whole number, got {value!r}")
    if number < 0:
        raise ConfigError(f"rate.concurrency: must not be negative, got {value!r}")
    if number == 0:
        raise ConfigError("rate.concurrency: must be at least 1 (or auto)")
    return number


def _coerce(group: str, name: str, value: Any, current: Any) -> Any:
    if (group, name) == ("rate", "concurrency"):
        return concurrency_value(value)
    kind = type(current)
    try:
        if kind is bool or value is None:
            return value
        coerced = kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{group}.{name}: expected {kind.__name__}, got {value!r}") from exc
    if isinstance(coerced, int | float) and coerced < 0:
        raise ConfigError(f"{group}.{name}: must not be negative, got {value!r}")
    return coerced


_TOP_LEVEL = ("max_credits", "max_total_credits", "submit")


def _top_level(settings: Settings, name: str, value: Any) -> Settings:
    if name == "submit":
        if value is None:
            return settings
        if value not in SUBMIT_MODES:
            raise ConfigError(f"submit: expected one of {', '.join(SUBMIT_MODES)}, got {value!r}")
        return replace(settings, submit=value)
    number: float | None = None
    if value is not None:
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from exc
        if number < 0:
            raise ConfigError(f"{name}: must not be negative, got {value!r}")
    if name == "max_credits":
        return replace(settings, max_credits=number)
    return replace(settings, max_total_credits=number)


def apply(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """Return settings with ``{"group": {"field": value}}`` (or a top-level one) applied."""
    updated = settings
    for group, values in overrides.items():
        if group in _TOP_LEVEL:
            updated = _top_level(updated, group, values)
            continue
        if group not in _GROUPS:
            known = ", ".join([*_GROUPS, *_TOP_LEVEL])
            raise ConfigError(f"unknown settings group {group!r} (known: {known})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{group}: expected a mapping of settings")
        section = getattr(updated, group)
        names = {f.name for f in fields(section)}
        changes = {}
        for name, value in values.items():
            if name not in names:
                raise ConfigError(f"unknown setting {group}.{name} (known: {', '.join(names)})")
            if value is not None:
                changes[name] = _coerce(group, name, value, getattr(section, name))
        updated = replace(updated, **{group: replace(section, **changes)})
    return updated


def load_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a settings file is a mapping of groups")
    return data


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    endpoints = {}
    if env.get(API_BASE_ENV):
        endpoints["api_base"] = env[API_BASE_ENV]
    if env.get(ASSET_BASE_ENV):
        endpoints["asset_base"] = env[ASSET_BASE_ENV]
    return {"endpoints": endpoints} if endpoints else {}


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Built-in < file < env < flags."""
    settings = Settings()
    if config_file is not None:
        settings = apply(settings, load_file(config_file))
    settings = apply(settings, from_env(os.environ if env is None else env))
    if flags:
        settings = apply(settings, flags)
    return settings
