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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.api.client import SinkFactory
from pipeline.api.retry import backoff, retry_loop
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
ASSET_CHECK_TRIES = 3  # the asset host's unsigned-read check, when it fails transiently
ASSET_CHECK_BACKOFF = 0.5  # seconds before its second try, doubling
SETTLING_STEPS = frozenset({"poll", "download"})  # what a paid record still needs
CHALLENGE_STATUS = 403
START_STEPS = frozenset({"upload", "feature"})  # requests before an edit starts


class Client(Protocol):
    """What the scheduler asks of ``api.client.OneMinClient``: one attempt per call."""

    unsigned_reads: bool  # the asset host serves unsigned reads (then results come from it)

    async def upload_asset(self, data: bytes, filename: str, content_type: str) -> Asset: ...
    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = ...
    ) -> FeatureResult: ...
    async def poll_result(self, uuid: str) -> FeatureResult: ...
    async def fetch_result(
        self, result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = ...
    ) -> int: ...
    async def download(self, url: str, dest: Path, what: str = ...) -> int: ...
    async def serves_unsigned(self, path: str) -> bool: ...
    def result_urls(self, result: FeatureResult, index: int) -> list[str]: ...


class AssetHostCheck:
    """Whether the asset host serves unsigned reads of our uploads: asked once per run (not an
    API-host request), shared by every job that asks while it is under way. A transient
    failure is asked again (``ASSET_CHECK_TRIES``) before it counts as a no."""

    def __init__(self, client: Client, sleep: Sleep = asyncio.sleep) -> None:
        self._client = client
        self._sleep = sleep
        self._answer: asyncio.Future[bool] | None = None

    async def serves_unsigned(self, uploaded_path: str) -> bool:
        if self._answer is None:
            self._answer = asyncio.ensure_future(self._ask(uploaded_path))
        return await asyncio.shield(self._answer)

    async def _ask(self, path: str) -> bool:
        try:
            return await retry_loop(
                lambda _try: self._client.serves_unsigned(path),
                tries=ASSET_CHECK_TRIES,
                delay=lambda n: backoff(n, ASSET_CHECK_BACKOFF, ASSET_CHECK_BACKOFF * 4),
                retry_on=(TransientError,),
                sleep=self._sleep,
            )
        except TransientError:
            return False  # no answer: taken as a private bucket (same credits, more calls)


class PendingRecord(Protocol):
    """A paid record from an earlier run (read-only: the ledger's is a frozen dataclass)."""

    @property
    def result(self) -> FeatureResult: ...  # result_paths empty: still processing, poll it
    @property
    def credits(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...


class PartialImages(Protocol):
    """A partial job from an earlier run: what it delivered, and the images it misses."""

    @property
    def delivered(self) -> tuple[str, ...]: ...
    @property
    def missing(self) -> tuple[int, ...]: ...
    @property
    def uuids(self) -> tuple[str, ...]: ...


class ResumeState(Protocol):
    """What the scheduler asks the ledger, and nothing more."""

    def pending_for(self, job_id: str, key: str) -> PendingRecord | None: ...
    def parts_for(self, job_id: str, key: str) -> Mapping[int, PendingRecord]: ...
    def partial_for(self, job_id: str, key: str) -> PartialImages | None: ...
    def lost_answers(self, job_id: str, key: str) -> int: ...
    def asset_for(self, digest: str | None) -> Asset | None: ...
    def forget_asset(self, digest: str | None) -> None: ...
    def remember_asset(self, digest: str, path: str) -> None: ...


MaskConverter = Callable[[Path], bytes]


@dataclass(frozen=True, slots=True)
class PhotoBytes:
    """A first run's new photo as its one read found it (``PhotoReader``)."""

    data: bytes | None  # None: this run read it already (an earlier job's): not read again
    digest: str  # sha256 hex
    facts: tuple[str, int, int, int, bool]  # as ``UnreadImage.expected``


class PhotoReader(Protocol):
    """Reads the photo of a job planned with ``PlannedJob.unread``: once, for its upload; the
    digest, the full check and the report's thumbnail come from those bytes
    (``runner/photos.py``). A string: why the photo cannot be used."""

    async def read(self, path: str) -> PhotoBytes | str: ...


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
    """Set once when the run stops taking jobs; every part looks at it before sending.

    ``records_settle``: a stop that buys nothing more but lets records already paid for be
    polled and fetched (a credit budget reached: polls cost no credits, and under async a run
    would otherwise leave every paid record of its last minutes to the next run)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.records_settle = False

    def set(self, *, records_settle: bool = False) -> None:
        if not self._event.is_set():
            self.records_settle = records_settle
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def halts(self, step: str) -> bool:
        """Whether a request of this step must not be sent now."""
        return self.is_set() and not (self.records_settle and step in SETTLING_STEPS)

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
    sent_async: bool = False  # the latest feature call went with "async": true
    requests: int = 0  # API requests sent for this job (every try of upload, call, poll)
    # Seconds its uploads and feature calls waited at the rate gate, in all: time before its
    # edit could start. (A poll's wait is not counted: the edit goes on meanwhile.)
    gate_wait: float = 0.0
    submitted_at: float | None = None  # when this run last sent the job's feature call
    gate_since: float | None = None  # waiting at the rate gate since then, if it is now
    gate_step: str = ""  # ... for a request of this step
    checks: tuple[ImageChecks, ...] = ()  # the marketplace checks of its stored outputs
    # Answers of this job's feature calls lost after sending (unknown outcomes), earlier runs'
    # included: the call is re-sent once, async; a second loss fails the job.
    lost_answers: int = 0
    # The bytes of the job's photo read at its start (``PlannedJob.unread``), until uploaded.
    photo: bytes | None = None

    @property
    def at_gate(self) -> bool:
        return self.gate_since is not None

    def gate_seconds(self, now: float) -> float:
        """``gate_wait`` so far, the wait of now too if it is one that counts."""
        counted = self.gate_since is not None and self.gate_step in START_STEPS
        return self.gate_wait + (now - self.gate_since if counted else 0.0)  # type: ignore[operator]

    @property
    def job(self) -> Job:
        return self.planned.job


@dataclass(frozen=True)
class Part:
    """One paid feature call of a job and the images it makes: ``indexes[i]`` is the output
    index of the record's result ``i``. A whole job is one part (indexes ``0..n-1``); a job
    bought one call per image has a part per image, each with ``per_image`` set (its ledger
    line names the image: the part)."""

    indexes: tuple[int, ...]
    result: FeatureResult
    credits: int | None
    per_image: bool = False

    @property
    def ledger_part(self) -> int | None:
        return self.indexes[0] if self.per_image else None


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


def cdn_challenged(error: BaseException) -> bool:
    """A transient 403: the CDN's challenge page, not the API (a 403 from the API is the key,
    or the job)."""
    return isinstance(error, TransientError) and error.http_status == CHALLENGE_STATUS


def error_info(error: PipelineError, *, transient: bool = False) -> ErrorInfo:
    """An error as the ledger and the events carry it."""
    status = error.http_status if isinstance(error, ApiError) else None
    uuid = error.uuid if isinstance(error, ProcessingTimeout) else None
    return ErrorInfo(error.kind, str(error), status, transient=transient, uuid=uuid)
