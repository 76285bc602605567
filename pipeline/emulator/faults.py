"""Seeded fault decisions.

Every decision draws a fixed number of random numbers, whatever the rates are and whichever fault
fires, so the n-th call of a route always meets the same fate for a given seed. Each route has its
own stream (derived from the seed), so extra download retries do not shift the feature-call faults.
Faults added later draw from streams of their own, so an old seed keeps its old fault sequence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from .config import EmulatorConfig
from .words import (
    BUSY_CAUSES,
    BUSY_MESSAGES,
    LIVE_FAILED,
    LIVE_FINISHED,
    LIVE_UNFINISHED,
    SEED_FINISHED,
    SEED_UNFINISHED,
    SEED_WORDS,
    BusyAnswer,
    StatusWords,
)

SERVER_ERROR_STATUSES = (500, 502, 503)
MALFORMED_VARIANTS = ("half-json", "not-json", "empty", "truncated-record")
# Where a JSON error answer puts its message (docs/api.md#error-bodies); "live" is
# the live API's own shape (errorCode, message, details).
ERROR_SHAPES = ("message", "error.message", "error")
API_ROUTES = ("assets", "features", "results")
# How an answer is lost after the origin charged: the connection drops, or the CDN answers one
# of its HTML error pages instead of the origin's answer.
LOST_VARIANTS = ("drop", "502", "520", "522")
# How often a live error body comes without `details`.
LIVE_DETAILS_MISSING = 0.25


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
    # Not answer-changing in the same sense: they shape a record that the call produces.
    processing: bool = False
    processing_failed: bool = False
    edit_seconds: float = 0.0
    failure_word: str = "FAILED"
    words: StatusWords = SEED_WORDS
    error_shape: str = "message"
    html_403: bool = False
    # Checked at their own steps (see features.py): the provider's refusal after the credit
    # check, and the loss of an answer the origin has charged for.
    busy: BusyAnswer | None = None
    lost_after_charge: str | None = None

    @property
    def processing_seconds(self) -> float:
        """The older name of `edit_seconds`."""
        return self.edit_seconds


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
        self._processing = random.Random(f"{seed}:processing")
        self._words = random.Random(f"{seed}:words")
        self._bodies = random.Random(f"{seed}:bodies")
        self._html = {route: random.Random(f"{seed}:html403:{route}") for route in API_ROUTES}
        self._lost = random.Random(f"{seed}:lost-after-charge")
        self._busy = random.Random(f"{seed}:busy-400")
        self._live_words = random.Random(f"{seed}:live-words")
        self._live_bodies = random.Random(f"{seed}:live-bodies")

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
        html_403 = self.html_403("features")
        base = FeatureFaults(
            jitter=jitter,
            html_403=html_403 and not drop,
            busy=self._busy_answer(),
            lost_after_charge=self._lost_variant(),
            **self._record_shape(),
        )
        # One answer-changing fault per call, the earliest in the request's life wins.
        if drop:
            return replace(base, drop=True)
        if storm:
            return replace(base, storm_429=True)
        if error:
            return replace(base, server_error=error_status)
        if forget:
            return replace(base, forget=True)
        if slow:
            return replace(base, slow=True)
        if malformed:
            return replace(base, malformed=variant)
        return replace(base, failed=failed)

    def _record_shape(self) -> dict[str, Any]:
        """Processing, edit time, status words and error body of one call (fixed draws)."""
        cfg = self._config
        rng = self._processing
        processing = rng.random() < cfg.rate_processing
        processing_failed = rng.random() < cfg.rate_processing_failed
        spread = rng.uniform(-cfg.edit_jitter, cfg.edit_jitter)
        alternate = self._words.random() < 0.5
        if cfg.failure_status == "mixed":
            word = "FAILURE" if alternate else "FAILED"
        else:
            word = cfg.failure_status
        shape = ERROR_SHAPES[self._bodies.randrange(len(ERROR_SHAPES))]
        if cfg.error_bodies != "varied":
            shape = "live" if cfg.error_bodies == "live" else "message"
        return {
            "processing": processing,
            "processing_failed": processing_failed,
            "edit_seconds": max(0.0, cfg.edit_seconds * (1.0 + spread)),
            "failure_word": word,
            "words": self._status_words(word),
            "error_shape": shape,
        }

    def _status_words(self, failure_word: str) -> StatusWords:
        cfg = self._config
        rng = self._live_words
        finished = LIVE_FINISHED[rng.randrange(len(LIVE_FINISHED))]
        unfinished = LIVE_UNFINISHED[rng.randrange(len(LIVE_UNFINISHED))]
        failed = LIVE_FAILED[rng.randrange(len(LIVE_FAILED))]
        if cfg.status_words != "live":
            finished, unfinished, failed = SEED_FINISHED, SEED_UNFINISHED, failure_word
        return StatusWords(
            finished=finished,
            unfinished=cfg.unknown_status_word or unfinished,
            failed=failed,
        )

    def _busy_answer(self) -> BusyAnswer | None:
        rng = self._busy
        busy = rng.random() < self._config.rate_busy_400
        message = BUSY_MESSAGES[rng.randrange(len(BUSY_MESSAGES))]
        cause, code = BUSY_CAUSES[rng.randrange(len(BUSY_CAUSES))]
        return BusyAnswer(message, cause, code) if busy else None

    def _lost_variant(self) -> str | None:
        rng = self._lost
        lost = rng.random() < self._config.rate_lost_after_charge
        variant = LOST_VARIANTS[rng.randrange(len(LOST_VARIANTS))]
        return variant if lost else None

    def live_details_missing(self) -> bool:
        """Whether a live error body goes without `details`, as some live answers do."""
        return self._live_bodies.random() < LIVE_DETAILS_MISSING

    def html_403(self, route: str) -> bool:
        """Whether the CDN in front of the API answers this request with a challenge page."""
        return self._html[route].random() < self._config.rate_403_html

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
