"""Lost outputs fetched again from their stored result: free, no feature call
(docs/ledger.md#lost-outputs).

A succeeded job whose output files are gone (deleted by hand, a cleaned disk) still has its
paid record at the API. ``pipeline run`` asks for it again (``GET /api/results/{uuid}``: the
answer carries a freshly signed ``temporaryUrl`` of its first result), checks, protects and
marks each image exactly as a first download does, and writes a ``refetched`` ledger line. A
job bought one call per image polls each image's own record; a record's other results come
from the asset host only if it serves unsigned reads (asked once). When the record no longer
serves (unknown, 4xx, expired), the job stays ``missing`` (``pipeline status``) and only
``--redo-missing`` buys it again.

Cost: the plan only hands over the jobs it skipped as done (a pointer each, no file-system
call), and the existence check (a stat per output file, ~5 us) runs in a thread beside the
scheduler, so a million-job resume sends its first call as soon as without it; its ~5 s for a
million done jobs overlap the run's work (a run with nothing else to do ends that much later).
Only the jobs of the current content are checked: a changed or rejected job is run by the scheduler
anyway, so the two never touch the same folder.

A night's host has often dropped the folder's inodes from its caches: each look then waits on
the disk (about 120 us a job here, 2 minutes a million, one at a time). The looks are timed in
batches: once a batch is that slow, the rest are asked by ``COLD_LOOKERS`` threads at once (the
look releases the GIL while it waits; a disk serves many at a time), as git's preload-index
does for its lstats. A warm cache keeps the single thread (threads would only share the GIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.errors import ApiError, JobFatal, RecordFailed, StoreError, TransientError
from pipeline.events import EventBus, OutputsRefetched, ResultLost
from pipeline.ledger import FoldedJob, JobRef
from pipeline.ledger.compact import JobTable
from pipeline.models import FeatureResult, PlannedJob
from pipeline.scheduler.results import ResultSource, fetch_checked
from pipeline.store.local import Store
from pipeline.store.missing import OutputLook, files_under
from pipeline.store.verify import parse_size

GONE_STATUSES = frozenset({401, 403, 404, 410})  # the stored object or its signature is gone
LOOK_BATCH = 1024  # outputs looked at, then timed: is the cache cold?
COLD_LOOK_SECONDS = 20e-6  # a batch slower than this a look waits on the disk
COLD_LOOKERS = 16  # threads looking at once when it does
CONCURRENCY = 4  # re-fetches in flight beside the run's own jobs
SHOWN = 10


class ResultClient(ResultSource, Protocol):
    unsigned_reads: bool

    async def poll_result(self, uuid: str) -> FeatureResult: ...
    async def serves_unsigned(self, path: str) -> bool: ...


class Gate(Protocol):
    async def acquire(self) -> None: ...


class DoneJobs:
    """The plan's ``on_done``: every job skipped as done, remembered cheaply.

    A job of the compact fold (``ledger.JobRef``) is kept as its number in one array (4 bytes:
    a million done jobs would otherwise be a million objects); others as the object. The
    PlannedJob only for ``protect`` jobs, which need the source and mask again to composite a
    re-fetched image.
    """

    def __init__(self, records_of: Callable[[str], tuple[str, ...]] = lambda _job_id: ()) -> None:
        self._jobs: list[FoldedJob | tuple[FoldedJob, PlannedJob]] = []
        self._numbers = array("I")
        self._table: JobTable | None = None
        # A job bought one call per image: each output's record (``LedgerState.output_records``)
        self.records_of = records_of

    def __call__(self, state: FoldedJob, planned: PlannedJob) -> None:
        if state.result_gone:  # an earlier run found its stored result gone: not asked again
            return
        if planned.job.protect:
            self._jobs.append((state, planned))
        elif isinstance(state, JobRef) and self._table in (None, state.table):
            self._table = state.table
            self._numbers.append(state.number)
        else:
            self._jobs.append(state)

    def __len__(self) -> int:
        return len(self._jobs) + len(self._numbers)

    def missing(self, look: OutputLook) -> list[tuple[FoldedJob, PlannedJob | None]]:
        """The done jobs whose outputs are gone by ``look`` (blocking: run it in a thread).

        When the outputs are files under ``look.local_root``, the compact fold's jobs of one
        output are looked at without building their output tuples: every run asks this of
        every done job, a million a night (2.5 us a job, not 3.6)."""
        found: list[tuple[FoldedJob, PlannedJob | None]] = []
        gone, local_root = look.gone, look.local_root
        table = self._table
        if table is not None:
            numbers = (
                self._numbers
                if local_root is None
                else _beyond_single_outputs(table, self._numbers, local_root)
            )
            for number in numbers:
                if gone(table.outputs(number)):
                    found.append((JobRef(table, number), None))
        for item in self._jobs:
            state, planned = item if isinstance(item, tuple) else (item, None)
            if gone(state.outputs):
                found.append((state, planned))
        return found


def _beyond_single_outputs(
    table: JobTable,
    numbers: array[int],
    root: Path,
    clock: Callable[[], float] = time.perf_counter,
    batch: int = LOOK_BATCH,
) -> list[int]:
    """The jobs whose outputs need ``gone``'s look: those of one output named by the store's
    rule that is missing under ``root``, and every job of another shape (``outputs_missing``
    asks the same ``access`` of each). In order; looked at by many threads once a batch shows
    the cache cold (see the module)."""
    prefix = os.fspath(root) + os.sep
    access, present, only_output = os.access, os.F_OK, table.only_output

    def looked_at(chunk: array[int]) -> list[int]:
        ask: list[int] = []
        for number in chunk:
            output = only_output(number)
            if output is None or not access(prefix + output, present):
                ask.append(number)
        return ask

    found: list[int] = []
    for start in range(0, len(numbers), batch):
        chunk = numbers[start : start + batch]
        began = clock()
        found.extend(looked_at(chunk))
        if (clock() - began) / len(chunk) > COLD_LOOK_SECONDS:
            rest = numbers[start + batch :]
            chunks = [rest[at : at + batch] for at in range(0, len(rest), batch)]
            with ThreadPoolExecutor(COLD_LOOKERS, thread_name_prefix="output-look") as pool:
                for asked in pool.map(looked_at, chunks):
                    found.extend(asked)
            break
    return found


@dataclass
class RefetchReport:
    refetched: list[str] = field(default_factory=list)
    gone: list[tuple[str, str]] = field(default_factory=list)  # (id, why): stays missing
    later: list[tuple[str, str]] = field(default_factory=list)  # (id, why): transient, next run

    def lines(self, out_dir: Path) -> list[str]:
        """What the run's summary says about lost outputs (nothing when there were none)."""
        lines = []
        if self.refetched:
            lines.append(f"re-fetched free from their stored results: {len(self.refetched)} jobs")
        for what, items, advice in (
            ("missing (stored result gone)", self.gone, "--redo-missing buys them again"),
            ("missing (not re-fetched now)", self.later, "the next run tries again"),
        ):
            if not items:
                continue
            shown = ", ".join(f"{job_id} ({why})" for job_id, why in items[:SHOWN])
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            lines.append(f"{what}: {len(items)} jobs; {advice}: {shown}{more}")
        if self.gone or self.later:
            lines.append(f"  see: pipeline status {out_dir}")
        return lines


class _Gone(Exception):
    """The stored result no longer serves: the job stays missing."""


class Refetcher:
    """Brings back the outputs of done jobs whose files are gone, beside the run."""

    def __init__(
        self,
        client: ResultClient,
        store: Store,
        gate: Gate,
        bus: EventBus,
        out_dir: Path,
        *,
        stopping: Callable[[], bool] = lambda: False,
        concurrency: int = CONCURRENCY,
        look: OutputLook | None = None,
    ) -> None:
        # ``look``: how outputs are missing; default the files under ``out_dir`` (the session
        # passes its target's, a bucket's listing for a bucket OUT)
        self._look = look or files_under(out_dir)
        self._client = client
        self._store = store
        self._gate = gate
        self._bus = bus
        self._out_dir = out_dir
        self._stopping = stopping
        self._concurrency = max(1, concurrency)
        self._records_of: Callable[[str], tuple[str, ...]] = lambda _job_id: ()
        self._unsigned_asked = False

    async def run(self, done: DoneJobs) -> RefetchReport:
        report = RefetchReport()
        if not len(done):
            return report
        self._records_of = done.records_of
        missing = iter(await asyncio.to_thread(done.missing, self._look))

        async def worker() -> None:
            # A few workers draining one iterator, not a task per job: a folder whose images
            # were all moved away can list hundreds of thousands of them.
            for state, planned in missing:
                await self._guarded(state, planned, report)

        await asyncio.gather(*(worker() for _ in range(self._concurrency)))
        return report

    async def _guarded(
        self, state: FoldedJob, planned: PlannedJob | None, report: RefetchReport
    ) -> None:
        if self._stopping():
            report.later.append((state.job_id, "the run stopped"))
            return
        try:
            self._bus.emit(await self.refetch(state, planned))
        except _Gone as exc:
            self._bus.emit(ResultLost(state.job_id, state.key, str(exc)))
            report.gone.append((state.job_id, str(exc)))
        except (TransientError, StoreError) as exc:  # an outage, a full disk: next run
            report.later.append((state.job_id, str(exc)))
        else:
            report.refetched.append(state.job_id)

    async def refetch(self, state: FoldedJob, planned: PlannedJob | None) -> OutputsRefetched:
        """One job's outputs stored again; raises _Gone or TransientError."""
        per_image = self._records_of(state.job_id)
        if not state.uuid and not per_image:
            raise _Gone("no stored record in the ledger")
        temps: list[tuple[Path, str]] = []
        try:
            if per_image:  # image i is the first result of its own record
                for index, uuid in enumerate(per_image):
                    record = await self._finished(uuid)
                    temps.append(await self._fetch_one(state, planned, record, 0, index))
            else:
                record = await self._finished(state.uuid)
                for index in range(len(record.result_paths)):
                    if index == 1:
                        await self._ask_unsigned(record.result_paths[0])
                    temps.append(await self._fetch_one(state, planned, record, index, index))
            checks = self._store.checks_for(temps)
            outputs, superseded = await self._store.publish(state.job_id, temps)
        finally:
            for temp, _ in temps:
                self._store.discard(temp)  # no-op once renamed into place
        return OutputsRefetched(
            state.job_id, state.key, tuple(outputs), state.uuid, tuple(superseded), checks
        )

    async def _finished(self, uuid: str) -> FeatureResult:
        """The stored record, polled again (a fresh ``temporaryUrl``); _Gone if it is not."""
        if not uuid:
            raise _Gone("no stored record in the ledger")
        await self._gate.acquire()
        try:
            record = await self._client.poll_result(uuid)
        except RecordFailed as exc:
            raise _Gone(f"record {uuid} failed: {exc}") from exc
        except JobFatal as exc:  # unknown record, 4xx
            raise _Gone(f"record {uuid}: {exc}") from exc
        if not record.finished or not record.result_paths:
            raise _Gone(f"record {uuid} has no results")
        return record

    async def _ask_unsigned(self, path: str) -> None:
        """Once: whether the asset host serves a record's other results (a run that bought a
        job of several images asked already)."""
        if not self._unsigned_asked and not self._client.unsigned_reads:
            self._unsigned_asked = True
            with contextlib.suppress(TransientError):  # no answer: taken as no
                await self._client.serves_unsigned(path)

    async def _fetch_one(
        self,
        state: FoldedJob,
        planned: PlannedJob | None,
        record: FeatureResult,
        result_index: int,
        index: int,
    ) -> tuple[Path, str]:
        temp = self._store.temp_path(state.job_id, f"refetch{index}")
        expected = parse_size(planned.job.size) if planned is not None else None
        try:  # planned is kept for protected jobs only: composited again
            extension, _ = await fetch_checked(
                self._client, self._store, record, result_index, temp, expected, planned
            )
        except ApiError as exc:
            self._store.discard(temp)
            if exc.http_status in GONE_STATUSES or isinstance(exc, JobFatal):
                raise _Gone(str(exc)) from exc
            raise
        except BaseException:
            self._store.discard(temp)
            raise
        return temp, extension
