"""What the scheduler's parts share: the protocols it is handed, one job's bookkeeping, the
stop signal, the injected time, and the two rules every part applies to an error.

The parts (``steps``, ``uploads``, ``purchase``, ``polling``, ``results``, ``refetch``) are
objects built once per run by ``build.build_scheduler`` and handed what they need; nothing is
shared through inheritance.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.api.client import SinkFactory
from pipeline.errors import (
    ApiError,
    DownloadFailed,
    PipelineError,
    ProcessingTimeout,
    RecordFailed,
    Stopped,
    TransientError,
)
from pipeline.images.checks import ImageChecks
from pipeline.models import Asset, ErrorInfo, FeatureResult, Job, PlannedJob

API_STEPS = frozenset({"upload", "feature", "poll"})  # requests that pass the rate gate


class Client(Protocol):
    """What the scheduler asks of ``api.client.OneMinClient``: one attempt per call."""

    async def upload_asset(self, data: bytes, filename: str, content_type: str) -> Asset: ...
    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = ...
    ) -> FeatureResult: ...
    async def poll_result(self, uuid: str) -> FeatureResult: ...
    async def fetch_result(
        self, result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = ...
    ) -> int: ...
    async def download(self, url: str, dest: Path, what: str = ...) -> int: ...


class PendingRecord(Protocol):
    """A paid record from an earlier run (read-only: the ledger's is a frozen dataclass)."""

    @property
    def result(self) -> FeatureResult: ...  # result_paths empty: still processing, poll it
    @property
    def credits(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...


class ResumeState(Protocol):
    """What the scheduler asks the ledger, and nothing more."""

    def pending_for(self, job_id: str, key: str) -> PendingRecord | None: ...
    def asset_for(self, digest: str | None) -> Asset | None: ...
    def forget_asset(self, digest: str | None) -> None: ...
    def remember_asset(self, digest: str, path: str) -> None: ...


MaskConverter = Callable[[Path], bytes]
Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class Timing:
    """The time every part uses, injected so tests run on a fake clock and never sleep."""

    sleep: Sleep = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random


@dataclass
class RunOutcome:
    stop_reason: str | None = None  # None: the plan ran to its end; else a StopReason
    stop_message: str = ""


class StopSignal:
    """Set once when the run stops taking jobs; every part looks at it before sending."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass
class JobRun:
    """Mutable bookkeeping of one job while the pool holds it.

    ``attempts`` (on the job's succeeded/failed line): every feature call sent (each counts,
    answered or not) plus every failed try of its other steps (input fetch, upload, poll,
    download), 429s excepted (flow control). A clean job shows 1.
    """

    planned: PlannedJob
    attempts: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    reuploaded: bool = False
    feature_tries: int = 0  # failed feature tries that count toward --max-attempts
    last_step: str = ""  # the step of the latest failure: says which host the breaker blames
    checks: tuple[ImageChecks, ...] = ()  # the marketplace checks of its stored outputs

    @property
    def job(self) -> Job:
        return self.planned.job


@dataclass
class Exhausted:
    """A job out of retries on transient errors, held back until the breaker decides."""

    run: JobRun
    error: PipelineError


def is_systemic(error: BaseException) -> bool:
    """Out of retries on transient errors alone (host down, 5xx, timeouts, broken answers):
    what the breaker counts and what ``error.transient`` records. A FAILED record is not: the
    host answered. A download that ran out is, through its cause."""
    if isinstance(error, DownloadFailed):
        return is_systemic(error.__cause__) if error.__cause__ is not None else False
    return isinstance(error, TransientError) and not isinstance(error, RecordFailed | Stopped)


def error_info(error: PipelineError, *, transient: bool = False) -> ErrorInfo:
    """An error as the ledger and the events carry it."""
    status = error.http_status if isinstance(error, ApiError) else None
    uuid = error.uuid if isinstance(error, ProcessingTimeout) else None
    return ErrorInfo(error.kind, str(error), status, transient=transient, uuid=uuid)
