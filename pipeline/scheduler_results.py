"""Results: each one streamed to a temporary file, checked and marked on the way
(``imagecheck``), retried from the stored record (never bought again), then published.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.errors import (
    DownloadFailed,
    StoreError,
    TransientError,
)
from pipeline.imagecheck import ResultStream
from pipeline.models import FeatureResult
from pipeline.scheduler_base import (
    SchedulerBase,
    _JobRun,
)
from pipeline.store import CREATOR_TOOL, check_image, parse_size


class ResultSteps(SchedulerBase):
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
            outputs, superseded = await self._store.publish(run.job.id, temps)
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
