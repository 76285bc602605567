"""The scheduler's shared parts: protocols, per-job bookkeeping, budgets, retrying one step.

Every request to the API host (upload, feature call, poll) passes the shared throttle in
``_retrying``; result and input downloads do not (SPEC 1a). See ``pipeline.scheduler.pool``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from pipeline.api.client import SinkFactory
from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Throttle
from pipeline.config import Timeouts
from pipeline.errors import (
    ApiError,
    BudgetReached,
    DownloadFailed,
    PipelineError,
    ProcessingTimeout,
    RateLimited,
    RecordFailed,
    Stopped,
    TotalBudgetReached,
    TransientError,
)
from pipeline.events import (
    EventBus,
    JobRetrying,
)
from pipeline.models import Asset, ErrorInfo, FeatureResult, Job, PlannedJob
from pipeline.store.local import Store

T = TypeVar("T")
QUEUE_PER_WORKER = 2
API_STEPS = frozenset({"upload", "feature", "poll"})  # requests that pass the throttle


class Client(Protocol):
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


@dataclass
class RunOutcome:
    stop_reason: str | None = None  # None: the plan ran to its end; else a StopReason
    stop_message: str = ""


@dataclass
class _JobRun:
    """Mutable bookkeeping of one job while a worker holds it."""

    planned: PlannedJob
    attempts: int = 0  # see the module docstring
    timings: dict[str, float] = field(default_factory=dict)
    reuploaded: bool = False
    feature_tries: int = 0  # failed feature tries that count toward --max-attempts
    last_step: str = ""  # the step of the latest failure: says which host the breaker blames

    @property
    def job(self) -> Job:
        return self.planned.job


@dataclass
class _Exhausted:
    """A job out of retries on transient errors, held back until the breaker decides."""

    run: _JobRun
    error: PipelineError


class SchedulerBase:
    """What every part of the scheduler shares: its collaborators, the stop flag, the credit
    budget and the retrying of one step. The parts (uploads, results, polling) are mixins of
    ``Scheduler``, split by step so that each module stays small; the state is set in
    ``Scheduler.__init__``, declared here so that each part is type-checked on its own."""

    _client: Client
    _store: Store
    _bus: EventBus
    _throttle: Throttle
    _policy: RetryPolicy
    _ledger: ResumeState
    _stop: asyncio.Event
    _sleep: Callable[[float], Awaitable[object]]
    _clock: Callable[[], float]
    _rand: Callable[[], float]
    _timeouts: Timeouts
    _asynchronous: bool
    _mask_converter: MaskConverter | None
    _uploads: dict[str, asyncio.Future[Asset]]
    _max_credits: float | None
    _max_total: float | None
    _spent_before: float
    credits_spent: int
    _credits_reserved: int
    _used_baseline: int | None
    _used_latest: int | None

    # -- budgets ---------------------------------------------------------------------------------

    def _spent(self) -> float:
        """This run's spend: our estimates, or what the account says if that is more."""
        observed = 0
        if self._used_baseline is not None and self._used_latest is not None:
            observed = self._used_latest - self._used_baseline
        return max(self.credits_spent, observed)

    def _observe_credit(self, result: FeatureResult, charged: int) -> None:
        used = result.used_credit
        if used is None:
            return
        if self._used_baseline is None:
            # The first answer already includes its own charge: the account stood below it.
            self._used_baseline = used - charged
        self._used_latest = max(self._used_latest or used, used)

    def _reserve(self, estimate: int) -> None:
        committed = self._spent() + self._credits_reserved
        limit, total = self._max_credits, self._max_total
        if limit is not None and committed + estimate > limit:
            raise BudgetReached(
                f"--max-credits {limit:g} reached: {self._spent():g} spent, "
                f"{self._credits_reserved} in flight, the next call needs about {estimate}"
            )
        if total is not None and self._spent_before + committed + estimate > total:
            raise TotalBudgetReached(
                f"--max-total-credits {total:g} reached: {self._spent_before:g} spent by earlier "
                f"runs, {self._spent():g} by this one, {self._credits_reserved} in flight, "
                f"the next call needs about {estimate}"
            )
        self._credits_reserved += estimate

    # -- retrying one step ---------------------------------------------------------------------

    async def _retrying(
        self,
        run: _JobRun,
        step: str,
        attempt: Callable[[], Awaitable[T]],
        final: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Run one step with retries. Steps to the API host pass the throttle first; feature
        tries are counted per job (``run.feature_tries``), other steps per call."""
        tries = limited = 0
        while True:
            try:
                if step in API_STEPS:
                    await self._throttle.acquire()
                    if self._stop.is_set():
                        raise Stopped()
                value = await attempt()
            except (Stopped, BudgetReached):
                raise  # nothing was sent: not a try
            except final:
                raise
            except TransientError as exc:
                run.last_step = step
                if isinstance(exc, RateLimited):
                    limited += 1
                    if step in API_STEPS:
                        self._throttle.on_rate_limited(self._policy.announced_wait(exc))
                if self._policy.counts_as_attempt(exc):
                    run.attempts += 1
                    if step == "feature":
                        run.feature_tries += 1
                    tries = run.feature_tries if step == "feature" else tries + 1
                if self._stop.is_set() or not self._policy.should_retry(exc, tries, limited):
                    raise
                delay = self._policy.delay(exc, max(tries, 1))
                self._bus.emit(
                    JobRetrying(run.job.id, run.planned.key, step, run.attempts, _info(exc), delay)
                )
                await self._sleep(delay)
                continue
            except ApiError:
                run.last_step = step
                if step == "feature":
                    run.attempts += 1  # sent and refused: it was a try
                raise
            if step in API_STEPS:
                self._throttle.on_success()
            if step == "feature":
                run.attempts += 1
            return value


def _systemic(error: BaseException) -> bool:
    """Out of retries on transient errors alone (host down, 5xx, timeouts, broken answers):
    what the breaker counts and what ``error.transient`` records. A FAILED record is not: the
    host answered. A download that ran out is, through its cause."""
    if isinstance(error, DownloadFailed):
        return _systemic(error.__cause__) if error.__cause__ is not None else False
    return isinstance(error, TransientError) and not isinstance(error, RecordFailed | Stopped)


def _info(error: PipelineError, *, transient: bool = False) -> ErrorInfo:
    status = error.http_status if isinstance(error, ApiError) else None
    uuid = error.uuid if isinstance(error, ProcessingTimeout) else None
    return ErrorInfo(error.kind, str(error), status, transient=transient, uuid=uuid)
