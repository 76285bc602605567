"""The worker pool: planned jobs stream through a bounded queue to N workers.

Each worker takes one job at a time through upload → feature → fetch → store, so ``--concurrency``
bounds both jobs in flight and feature calls open at once. Retries happen here, step by step: a
failed download is retried from the stored result and never buys the edit again; an upload is
shared by every job with the same input bytes. Run-fatal errors (key rejected, out of credits,
budget reached) and signals stop the intake; jobs already in flight settle, untouched jobs keep no
ledger line and so stay resumable.

The scheduler only emits events; the ledger, progress bar and statistics listen.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from pipeline.errors import (
    ApiError,
    AssetNotFound,
    DownloadFailed,
    JobFatal,
    PipelineError,
    RateLimited,
    RunFatal,
    StoreError,
    TransientError,
)
from pipeline.events import (
    AssetsUploaded,
    EventBus,
    FeatureSubmitted,
    JobFailed,
    JobRetrying,
    JobStarted,
    JobSucceeded,
    RunStopping,
)
from pipeline.ledger import ResumeState
from pipeline.models import Asset, ErrorInfo, FeatureResult, InputRef, Job, PlannedJob
from pipeline.retry import RetryPolicy
from pipeline.store import Store, check_image, parse_size
from pipeline.throttle import Throttle

T = TypeVar("T")
QUEUE_PER_WORKER = 2


class Client(Protocol):
    async def upload_asset(self, data: bytes, filename: str, content_type: str) -> Asset: ...
    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None
    ) -> FeatureResult: ...
    async def fetch_result(self, result: FeatureResult, index: int, dest: Path) -> int: ...
    async def download(self, url: str, dest: Path, what: str = ...) -> int: ...


MaskConverter = Callable[[Path], bytes]


@dataclass
class RunOutcome:
    stop_reason: str | None = None  # None: the plan ran to its end
    stop_message: str = ""


@dataclass
class _JobRun:
    """Mutable bookkeeping of one job while a worker holds it."""

    planned: PlannedJob
    attempts: int = 0  # feature calls that counted toward --max-attempts
    timings: dict[str, float] = field(default_factory=dict)
    reuploaded: bool = False

    @property
    def job(self) -> Job:
        return self.planned.job


class Scheduler:
    def __init__(
        self,
        client: Client,
        store: Store,
        bus: EventBus,
        throttle: Throttle,
        policy: RetryPolicy,
        ledger: ResumeState,
        *,
        concurrency: int,
        credits_for: Callable[[Job], int] | None = None,
        max_credits: float | None = None,
        retry_failed: bool = False,
        mask_converter: MaskConverter | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._store = store
        self._bus = bus
        self._throttle = throttle
        self._policy = policy
        self._ledger = ledger
        self._concurrency = max(1, concurrency)
        self._credits_for = credits_for or (lambda job: 0)
        self._max_credits = max_credits
        self._retry_failed = retry_failed
        self._mask_converter = mask_converter
        self._sleep = sleep
        self._clock = clock
        self._uploads: dict[str, asyncio.Future[Asset]] = {}
        self._stop = asyncio.Event()
        self._outcome = RunOutcome()
        self.credits_spent = 0
        self._credits_reserved = 0

    # -- the run ------------------------------------------------------------------------------

    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop taking jobs; in-flight ones settle. The first reason given is the one kept."""
        if self._stop.is_set():
            return
        self._outcome = RunOutcome(reason, message)
        self._stop.set()
        self._bus.emit(RunStopping(reason, message))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, planned: Iterable[PlannedJob]) -> RunOutcome:
        queue: asyncio.Queue[PlannedJob | None] = asyncio.Queue(
            self._concurrency * QUEUE_PER_WORKER
        )
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self._concurrency)]
        feeder = asyncio.create_task(self._feed(planned, queue))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            # Whichever comes first: the plan is fed, or a stop request (then the feeder,
            # possibly blocked on a full queue, is cancelled and the workers see the flag).
            await asyncio.wait({feeder, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            if feeder.done() and not feeder.cancelled() and feeder.exception():
                raise feeder.exception()  # type: ignore[misc]
            if self._stop.is_set():
                for _ in workers:
                    _put_nowait_dropping(queue, None)
            await asyncio.gather(*workers)
        finally:
            stopper.cancel()
            for task in (*workers, feeder):
                task.cancel()
            await asyncio.gather(*workers, feeder, stopper, return_exceptions=True)
        return self._outcome

    async def _feed(self, planned: Iterable[PlannedJob], queue: asyncio.Queue) -> None:
        # The plan already left out what need not run (plan.skip_reason): feed everything.
        for item in planned:
            if self._stop.is_set():
                return
            await queue.put(item)
        for _ in range(self._concurrency):
            await queue.put(None)

    async def _worker(self, queue: asyncio.Queue[PlannedJob | None]) -> None:
        while not self._stop.is_set():
            item = await queue.get()
            if item is None or self._stop.is_set():
                return
            try:
                await self._run_job(_JobRun(item))
            except RunFatal as exc:
                self.request_stop(exc.kind, str(exc))
            except StoreError as exc:
                self.request_stop("store", str(exc))
            except Exception:
                # A bug must not hang the run: a dead worker leaves the feeder blocked on a full
                # queue forever. Stop the intake so run() returns, and let the error be seen.
                self.request_stop("crashed", "an unexpected error stopped the run")
                raise

    # -- one job ------------------------------------------------------------------------------

    async def _run_job(self, run: _JobRun) -> None:
        job, started = run.job, self._clock()
        self._store.sweep_temps(job.id)
        self._bus.emit(JobStarted(run.planned))
        pending = self._ledger.pending_for(job.id, run.planned.key)
        try:
            if pending is not None:
                result, credits, run.attempts = pending.result, pending.credits, pending.attempts
            else:
                result, credits = await self._buy(run)
            outputs, superseded, written = await self._fetch_all(run, result)
        except (JobFatal, TransientError) as exc:
            if isinstance(exc, TransientError) and self._stop.is_set():
                return  # cut short by the stop, not failed: the job stays resumable
            self._bus.emit(JobFailed(job.id, run.planned.key, _info(exc), run.attempts))
            return
        run.timings["total"] = self._clock() - started
        self._bus.emit(
            JobSucceeded(
                job.id,
                run.planned.key,
                tuple(outputs),
                run.attempts,
                credits,
                result.uuid,
                run.timings,
                tuple(superseded),
                written,
            )
        )

    async def _buy(self, run: _JobRun) -> tuple[FeatureResult, int]:
        """Upload the inputs and pay for the feature call (once, if all goes well)."""
        started = self._clock()
        assets = await self._assets_for(run)
        run.timings["upload"] = self._clock() - started
        started = self._clock()
        estimate = self._credits_for(run.job)
        self._reserve(estimate)
        try:
            result = await self._call_feature(run, assets)
        finally:
            self._credits_reserved -= estimate
        self.credits_spent += estimate
        run.timings["feature"] = self._clock() - started
        self._bus.emit(
            FeatureSubmitted(run.job.id, run.planned.key, run.attempts, result, estimate)
        )
        return result, estimate

    def _reserve(self, estimate: int) -> None:
        limit = self._max_credits
        if limit is not None and self.credits_spent + self._credits_reserved + estimate > limit:
            raise _BudgetReached(
                f"--max-credits {limit:g} reached: {self.credits_spent} spent, "
                f"{self._credits_reserved} in flight, the next job needs about {estimate}"
            )
        self._credits_reserved += estimate

    async def _call_feature(self, run: _JobRun, assets: dict[str, Asset]) -> FeatureResult:
        async def attempt() -> FeatureResult:
            await self._throttle.acquire()
            if self._stop.is_set():
                raise _Stopped()
            mask = assets.get("mask")
            result = await self._client.run_feature(
                run.job, assets["image"].path, mask.path if mask else None
            )
            self._throttle.on_success()
            return result

        while True:
            try:
                return await self._retrying(run, "feature", attempt, counts_feature=True)
            except AssetNotFound:
                if run.reuploaded:
                    raise
                run.reuploaded = True  # the API forgot an upload: send it again, once
                for asset in assets.values():
                    self._forget_asset(asset.digest)
                assets = await self._assets_for(run)

    async def _retrying(
        self,
        run: _JobRun,
        step: str,
        attempt: Callable[[], Awaitable[T]],
        counts_feature: bool = False,
    ) -> T:
        tries = limited = 0
        while True:
            try:
                if counts_feature:
                    run.attempts += 1
                return await attempt()
            except TransientError as exc:
                if isinstance(exc, RateLimited):
                    limited += 1
                    if counts_feature:
                        run.attempts -= 1  # flow control, not a failed try
                        self._throttle.on_rate_limited(self._policy.announced_wait(exc))
                else:
                    tries += 1
                if self._stop.is_set() or not self._policy.should_retry(exc, tries, limited):
                    raise
                delay = self._policy.delay(exc, max(tries, 1))
                self._bus.emit(
                    JobRetrying(run.job.id, run.planned.key, step, tries, _info(exc), delay)
                )
                await self._sleep(delay)

    # -- uploads ------------------------------------------------------------------------------

    async def _assets_for(self, run: _JobRun) -> dict[str, Asset]:
        planned = run.planned
        roles = [("image", planned.job.image, planned.image_digest, False)]
        if planned.job.mask is not None:
            roles.append(("mask", planned.job.mask, planned.mask_digest, planned.mask_convert))
        assets: dict[str, Asset] = {}
        sent = 0
        for role, ref, digest, convert in roles:
            asset, fresh = await self._asset(run, ref, digest, convert)
            assets[role] = asset
            sent += fresh
        if sent:  # the line that lets a resumed run reuse the upload
            self._bus.emit(AssetsUploaded(planned.job.id, planned.key, assets, sent))
        return assets

    async def _asset(
        self, run: _JobRun, ref: InputRef, digest: str | None, convert: bool
    ) -> tuple[Asset, bool]:
        """The uploaded asset for an input, uploading it only if nobody has yet."""
        if ref.kind == "asset":
            return Asset(path=ref.value), False
        cache_key = _upload_key(ref, digest, convert)
        known = self._ledger.asset_for(cache_key)
        if known is not None:
            return known, False
        shared = self._uploads.get(cache_key)
        if shared is not None:
            return await asyncio.shield(shared), False
        future: asyncio.Future[Asset] = asyncio.get_running_loop().create_future()
        self._uploads[cache_key] = future
        try:
            asset = await self._upload(run, ref, cache_key, convert)
        except BaseException as exc:
            del self._uploads[cache_key]  # a later job may try again
            future.set_exception(exc if isinstance(exc, Exception) else _Stopped())
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        future.set_result(asset)
        return asset, True

    def _forget_asset(self, digest: str | None) -> None:
        if digest is None:
            return
        self._uploads.pop(digest, None)
        self._ledger.forget_asset(digest)

    async def _upload(self, run: _JobRun, ref: InputRef, cache_key: str, convert: bool) -> Asset:
        data, filename = await self._input_bytes(run, ref, convert)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"

        async def attempt() -> Asset:
            return await self._client.upload_asset(data, filename, content_type)

        asset = await self._retrying(run, "upload", attempt)
        return Asset(path=asset.path, digest=cache_key)

    async def _input_bytes(self, run: _JobRun, ref: InputRef, convert: bool) -> tuple[bytes, str]:
        if ref.kind == "url":
            return await self._fetch_input(run, ref.value)
        path = Path(ref.value)
        try:
            if convert and self._mask_converter is not None:
                return self._mask_converter(path), f"{path.stem}.png"
            return path.read_bytes(), path.name
        except OSError as exc:
            raise InputUnreadable(f"cannot read {path}: {exc.strerror}") from exc

    async def _fetch_input(self, run: _JobRun, url: str) -> tuple[bytes, str]:
        temp = self._store.temp_path(run.job.id, "input")
        try:
            await self._retrying(run, "upload", lambda: self._client.download(url, temp, "input"))
            return temp.read_bytes(), Path(url.split("?")[0]).name or "input"
        finally:
            self._store.discard(temp)

    # -- results ------------------------------------------------------------------------------

    async def _fetch_all(
        self, run: _JobRun, result: FeatureResult
    ) -> tuple[list[str], list[str], int]:
        started = self._clock()
        expected = parse_size(run.job.size)
        temps: list[tuple[Path, str]] = []
        written = 0
        try:
            for index in range(len(result.result_paths)):
                temp, ext, size = await self._fetch_one(run, result, index, expected)
                temps.append((temp, ext))
                written += size
            outputs, superseded = self._store.publish(run.job.id, temps)
        finally:
            for temp, _ in temps:
                self._store.discard(temp)  # no-op once renamed into place
        run.timings["download"] = self._clock() - started
        return outputs, superseded, written

    async def _fetch_one(
        self, run: _JobRun, result: FeatureResult, index: int, expected: tuple[int, int] | None
    ) -> tuple[Path, str, int]:
        temp = self._store.temp_path(run.job.id, index)

        async def attempt() -> tuple[Path, str, int]:
            try:
                size = await self._client.fetch_result(result, index, temp)
                return temp, check_image(temp, expected), size
            except OSError as exc:
                # Writing the temporary file failed (disk full, ...): the client turns every
                # network OSError into an ApiError, so this one is local. Stop, resumable.
                self._store.discard(temp)
                reason = exc.strerror or str(exc)
                raise StoreError(f"cannot write results in {temp.parent}: {reason}") from exc
            except BaseException:
                self._store.discard(temp)
                raise

        try:
            return await self._retrying(run, "download", attempt)
        except TransientError as exc:
            if self._stop.is_set():
                raise  # resumable: the stored result is fetched on the next run
            raise DownloadFailed(
                f"result {index} of record {result.uuid} could not be fetched: {exc}",
                exc.http_status,
            ) from exc


class InputUnreadable(JobFatal):
    kind = "input"


class _BudgetReached(RunFatal):
    kind = "max_credits"


class _Stopped(TransientError):
    """The run is stopping: a call not yet sent is not sent. The job stays resumable."""

    kind = "stopped"

    def __init__(self, message: str = "the run is stopping") -> None:
        # Raised bare (`_Stopped()`) where a stop is noticed; ApiError needs a message.
        super().__init__(message)


def _upload_key(ref: InputRef, digest: str | None, convert: bool) -> str:
    base = digest or "url:" + hashlib.sha256(ref.value.encode()).hexdigest()
    return base + (":gray" if convert else "")


def _info(error: PipelineError) -> ErrorInfo:
    status = error.http_status if isinstance(error, ApiError) else None
    return ErrorInfo(error.kind, str(error), status)


def _put_nowait_dropping(queue: asyncio.Queue[PlannedJob | None], item: None) -> None:
    """Make room for a stop sentinel: drop queued jobs (they keep no ledger line)."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
