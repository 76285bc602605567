"""``Results``: each one streamed to a temporary file, checked and marked on the way
(``imagecheck``), retried from the stored record (never bought again), then published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pipeline.api.client import SinkFactory
from pipeline.errors import (
    DownloadFailed,
    StoreError,
    TransientError,
)
from pipeline.models import FeatureResult, PlannedJob
from pipeline.scheduler.job import JobRun, StopSignal
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


class Results:
    def __init__(
        self,
        client: ResultSource,
        store: Store,
        steps: StepRunner,
        stop: StopSignal,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._store = store
        self._steps = steps
        self._stop = stop
        self._clock = clock

    async def fetch_all(
        self, run: JobRun, result: FeatureResult
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
            run.checks = self._store.checks_for(temps)
            outputs, superseded = await self._store.publish(run.job.id, temps)
        finally:
            for temp, _ in temps:
                self._store.discard(temp)  # no-op once renamed into place
        run.timings["download"] = self._clock() - started
        return outputs, superseded, written

    async def _fetch_one(
        self, run: JobRun, result: FeatureResult, index: int, expected: tuple[int, int] | None
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
