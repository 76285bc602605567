"""A shard: one Ray async actor running today's worker pool on the jobs the driver sends it.

Each ``run_batch`` runs a ``Scheduler`` over one batch of jobs; the driver keeps at most
``BATCHES_IN_FLIGHT`` batches per shard (its backpressure), and each batch's scheduler gets an
equal share of ``--concurrency`` (under ``auto``: of the request budget it fills and of
``--max-concurrency``), so the shard's jobs in flight stay bounded while one batch tails off and
the next one starts.

Events go back to the driver (the ledger's single writer) through a Ray queue: the bus listener
buffers them and a flusher sends a list every ``FLUSH_SECONDS``; a ``FeatureSubmitted`` is sent
at once, so a shard killed after paying for a call has told the driver (the job is then polled,
never bought again). A batch's last events are sent before ``run_batch`` returns.

The shard builds its store from the run's ``OutputTarget``: with a bucket ``OUT`` it stages
results in a temporary folder of its own node and puts each image whole and verified, as a
run on one machine does; before its first batch it probes the bucket (or the shared folder),
so a node without credentials stops the run before it buys anything. Its credits are reserved
in the run's ``CreditPool`` before every POST (``distributed.credits``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import ray

from pipeline.api.client import OneMinClient
from pipeline.api.retry import RetryPolicy
from pipeline.config import Settings
from pipeline.credits import load_credit_table
from pipeline.distributed.budget import RemoteThrottle
from pipeline.distributed.credits import ShardCredits
from pipeline.distributed.inputs import localize
from pipeline.errors import StopReason, StoreError
from pipeline.events import Event, EventBus, FeatureSubmitted
from pipeline.inputs.cache import InputCache
from pipeline.ledger import PartialJob, Pending
from pipeline.models import Asset, PlannedJob
from pipeline.preflight import mask_upload_bytes
from pipeline.scheduler import build_scheduler, scheduler_options
from pipeline.store.bucket import OutputTarget

BATCHES_IN_FLIGHT = 2
FLUSH_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ShardJob:
    """A job as the driver sends it: with what the ledger says the shard may reuse."""

    planned: PlannedJob
    pending: Pending | None = None  # a paid result: fetch it, do not buy again
    assets: dict[str, Asset] = field(default_factory=dict)  # digest -> an uploaded asset
    parts: dict[int, Pending] = field(default_factory=dict)  # bought per image: paid images
    partial: PartialJob | None = None  # --redo-missing: what the job has and misses
    lost_answers: int = 0  # unknown outcomes of its calls so far


class BatchLedger:
    """The three ``LedgerState`` calls the scheduler makes, answered from the batch itself.

    The driver has already skipped done jobs, so nothing here is "succeeded" or "failed".
    """

    def __init__(self, jobs: list[ShardJob]) -> None:
        self._pending = {(j.planned.job.id, j.planned.key): j.pending for j in jobs if j.pending}
        self._assets = {d: a for j in jobs for d, a in j.assets.items()}
        self._jobs = {(j.planned.job.id, j.planned.key): j for j in jobs}

    def parts_for(self, job_id: str, key: str) -> dict[int, Pending]:
        job = self._jobs.get((job_id, key))
        return job.parts if job is not None else {}

    def partial_for(self, job_id: str, key: str) -> PartialJob | None:
        job = self._jobs.get((job_id, key))
        return job.partial if job is not None else None

    def lost_answers(self, job_id: str, key: str) -> int:
        job = self._jobs.get((job_id, key))
        return job.lost_answers if job is not None else 0

    def status_of(self, job_id: str, key: str) -> str | None:
        return "submitted" if (job_id, key) in self._pending else None

    def pending_for(self, job_id: str, key: str) -> Pending | None:
        return self._pending.get((job_id, key))

    def asset_for(self, digest: str | None) -> Asset | None:
        return None if digest is None else self._assets.get(digest)

    def remember_asset(self, digest: str, path: str) -> None:
        self._assets[digest] = Asset(path=path, digest=digest)

    def forget_asset(self, digest: str | None) -> None:
        if digest is not None:
            self._assets.pop(digest, None)


class _Forwarder:
    """The bus listener: buffers events, sends them to the driver's queue in lists."""

    def __init__(self, shard: int, queue: Any) -> None:
        self._shard, self._queue = shard, queue
        self._buffer: list[Event] = []
        self._sent: list[Any] = []

    def __call__(self, event: Event) -> None:
        self._buffer.append(event)
        if isinstance(event, FeatureSubmitted):
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            # Calls from one caller to one actor run in order: the driver sees events in order.
            self._sent.append(self._queue.actor.put_nowait.remote((self._shard, batch)))

    async def settle(self) -> None:
        self.flush()
        sent, self._sent = self._sent, []
        if sent:
            await asyncio.gather(*sent)


@ray.remote
class Shard:
    def __init__(
        self,
        shard: int,
        api_key: str,
        settings: Settings,
        target: OutputTarget,
        events: Any,
        budget: str,
        shards: int,
        credit_pool: Any,
    ) -> None:
        self._shard = shard
        self._key = api_key  # held in memory only: never logged, never in a runtime env
        self._settings = settings
        self._staging = Path(tempfile.mkdtemp(prefix=f"onemin-shard-{shard}-"))  # this node's
        self._store = target.open_shard_store(self._staging)
        self._prepared: asyncio.Task[str | None] | None = None
        self._credits = ShardCredits(credit_pool, shard)
        self._inputs = InputCache()  # this node's cache of URL inputs
        self._forwarder = _Forwarder(shard, events)
        rate = settings.rate
        self._throttle = RemoteThrottle(budget, rate, shards)
        self._budget_share = 1.0 / (max(1, shards) * BATCHES_IN_FLIGHT)
        self._credit_table = load_credit_table()
        self._session: aiohttp.ClientSession | None = None
        self._flusher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Shard({self._shard})"  # Ray prints actor reprs in logs: no key in it

    async def _client(self) -> OneMinClient:
        if self._session is None:
            limit = self._settings.rate.ceiling * 2 + 4
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
            self._flusher = asyncio.create_task(self._flush_forever())
        return OneMinClient(
            self._session, self._settings.endpoints, self._key, self._settings.timeouts
        )

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self._forwarder.flush()

    async def _prepare_store(self) -> str | None:
        """Probe the store once (a put and a delete in a bucket): why it cannot be written."""
        try:
            await asyncio.to_thread(self._store.prepare)
        except StoreError as exc:
            return str(exc)
        return None

    async def run_batch(self, jobs: list[ShardJob]) -> tuple[str | None, str]:
        """Run one batch to its end; its events reach the driver's queue before this returns."""
        if self._prepared is None:  # both batches in flight wait for the one probe
            self._prepared = asyncio.ensure_future(self._prepare_store())
        if (problem := await self._prepared) is not None:
            return StopReason.STORE, problem
        planned = await asyncio.to_thread(self._local_inputs, jobs)
        bus = EventBus()
        bus.subscribe(self._forwarder)
        concurrency = max(1, self._settings.rate.ceiling // BATCHES_IN_FLIGHT)
        scheduler = build_scheduler(
            await self._client(),
            self._store,
            bus,
            self._throttle,
            BatchLedger(jobs),
            policy=RetryPolicy(self._settings.retry),
            options=scheduler_options(self._settings, concurrency, self._budget_share),
            credits=self._credits,
            credits_for=self._credit_table.for_job,
            mask_converter=mask_upload_bytes,
        )
        try:
            outcome = await scheduler.run(planned)
        finally:
            self._credits.settle_now()
            await self._forwarder.settle()
        return outcome.stop_reason, outcome.stop_message

    def _local_inputs(self, jobs: list[ShardJob]) -> list[PlannedJob]:
        """The batch's jobs with URL inputs in this node's cache (a no-op where the driver's
        cache is this node's, as with ``--ray local``)."""
        return [localize(job.planned, self._inputs) for job in jobs]

    async def ping(self) -> int:
        return self._shard

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self._forwarder.settle()
        if self._session is not None:
            await self._session.close()
        self._credits.settle_now()
        shutil.rmtree(self._staging, ignore_errors=True)
