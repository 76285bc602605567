"""The worker pool: planned jobs stream through a bounded queue to N workers.

Each worker takes one job at a time through upload → feature → (poll) → fetch → store. Retries
happen here, step by step: a failed download is retried from the stored result and never buys
the edit again; an upload is shared by every job with the same input bytes; a record still
processing is polled by its uuid (written to the ledger first), never bought again.

Every request to the API host (upload, feature call, poll) passes the shared throttle; result
and input downloads do not (SPEC 1a). ``--concurrency`` bounds jobs held by workers: in sync
mode that is feature calls open at once; with ``submit: async`` the POST returns at once and a
worker stays with its record while polling it (polls are paced and cheap), so it bounds records
outstanding, not connections held open.

Run-fatal errors (key rejected, out of credits, a budget reached, the circuit breaker) and
signals stop the intake; jobs already in flight settle, untouched jobs keep no ledger line and
so stay resumable. The breaker (SPEC 5): when ``breaker_jobs`` jobs in a row run out of retries
on transient errors, the run stops and those jobs are deferred (``JobDeferred``), not failed.

``attempts`` on a job's succeeded/failed line: every feature call sent (each counts, answered
or not) plus every failed try of its other steps (input fetch, upload, poll, download), 429s
excepted (flow control). A clean job shows 1; a job whose download was retried twice shows 3.

The scheduler only emits events; the ledger, progress bar and statistics listen.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from pipeline.client import SinkFactory
from pipeline.config import POLL_GROWTH, POLL_JITTER, Timeouts
from pipeline.errors import (
    ApiError,
    AssetNotFound,
    BudgetReached,
    DownloadFailed,
    InputUnreadable,
    JobFatal,
    PipelineError,
    ProcessingTimeout,
    RateLimited,
    RecordFailed,
    RecordUnknown,
    RunFatal,
    Stopped,
    StopReason,
    StoreError,
    TotalBudgetReached,
    TransientError,
)
from pipeline.events import (
    AssetsUploaded,
    EventBus,
    FeatureSubmitted,
    JobDeferred,
    JobFailed,
    JobRetrying,
    JobStarted,
    JobSucceeded,
    RecordFinished,
    RunStopping,
)
from pipeline.imagecheck import ResultStream
from pipeline.inputs.upload import Recipe, prepare_upload
from pipeline.models import Asset, ErrorInfo, FeatureResult, InputRef, Job, PlannedJob
from pipeline.retry import RetryPolicy
from pipeline.store import CREATOR_TOOL, Store, check_image, parse_size
from pipeline.throttle import Throttle

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
        max_total_credits: float | None = None,
        spent_before: float = 0.0,
        submit: str = "sync",
        breaker_jobs: int | None = None,
        timeouts: Timeouts | None = None,
        mask_converter: MaskConverter | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
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
        self._max_total = max_total_credits
        self._spent_before = spent_before
        self._asynchronous = submit == "async"
        self._breaker_jobs = policy.settings.breaker_jobs if breaker_jobs is None else breaker_jobs
        self._timeouts = timeouts or Timeouts()
        self._mask_converter = mask_converter
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._uploads: dict[str, asyncio.Future[Asset]] = {}
        self._stop = asyncio.Event()
        self._outcome = RunOutcome()
        self._held: list[_Exhausted] = []  # the current streak of transient exhaustions
        self.credits_spent = 0
        self._credits_reserved = 0
        self._used_baseline: int | None = None  # account usedCredit before this run's calls
        self._used_latest: int | None = None

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
            self._settle_held(defer=self._tripped())
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
                self.request_stop(StopReason.STORE, str(exc))
            except Exception:
                # A bug must not hang the run: a dead worker leaves the feeder blocked on a full
                # queue forever. Stop the intake so run() returns, and let the error be seen.
                self.request_stop(StopReason.CRASHED, "an unexpected error stopped the run")
                raise

    # -- one job ------------------------------------------------------------------------------

    async def _run_job(self, run: _JobRun) -> None:
        job, started = run.job, self._clock()
        self._store.sweep_temps(job.id)
        self._bus.emit(JobStarted(run.planned))
        pending = self._ledger.pending_for(job.id, run.planned.key)
        try:
            if pending is not None:
                run.attempts = pending.attempts
                result, credits = await self._resume(run, pending.result, pending.credits)
            else:
                result, credits = await self._buy(run)
            outputs, superseded, written = await self._fetch_all(run, result)
        except (JobFatal, TransientError) as exc:
            self._job_ended_badly(run, exc)
            return
        self._job_succeeded()
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

    async def _resume(
        self, run: _JobRun, result: FeatureResult, credits: int | None
    ) -> tuple[FeatureResult, int | None]:
        """A paid record from an earlier run: fetch it, or poll it while it has no paths."""
        if result.result_paths:
            return result, credits
        try:
            return await self._finish_record(run, result, credits), credits
        except RecordFailed as exc:
            # The record failed while nobody watched: buying again is what a FAILED record
            # needs (it produced nothing), within the job's attempts.
            await self._after_record_failed(run, exc)
            return await self._buy(run)
        except RecordUnknown:
            # The API no longer knows the record (expired, or it never existed there): there
            # is nothing to fetch and nothing to pay twice for. Buy it, as a new job would.
            return await self._buy(run)

    # -- the breaker and terminal events -------------------------------------------------------

    def _job_ended_badly(self, run: _JobRun, exc: PipelineError) -> None:
        if self._stop.is_set() and isinstance(exc, TransientError):
            # Cut short by the stop, not failed: the job stays resumable.
            self._bus.emit(JobDeferred(run.job.id, run.planned.key, _info(exc), run.attempts))
            return
        if not _systemic(exc):
            self._settle_held(defer=False)  # the host answered: the streak is broken
            self._fail(run, exc)
            return
        self._held.append(_Exhausted(run, exc))
        if self._breaker_jobs and len(self._held) >= self._breaker_jobs:
            host = "input host" if run.last_step == "input" else "API"
            reason = (
                StopReason.INPUT_HOST_UNREACHABLE
                if run.last_step == "input"
                else StopReason.API_UNREACHABLE
            )
            count = len(self._held)
            self.request_stop(
                reason, f"{host} unreachable: {count} jobs in a row ran out of retries ({exc})"
            )

    def _job_succeeded(self) -> None:
        self._settle_held(defer=False)  # any success resets the count

    def _tripped(self) -> bool:
        return self._outcome.stop_reason in (
            StopReason.API_UNREACHABLE,
            StopReason.INPUT_HOST_UNREACHABLE,
        )

    def _settle_held(self, *, defer: bool) -> None:
        held, self._held = self._held, []
        for item in held:
            run = item.run
            if defer:
                info = _info(item.error, transient=True)
                self._bus.emit(JobDeferred(run.job.id, run.planned.key, info, run.attempts))
            else:
                self._fail(run, item.error)

    def _fail(self, run: _JobRun, exc: PipelineError) -> None:
        info = _info(exc, transient=_systemic(exc))
        self._bus.emit(JobFailed(run.job.id, run.planned.key, info, run.attempts))

    # -- buying and polling ----------------------------------------------------------------------

    async def _buy(self, run: _JobRun) -> tuple[FeatureResult, int]:
        """Upload the inputs and pay for the feature call (once, if all goes well)."""
        started = self._clock()
        assets = await self._assets_for(run)
        run.timings["upload"] = self._clock() - started
        estimate = self._credits_for(run.job)
        while True:
            started = self._clock()
            result = await self._call_feature(run, assets, estimate)
            run.timings["feature"] = self._clock() - started
            self._bus.emit(
                FeatureSubmitted(run.job.id, run.planned.key, run.attempts, result, estimate)
            )
            if result.finished:
                return result, estimate
            try:
                return await self._finish_record(run, result, estimate), estimate
            except RecordFailed as exc:
                await self._after_record_failed(run, exc)

    async def _after_record_failed(self, run: _JobRun, exc: RecordFailed) -> None:
        """A record polled to FAILURE: a feature try that failed. Raise if none is left."""
        run.feature_tries += 1
        run.last_step = "feature"
        if self._stop.is_set() or not self._policy.should_retry(exc, run.feature_tries):
            raise exc
        delay = self._policy.delay(exc, run.feature_tries)
        self._bus.emit(
            JobRetrying(run.job.id, run.planned.key, "feature", run.attempts, _info(exc), delay)
        )
        await self._sleep(delay)

    async def _finish_record(
        self, run: _JobRun, record: FeatureResult, credits: int | None
    ) -> FeatureResult:
        """Poll a processing record until it finishes; its uuid is in the ledger already."""
        started = self._clock()
        deadline = started + self._timeouts.processing
        wait, polls = self._timeouts.poll_initial, 0
        while True:
            now = self._clock()
            if now >= deadline:
                raise ProcessingTimeout(
                    f"record {record.uuid} still {record.status or 'processing'} after "
                    f"{self._timeouts.processing:g} s ({polls} polls)",
                    record.uuid,
                )
            await self._sleep(min(self._jittered(wait), max(0.0, deadline - now)))
            if self._stop.is_set():
                raise Stopped()  # resumable: the next run polls the same uuid
            record = await self._retrying(
                run, "poll", _poller(self._client, record.uuid), final=(RecordFailed,)
            )
            polls += 1
            if record.finished:
                run.timings["processing"] = self._clock() - started
                key = run.planned.key
                self._bus.emit(
                    RecordFinished(run.job.id, key, run.attempts, record, credits, polls)
                )
                self._observe_credit(record, 0)
                return record
            wait = min(self._timeouts.poll_max, wait * POLL_GROWTH)

    def _jittered(self, wait: float) -> float:
        return wait * (1.0 - POLL_JITTER * self._rand())

    async def _call_feature(
        self, run: _JobRun, assets: dict[str, Asset], estimate: int
    ) -> FeatureResult:
        async def attempt() -> FeatureResult:
            mask = assets.get("mask")
            self._reserve(estimate)  # right before the POST: a call not sent reserves nothing
            try:
                # The flag only when set: a sync run calls run_feature exactly as before.
                extra = {"asynchronous": True} if self._asynchronous else {}
                result = await self._client.run_feature(
                    run.job, assets["image"].path, mask.path if mask else None, **extra
                )
            finally:
                self._credits_reserved -= estimate
            self.credits_spent += estimate
            self._observe_credit(result, estimate)
            return result

        while True:
            try:
                return await self._retrying(run, "feature", attempt)
            except AssetNotFound:
                if run.reuploaded:
                    raise
                run.reuploaded = True  # the API forgot an upload: send it again, once
                for asset in assets.values():
                    self._forget_asset(asset.digest)
                assets = await self._assets_for(run)

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

    # -- uploads ------------------------------------------------------------------------------

    async def _assets_for(self, run: _JobRun) -> dict[str, Asset]:
        planned = run.planned
        image = _Prepared(planned.image_recipe)
        roles = [("image", planned.job.image, planned.image_digest, image)]
        if planned.mask_png is not None:  # made here: keyed by the PNG's digest
            made = InputRef("file", f"{planned.job.id}.mask.png")
            roles.append(("mask", made, planned.mask_digest, _Prepared(made=planned.mask_png)))
        elif planned.job.mask is not None:
            mask = _Prepared(planned.mask_recipe, planned.mask_convert)
            roles.append(("mask", planned.job.mask, planned.mask_digest, mask))
        assets: dict[str, Asset] = {}
        sent = 0
        for role, ref, digest, prepared in roles:
            asset, fresh = await self._asset(run, ref, digest, prepared)
            assets[role] = asset
            sent += fresh
        if sent:  # the line that lets a resumed run reuse the upload
            self._bus.emit(AssetsUploaded(planned.job.id, planned.key, assets, sent))
        return assets

    async def _asset(
        self, run: _JobRun, ref: InputRef, digest: str | None, prepared: _Prepared
    ) -> tuple[Asset, bool]:
        """The uploaded asset for an input, uploading it only if nobody has yet."""
        if ref.kind == "asset":
            return Asset(path=ref.value), False
        cache_key = _upload_key(ref, digest, prepared)
        known = self._ledger.asset_for(cache_key)
        if known is not None:
            return known, False
        shared = self._uploads.get(cache_key)
        if shared is not None:
            return await asyncio.shield(shared), False
        future: asyncio.Future[Asset] = asyncio.get_running_loop().create_future()
        self._uploads[cache_key] = future
        try:
            asset = await self._upload(run, ref, cache_key, prepared)
        except BaseException as exc:
            self._uploads.pop(cache_key, None)  # a later job may try again
            future.set_exception(exc if isinstance(exc, Exception) else Stopped())
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        future.set_result(asset)
        # Waiters hold the future; later jobs find the path in the resume state (a string, not
        # a future per distinct input: a catalog of a million photos keeps memory flat).
        self._ledger.remember_asset(cache_key, asset.path)
        self._uploads.pop(cache_key, None)  # (a forgotten asset may have dropped it already)
        return asset, True

    def _forget_asset(self, digest: str | None) -> None:
        if digest is None:
            return
        self._uploads.pop(digest, None)
        self._ledger.forget_asset(digest)

    async def _upload(
        self, run: _JobRun, ref: InputRef, cache_key: str, prepared: _Prepared
    ) -> Asset:
        if prepared.made is not None:  # a mask made by preflight: its PNG, named after the job
            data, filename, content_type = prepared.made, Path(ref.value).name, "image/png"
        else:
            data, filename, content_type = await self._input_bytes(run, ref, prepared)

        async def attempt() -> Asset:
            return await self._client.upload_asset(data, filename, content_type)

        asset = await self._retrying(run, "upload", attempt)
        return Asset(path=asset.path, digest=cache_key)

    async def _input_bytes(
        self, run: _JobRun, ref: InputRef, prepared: _Prepared
    ) -> tuple[bytes, str, str]:
        """The bytes to upload, their file name and their content type (from the bytes)."""
        if ref.kind == "url":
            data, name = await self._fetch_input(run, ref.value)
            return data, name, _content_type(name)
        path = Path(ref.value)
        try:
            if prepared.recipe is not None:  # upright, at most max_input_side, 8-bit, gray
                upload = prepare_upload(path, prepared.recipe)
                return upload.data, upload.filename, upload.content_type
            if prepared.convert and self._mask_converter is not None:
                return self._mask_converter(path), f"{path.stem}.png", "image/png"
            return path.read_bytes(), path.name, _content_type(path.name)
        except OSError as exc:
            raise InputUnreadable(f"cannot read {path}: {exc.strerror}") from exc

    async def _fetch_input(self, run: _JobRun, url: str) -> tuple[bytes, str]:
        temp = self._store.temp_path(run.job.id, "input")
        try:
            await self._retrying(run, "input", lambda: self._client.download(url, temp, "input"))
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

        protect = run.job.protect

        async def attempt() -> tuple[Path, str, int]:
            # Checked (and, unless protected, marked) while it streams; what the stream cannot
            # settle alone (JPEG, WebP, unusual PNGs) is checked and marked from the file.
            stream = ResultStream(expected, None if protect else CREATOR_TOOL)
            try:
                await self._client.fetch_result(result, index, temp, sink=stream.writer)
                extension = stream.verdict()
                marked = extension is not None and not protect
                if extension is None:
                    extension = check_image(temp, expected)
                if protect:  # composited and marked in one write, off the loop
                    protected = self._store.protect_result
                    size = await asyncio.to_thread(protected, temp, extension, run.planned)
                    return temp, extension, size
                if marked:
                    return temp, extension, stream.written
                return temp, extension, self._store.mark_provenance(temp)
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


def _poller(client: Client, uuid: str) -> Callable[[], Awaitable[FeatureResult]]:
    return lambda: client.poll_result(uuid)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """How an input is turned into the bytes uploaded: a preflight recipe (EXIF, size, depth,
    grayscale), or, for jobs planned without one, only the mask conversion."""

    recipe: Recipe | None = None
    convert: bool = False
    made: bytes | None = None  # a mask preflight made: these PNG bytes are uploaded as they are

    @property
    def token(self) -> str:
        if self.recipe is not None:
            return self.recipe.token
        return "gray" if self.convert else ""


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _upload_key(ref: InputRef, digest: str | None, prepared: _Prepared) -> str:
    """One upload per distinct bytes sent: the file's digest and what is done to it."""
    base = digest or "url:" + hashlib.sha256(ref.value.encode()).hexdigest()
    return f"{base}:{prepared.token}" if prepared.token else base


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


def _put_nowait_dropping(queue: asyncio.Queue[PlannedJob | None], item: None) -> None:
    """Make room for a stop sentinel: drop queued jobs (they keep no ledger line)."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
