"""The driver of a ``--ray`` run: streams jobs to shard actors, writes their events locally.

The driver (where ``pipeline run`` runs) has preflighted, planned and locked OUT; here it keeps
the ledger's single writer by emitting every shard's events on its own bus. It streams batches
of ``batch_size`` jobs with at most ``BATCHES_IN_FLIGHT`` batches per shard (backpressure: the
plan is read only as fast as the shards take it). When a shard dies (``ray.kill``, a node lost:
``RayActorError``) every job it held and had not finished goes back to the front of the queue
with what its events said (a ``FeatureSubmitted`` → a ``Pending``: the next shard fetches the
paid result, never buys it again) and a replacement shard is started.

Outputs go where the run's ``OutputTarget`` says: a shared path, or a bucket that every shard
writes to itself (each image put whole and verified, as a run on one machine does), while the
driver keeps the state folder. Object-store credentials reach the shards from the driver's
environment in Ray's runtime environment (``storage_env``: the store variables only, never
the API key, which stays an actor argument). ``--max-credits`` is one shared count reserved
before every POST (``distributed.credits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.queue import Queue

import pipeline
from pipeline.config import Endpoints, Settings
from pipeline.distributed.budget import NAMESPACE, budget_name, get_budget
from pipeline.distributed.credits import start_pool
from pipeline.distributed.shard import BATCHES_IN_FLIGHT, Shard, ShardJob
from pipeline.events import (
    AnswerLostAfterSending,
    AssetsUploaded,
    Event,
    EventBus,
    FeatureSubmitted,
    JobFailed,
    JobPartial,
    JobSucceeded,
    RunStopping,
)
from pipeline.ledger import Pending, ResumeState
from pipeline.models import Asset, Job, PlannedJob
from pipeline.scheduler import CreditBudget, RunOutcome
from pipeline.store.bucket import OutputTarget

POLL_SECONDS = 0.05
SHARD_RESTARTS_MAX = 20  # a shard that keeps dying is a broken cluster, not bad luck

# What the object stores read from the environment (s3fs/botocore, gcsfs/google-auth,
# adlfs/azure-identity, fsspec's own FSSPEC_<PROTOCOL>_<OPTION>); the shards get these and
# nothing else of the driver's environment.
STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "GCSFS_", "FSSPEC_")
STORAGE_ENV_NAMES = frozenset({"STORAGE_EMULATOR_HOST", "NO_GCE_CHECK"})


def storage_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The object-store variables of ``environ``, for the shards' runtime environment.

    A shard on another node does not inherit the driver's environment; Ray's runtime
    environment is the one way to hand it over. Nodes with their own credentials (an instance
    role) need none of these, and then none are set.
    """
    return {
        name: value
        for name, value in environ.items()
        if name.startswith(STORAGE_ENV_PREFIXES) or name in STORAGE_ENV_NAMES
    }


def connect(address: str) -> bool:
    """``ray.init`` for ``--ray ADDRESS|local``; True if this call started Ray."""
    if ray.is_initialized():
        return False
    code_root = str(Path(pipeline.__file__).resolve().parent.parent)
    if address == "local":
        # Workers of a local instance import this very checkout of `pipeline`.
        path = code_root + os.pathsep + os.environ.get("PYTHONPATH", "")
        env = {"env_vars": {"PYTHONPATH": path}}
        ray.init(namespace=NAMESPACE, include_dashboard=False, runtime_env=env, log_to_driver=False)
    else:  # a cluster: every node must have `pipeline` installed (onemin-pipeline[ray])
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    return True


def check_shared_inputs(jobs: Iterable[Job], address: str) -> list[str]:
    """Problems with inputs other nodes cannot read: local files, unless ``--ray local``.

    A shard on another machine cannot open a path of the driver's disk. A path under a shared
    mount would do, but nothing tells the two apart from here, so every local file is refused
    and the message says why; ``--ray local`` (every node is this machine) accepts them.
    Give it the manifest's jobs as written (before preflight puts URL inputs in a local cache).
    """
    if address == "local":
        return []
    problems = []
    for job in jobs:
        for role, ref in (("image", job.image), ("mask", job.mask)):
            if ref is not None and ref.kind == "file":
                problems.append(
                    f"{job.location or job.id}: {role} {ref.value} is a local file; with --ray "
                    "every input must be an http(s) URL or an asset, since shards on other "
                    "machines cannot read this machine's disk (or use --ray local)"
                )
    return problems


class Driver:
    def __init__(
        self,
        *,
        shards: int,
        api_key: str,
        settings: Settings,
        target: OutputTarget,
        bus: EventBus,
        resume_state: ResumeState,
        batch_size: int | None = None,
        max_credits: float | None = None,
        max_total_credits: float | None = None,
        spent_before: float = 0.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # What the shards reported spent, for the driver's own figures; the limits themselves
        # are kept by the run's CreditPool, which every shard asks before its POST.
        self.credits = CreditBudget()
        self._limits = (max_credits, max_total_credits, spent_before)
        self._pool: Any = None
        self._count = max(1, shards)
        self._key = api_key
        self._settings = settings
        self._target = target
        self._env = storage_env(os.environ if environ is None else environ)
        self._bus = bus
        self._resume = resume_state
        self._batch = batch_size or max(1, settings.rate.ceiling)
        self._budget = budget_name(api_key)
        self.shards: dict[int, Any] = {}  # live shard id -> actor handle
        self._next_id = 0
        self._refs: dict[Any, tuple[int, list[ShardJob]]] = {}  # batch ObjectRef -> (shard, jobs)
        self._owner: dict[str, tuple[int, ShardJob]] = {}  # unfinished job id -> its shard
        self._requeue: deque[ShardJob] = deque()
        self._assets: dict[str, Asset] = {}
        self._outcome = RunOutcome()
        self.restarts = 0

    # -- shards -------------------------------------------------------------------------------

    @property
    def shards_started(self) -> int:
        return self._next_id

    def _start_shard(self) -> None:
        shard_id, self._next_id = self._next_id, self._next_id + 1
        options: dict[str, Any] = {
            "max_concurrency": 64,
            "max_restarts": 0,
            "num_cpus": 0,
            "scheduling_strategy": "SPREAD",
        }
        if self._env:  # merged by Ray with the job's own runtime environment
            options["runtime_env"] = {"env_vars": self._env}
        self.shards[shard_id] = Shard.options(**options).remote(  # type: ignore[attr-defined]
            shard_id,
            self._key,
            self._settings,
            self._target,
            self._events,
            self._budget,
            self._count,
            self._pool,
        )

    def _shard_died(self, shard_id: int) -> None:
        if self.shards.pop(shard_id, None) is None:
            return  # its other batches report the same death
        self._pool.shard_lost.remote(shard_id)  # its calls in flight count as spent
        self._drain()  # what it sent before dying is still in the queue
        for job_id, (owner, job) in list(self._owner.items()):
            if owner == shard_id:
                del self._owner[job_id]
                self._requeue.appendleft(job)
        self._refs = {r: v for r, v in self._refs.items() if v[0] != shard_id}
        self.restarts += 1
        if self.restarts > SHARD_RESTARTS_MAX:
            self._stop("crashed", f"shards died {self.restarts} times; the cluster is unwell")
            return
        self._start_shard()

    # -- jobs ---------------------------------------------------------------------------------

    def _source(self, plan: Iterable[PlannedJob]) -> Iterator[ShardJob]:
        # The plan already left out what need not run (plan.skip_reason): send everything.
        for planned in plan:
            job_id, key = planned.job.id, planned.key
            yield ShardJob(
                planned,
                self._resume.pending_for(job_id, key),
                self._known_assets(planned),
                dict(self._resume.parts_for(job_id, key)),
                self._resume.partial_for(job_id, key),
                self._resume.lost_answers(job_id, key),
            )

    def _known_assets(self, planned: PlannedJob) -> dict[str, Asset]:
        found = {}
        for digest in (planned.image_digest, planned.mask_digest):
            asset = self._assets.get(digest or "") or self._resume.asset_for(digest)
            if asset is not None and digest is not None:
                found[digest] = asset
        return found

    def _take(self, source: Iterator[ShardJob]) -> list[ShardJob]:
        batch: list[ShardJob] = []
        while len(batch) < self._batch and self._requeue:
            batch.append(self._requeue.popleft())
        while len(batch) < self._batch:
            job = next(source, None)
            if job is None:
                break
            batch.append(job)
        return batch

    def _dispatch(self, source: Iterator[ShardJob]) -> bool:
        """Fill every shard up to its in-flight limit; False once there is nothing left."""
        more = True
        for shard_id, handle in list(self.shards.items()):
            busy = sum(1 for owner, _ in self._refs.values() if owner == shard_id)
            while more and busy < BATCHES_IN_FLIGHT and not self._outcome.stop_reason:
                batch = self._take(source)
                if not batch:
                    more = False
                    break
                for job in batch:
                    self._owner[job.planned.job.id] = (shard_id, job)
                self._refs[handle.run_batch.remote(batch)] = (shard_id, batch)
                busy += 1
        return more

    # -- events -------------------------------------------------------------------------------

    def _drain(self) -> None:
        actor: Any = self._events.actor  # Ray's stubs do not type actor methods' .remote
        while items := ray.get(actor.get_nowait_batch.remote(ray.get(actor.qsize.remote()))):
            for shard_id, events in items:
                for event in events:
                    self._on_event(shard_id, event)

    def _on_event(self, shard_id: int, event: Event) -> None:
        job_id = getattr(event, "job_id", None)
        owned = self._owner.get(job_id) if job_id else None
        if job_id and (owned is None or owned[0] != shard_id):
            return  # a dead shard's late word on a job another shard now holds
        if isinstance(event, RunStopping):
            self._stop(event.reason, event.message)
            return
        if isinstance(event, FeatureSubmitted) and owned:
            self.credits.charge(event.credits or 0)
            pending = Pending(event.result, event.credits, event.attempt)
            job = owned[1]
            if event.part is not None:  # one image of a job bought per image
                job = dataclasses.replace(job, parts={**job.parts, event.part: pending})
            else:
                job = dataclasses.replace(job, pending=pending)
            self._owner[event.job_id] = (shard_id, job)
        elif isinstance(event, AnswerLostAfterSending) and owned:
            self.credits.possibly_charged(event.credits or 0)  # the shard's pool counted it
            job = dataclasses.replace(owned[1], lost_answers=owned[1].lost_answers + 1)
            self._owner[event.job_id] = (shard_id, job)
        elif isinstance(event, AssetsUploaded):
            self._assets.update({a.digest: a for a in event.assets.values() if a.digest})
        elif isinstance(event, JobSucceeded | JobFailed | JobPartial):
            self._owner.pop(event.job_id, None)
        self._bus.emit(event)

    @property
    def stopping(self) -> bool:
        return bool(self._outcome.stop_reason)

    def request_stop(self, reason: str = "interrupted", message: str = "") -> None:
        """Stop sending batches (a signal); batches already sent settle, the rest stay resumable."""
        self._stop(reason, message)

    def _stop(self, reason: str, message: str) -> None:
        if not self._outcome.stop_reason:
            self._outcome = RunOutcome(reason, message)
            self._bus.emit(RunStopping(reason, message))

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, plan: Iterable[PlannedJob]) -> RunOutcome:
        source = self._source(plan)
        first = next(source, None)
        if first is None:
            return self._outcome  # nothing to run: no actors started, nothing sent
        source = itertools.chain([first], source)
        self._events = Queue(actor_options={"num_cpus": 0})
        self._pool = start_pool(*self._limits)
        rate = self._settings.rate
        # The driver creates the actor, so it brings the run's pacing; shards find it by name.
        budget = get_budget(self._budget, rate)
        await budget.set_rpm.remote(self._settings.rate.rpm)  # this run's --rpm wins
        for _ in range(self._count):
            self._start_shard()
        try:
            more = self._dispatch(source)
            while self._refs or (more and not self._outcome.stop_reason):
                done, _ = ray.wait(list(self._refs), num_returns=1, timeout=0)
                if not done:
                    await asyncio.sleep(POLL_SECONDS)
                self._drain()
                for ref in done:
                    self._finished(ref)
                more = self._dispatch(source) if not self._outcome.stop_reason else False
            self._drain()
        finally:
            await self._close()
        return self._outcome

    def _finished(self, ref: Any) -> None:
        entry = self._refs.pop(ref, None)
        if entry is None:
            return
        try:
            reason, message = ray.get(ref)
        except RayActorError:
            self._shard_died(entry[0])
            return
        if reason:
            self._stop(reason, message)

    async def _close(self) -> None:
        for handle in self.shards.values():
            with contextlib.suppress(RayActorError):
                await handle.close.remote()
            ray.kill(handle)
        self.shards.clear()
        self._events.shutdown()
        if self._pool is not None:
            ray.kill(self._pool)


async def run_distributed(
    plan_jobs: Iterable[PlannedJob],
    *,
    address: str,
    shards: int,
    endpoints: Endpoints,
    api_key: str,
    settings: Settings,
    target: OutputTarget,
    ledger_writer_bus: EventBus,
    resume_state: ResumeState,
    batch_size: int | None = None,
    max_credits: float | None = None,
    max_total_credits: float | None = None,
    spent_before: float = 0.0,
    on_start: Callable[[Driver], None] | None = None,
) -> RunOutcome:
    """Run the plan on ``shards`` Ray actors; the driver's bus gets every event, in order."""
    started = connect(address)
    try:
        driver = Driver(
            shards=shards,
            api_key=api_key,
            settings=dataclasses.replace(settings, endpoints=endpoints),
            target=target,
            bus=ledger_writer_bus,
            resume_state=resume_state,
            batch_size=batch_size,
            max_credits=max_credits,
            max_total_credits=max_total_credits,
            spent_before=spent_before,
        )
        if on_start is not None:
            on_start(driver)  # the CLI's signal handlers call driver.request_stop()
        return await driver.run(plan_jobs)
    finally:
        if started:
            ray.shutdown()
