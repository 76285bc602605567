"""``Results``: each one streamed to a temporary file, checked and marked on the way
(``store.verify``), retried from the stored record (never bought again), then published.

A record's first result comes from its ``temporaryUrl``; when that is refused (an expired
signature), polling the finished record again gives a freshly signed one. An image that no URL
serves after that (a private bucket holds a record's other results out of reach) is missing:
the job is ``partial``, with what could be fetched published, and nothing is bought again
silently. An image that failed only for transient reasons (an outage) is not missing: the job
fails as transient and the next run fetches it, free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from pipeline.api.client import SinkFactory
from pipeline.errors import (
    DownloadFailed,
    RecordFailed,
    StoreError,
    TransientError,
)
from pipeline.models import ErrorInfo, FeatureResult, PlannedJob
from pipeline.scheduler.job import (
    AssetHostCheck,
    Client,
    JobRun,
    Part,
    StopSignal,
    error_info,
    is_systemic,
)
from pipeline.scheduler.steps import StepRunner
from pipeline.store.local import CREATOR_TOOL, Store
from pipeline.store.verify import ResultStream, check_image, parse_size


class ResultSource(Protocol):
    async def fetch_result(
        self, result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = None
    ) -> int: ...


async def fetch_checked(
    client: ResultSource,
    store: Store,
    result: FeatureResult,
    index: int,
    temp: Path,
    expected: tuple[int, int] | None,
    protect: PlannedJob | None,
) -> tuple[str, int]:
    """One result into ``temp``, checked, then marked (or, for a job to ``protect``, composited
    and marked in one write, off the loop): its extension and the bytes written. The one step
    both a run's download and the re-fetch of a lost output take.

    Checked (and, unless protected, marked) while it streams; what the stream cannot settle
    alone (JPEG, WebP, unusual PNGs) is checked and marked from the file. Last, the marked file
    is judged for the marketplaces, off the loop (``Store.checks_for`` hands the verdicts over).
    """
    stream = ResultStream(expected, None if protect is not None else CREATOR_TOOL)
    await client.fetch_result(result, index, temp, sink=stream.writer)
    extension = stream.verdict()
    marked = extension is not None and protect is None
    if extension is None:
        extension = check_image(temp, expected)
    if protect is not None:
        return extension, await asyncio.to_thread(store.protect_result, temp, extension, protect)
    written = stream.written if marked else store.mark_provenance(temp)
    await asyncio.to_thread(store.check_marketplace, temp)
    return extension, written


@dataclass
class Fetched:
    """What a job's results came to: the outputs published, and the images paid for but out of
    reach (``missing``, with why), which make the job partial."""

    outputs: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    written: int = 0
    missing: list[int] = field(default_factory=list)
    why_missing: ErrorInfo | None = None


class Results:
    def __init__(
        self,
        client: Client,
        store: Store,
        steps: StepRunner,
        stop: StopSignal,
        clock: Callable[[], float],
        asset_host: AssetHostCheck | None = None,
    ) -> None:
        self._client = client
        self._asset_host = asset_host or AssetHostCheck(client)
        self._store = store
        self._steps = steps
        self._stop = stop
        self._clock = clock

    async def fetch_all(
        self, run: JobRun, parts: list[Part], keep: tuple[str, ...] = ()
    ) -> Fetched:
        """Every image of the job's parts into place, by its index. ``keep``: outputs of the job
        that stay where they are (the images a partial job already delivered)."""
        started = self._clock()
        expected = parse_size(run.job.size)
        temps: list[tuple[Path, str]] = []
        indexes: list[int] = []
        fetched = Fetched()
        try:
            for part in parts:
                for position, index in enumerate(part.indexes):
                    try:
                        temp, ext, size = await self._fetch_one(run, part, position, expected)
                    except DownloadFailed as exc:
                        if is_systemic(exc):
                            raise  # an outage, not a lost image: the next run fetches it free
                        fetched.missing.append(index)
                        fetched.why_missing = error_info(exc)
                        continue
                    temps.append((temp, ext))
                    indexes.append(index)
                    fetched.written += size
            run.checks = self._store.checks_for(temps)  # the new images'; kept ones keep theirs
            if temps or not keep:
                fetched.outputs, fetched.superseded = await self._store.publish(
                    run.job.id, temps, indexes=indexes, keep=keep
                )
        finally:
            for temp, _ in temps:
                self._store.discard(temp)  # no-op once renamed into place
        run.timings["download"] = self._clock() - started
        return fetched

    async def _fetch_one(
        self, run: JobRun, part: Part, position: int, expected: tuple[int, int] | None
    ) -> tuple[Path, str, int]:
        """Result ``position`` of the part's record; a refused first result is fetched again
        with a freshly signed URL from a poll of its (finished) record, as often as a step is
        tried (``--max-attempts``): a signature may be refused once and the next one served."""
        record = part.result
        if not self._client.unsigned_reads and not self._client.result_urls(record, position):
            # No URL known to serve it (a record's other results; a temporaryUrl on a host we
            # never contact): whether the asset host serves unsigned reads, asked once a run.
            await self._asset_host.serves_unsigned(record.result_paths[0])
        refreshes = 0
        while True:
            try:
                return await self._download(run, record, position, expected)
            except DownloadFailed as exc:
                if (
                    position != 0
                    or is_systemic(exc)
                    or refreshes + 1 >= self._steps.policy.max_attempts
                ):
                    raise
                refreshes += 1
                record = await self._fresh_signature(run, record)

    async def _fresh_signature(self, run: JobRun, record: FeatureResult) -> FeatureResult:
        """Poll a finished record again: its answer carries a new ``temporaryUrl``."""

        async def poll() -> FeatureResult:
            return await self._client.poll_result(record.uuid)

        fresh = await self._steps.run(run, "poll", poll, final=(RecordFailed,))
        if not fresh.finished or not fresh.result_paths:
            return record
        return replace(record, temporary_url=fresh.temporary_url)

    async def _download(
        self,
        run: JobRun,
        result: FeatureResult,
        index: int,
        expected: tuple[int, int] | None,
    ) -> tuple[Path, str, int]:
        temp = self._store.temp_path(run.job.id, index)

        protect = run.planned if run.job.protect else None

        async def attempt() -> tuple[Path, str, int]:
            try:
                extension, size = await fetch_checked(
                    self._client, self._store, result, index, temp, expected, protect
                )
                return temp, extension, size
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
            return await self._steps.run(run, "download", attempt)
        except TransientError as exc:
            if self._stop.is_set():
                raise  # resumable: the stored result is fetched on the next run
            raise DownloadFailed(
                f"result {index} of record {result.uuid} could not be fetched: {exc}",
                exc.http_status,
            ) from exc
