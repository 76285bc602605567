"""Seeded fault decisions.

Every decision draws a fixed number of random numbers, whatever the rates are and whichever fault
fires, so the n-th call of a route always meets the same fate for a given seed. Each route has its
own stream (derived from the seed), so extra download retries do not shift the feature-call faults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import EmulatorConfig

SERVER_ERROR_STATUSES = (500, 502, 503)
MALFORMED_VARIANTS = ("half-json", "not-json", "empty", "truncated-record")


@dataclass(frozen=True)
class FeatureFaults:
    """The fate of one feature call. At most one of the answer-changing faults is set."""

    drop: bool = False
    storm_429: bool = False
    server_error: int | None = None
    forget: bool = False
    slow: bool = False
    malformed: str | None = None
    failed: bool = False
    jitter: float = 0.0


@dataclass(frozen=True)
class DownloadFaults:
    drop: bool = False
    expire: bool = False
    huge: bool = False
    truncate: bool = False


class FaultPlan:
    """Draws the faults for each request from per-route generators seeded by config.seed."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        seed = config.seed
        # String seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
        self._features = random.Random(f"{seed}:features")
        self._uploads = random.Random(f"{seed}:uploads")
        self._downloads = random.Random(f"{seed}:downloads")
        self._jitter = random.Random(f"{seed}:jitter")

    def feature(self) -> FeatureFaults:
        cfg = self._config
        rng = self._features
        # Always draw all nine numbers, in this order, so the stream never drifts.
        drop = rng.random() < cfg.rate_drop
        storm = rng.random() < cfg.rate_429
        error = rng.random() < cfg.rate_5xx
        error_status = SERVER_ERROR_STATUSES[rng.randrange(len(SERVER_ERROR_STATUSES))]
        forget = rng.random() < cfg.rate_forget
        slow = rng.random() < cfg.rate_slow
        malformed = rng.random() < cfg.rate_malformed
        variant = MALFORMED_VARIANTS[rng.randrange(len(MALFORMED_VARIANTS))]
        failed = rng.random() < cfg.rate_failed
        jitter = self._jitter.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0
        # One answer-changing fault per call, the earliest in the request's life wins.
        if drop:
            return FeatureFaults(drop=True, jitter=jitter)
        if storm:
            return FeatureFaults(storm_429=True, jitter=jitter)
        if error:
            return FeatureFaults(server_error=error_status, jitter=jitter)
        if forget:
            return FeatureFaults(forget=True, jitter=jitter)
        if slow:
            return FeatureFaults(slow=True, jitter=jitter)
        if malformed:
            return FeatureFaults(malformed=variant, jitter=jitter)
        return FeatureFaults(failed=failed, jitter=jitter)

    def upload_drop(self) -> bool:
        return self._uploads.random() < self._config.rate_drop

    def download(self, temporary: bool) -> DownloadFaults:
        cfg = self._config
        rng = self._downloads
        drop = rng.random() < cfg.rate_drop
        expire = rng.random() < cfg.rate_expire
        huge = rng.random() < cfg.rate_huge
        truncate = rng.random() < cfg.rate_truncate
        if drop:
            return DownloadFaults(drop=True)
        # Only the signed S3-style URL can expire; the plain asset host has no signature.
        if expire and temporary:
            return DownloadFaults(expire=True)
        if huge:
            return DownloadFaults(huge=True)
        return DownloadFaults(truncate=truncate)
