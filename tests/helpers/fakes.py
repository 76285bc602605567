"""A scripted stand-in for OneMinClient, for fast deterministic scheduler tests."""

from __future__ import annotations

import asyncio
import io
from collections import defaultdict
from pathlib import Path

from PIL import Image

from pipeline.api.client import SinkFactory
from pipeline.errors import ApiError, RecordFailed, RecordUnknown
from pipeline.models import Asset, FeatureResult, Job


def png_bytes(size: tuple[int, int] = (1024, 1024), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


class FakeClient:
    """Each step fails with the scripted errors (in order) before it succeeds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.script: dict[str, list[ApiError]] = defaultdict(list)
        self.uploads: list[str] = []
        self.feature_calls: list[str] = []
        self.fetches: list[tuple[str, int]] = []
        self.delay = delay
        self.open_features = 0
        self.max_open_features = 0
        self._results: dict[str, Job] = {}
        self._png_cache: dict[tuple[int, int], bytes] = {}
        # Records still processing: feature answers PROCESSING for the records whose (1-based)
        # call number is in `processing_calls`, or for every call when `processing_all`; each
        # then answers PROCESSING to `polls_needed` polls before SUCCESS (or `poll_outcome`).
        self.processing_calls: set[int] = set()
        self.processing_all = False
        self.polls_needed = 2
        self.poll_outcome: dict[str, str] = {}  # uuid -> "FAILURE" | "NEVER" (stays processing)
        self.polls: list[str] = []
        self.async_flags: list[bool] = []
        self._polls_left: dict[str, int] = {}
        # The asset host serves unsigned reads (a public bucket: every result of a record can
        # be fetched); False: a private one, where only a record's first result can.
        self.public_assets = True
        self.unsigned_reads = False
        self.unsigned_checks: list[str] = []
        self.feature_n: list[int] = []  # the images each feature call asked for
        self.unfinished_word = "PROCESSING"  # what a record still processing answers
        self.upload_delay = 0.0
        self.uploads_open = self.most_uploads_open = 0

    def fail(self, step: str, *errors: ApiError) -> None:
        self.script[step].extend(errors)

    def _maybe_fail(self, step: str) -> None:
        if self.script[step]:
            raise self.script[step].pop(0)

    async def upload_asset(self, data: bytes, filename: str, content_type: str) -> Asset:
        self.uploads.append(filename)
        self.uploads_open += 1
        self.most_uploads_open = max(self.most_uploads_open, self.uploads_open)
        try:
            await asyncio.sleep(self.upload_delay)
            self._maybe_fail("upload")
        finally:
            self.uploads_open -= 1
        return Asset(path=f"assets/{len(self.uploads)}-{filename}")

    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> FeatureResult:
        self.feature_calls.append(job.id)
        self.async_flags.append(asynchronous)
        self.feature_n.append(job.n)
        number = len(self.feature_calls)  # before the await: other calls may start meanwhile
        self.open_features += 1
        self.max_open_features = max(self.max_open_features, self.open_features)
        try:
            await asyncio.sleep(self.delay)
            self._maybe_fail("feature")
        finally:
            self.open_features -= 1
        uuid = f"rec-{number}"
        self._results[uuid] = job
        if asynchronous or self.processing_all or number in self.processing_calls:
            self._polls_left[uuid] = self.polls_needed
            word = self.unfinished_word
            return FeatureResult(uuid, (), None, 100, 10_000, finished=False, status=word)
        return self._finished(uuid)

    def _finished(self, uuid: str) -> FeatureResult:
        job = self._results[uuid]
        paths = tuple(f"results/{uuid}/{i}.png" for i in range(job.expected_outputs))
        return FeatureResult(uuid, paths, f"http://127.0.0.1/tmp/{paths[0]}", 100, 10_000)

    async def poll_result(self, uuid: str) -> FeatureResult:
        self.polls.append(uuid)
        self._maybe_fail("poll")
        if uuid not in self._results:
            raise RecordUnknown(f"unknown record {uuid}")
        outcome = self.poll_outcome.get(uuid)
        left = self._polls_left.get(uuid, 0)
        if outcome == "NEVER" or left > 0:
            self._polls_left[uuid] = left - 1
            word = self.unfinished_word
            return FeatureResult(uuid, (), None, 100, 10_000, finished=False, status=word)
        if outcome == "FAILURE":
            raise RecordFailed(f"aiRecord.status is 'FAILURE' (record {uuid})")
        return self._finished(uuid)

    def remember(self, uuid: str, job: Job, polls_needed: int = 0) -> None:
        """A record bought by an earlier run (a resumed ledger names it)."""
        self._results[uuid] = job
        self._polls_left[uuid] = polls_needed

    async def fetch_result(
        self, result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = None
    ) -> int:
        self.fetches.append((result.uuid, index))
        self._maybe_fail("download")
        job = self._results.get(result.uuid)
        width, height = map(int, (job.size if job else "1024x1024").split("x"))
        data = self._png_cache.get((width, height))
        if data is None:  # encoded once per size (setdefault would encode on every call)
            data = self._png_cache[(width, height)] = png_bytes((width, height))
        if sink is None:
            dest.write_bytes(data)
            return len(data)
        with dest.open("wb") as handle:  # as the client streams it, in a few pieces
            stream = sink(handle)
            for start in range(0, len(data), 4096):
                stream.write(data[start : start + 4096])
            stream.finish()
        return len(data)

    def result_urls(self, result: FeatureResult, index: int) -> list[str]:
        """Where the real client would fetch from: the signed first result, else the asset
        host once it was seen to serve unsigned reads."""
        urls = [result.temporary_url] if index == 0 and result.temporary_url else []
        return urls + ([f"asset/{result.result_paths[index]}"] if self.unsigned_reads else [])

    async def serves_unsigned(self, path: str) -> bool:
        self.unsigned_checks.append(path)
        self.unsigned_reads = self.public_assets
        return self.public_assets

    async def download(self, url: str, dest: Path, what: str = "download") -> int:
        data = png_bytes((64, 64))
        dest.write_bytes(data)
        return len(data)
