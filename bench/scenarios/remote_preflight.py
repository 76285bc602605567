"""Scenario: preflight of 1,000 URL inputs served on 127.0.0.1 (fetch into the cache + checks).

Measured in-process: ``Preflight.prefetch_manifest`` (concurrent fetches, default concurrency)
then ``check`` for each job, as ``validate`` does once the prefetch is wired in. A second
figure checks the same URLs one at a time (what ``check`` falls back to without a prefetch).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

from aiohttp import web
from PIL import Image

from bench.common import Figure, ScenarioResult, median, scratch
from pipeline.inputs.cache import InputCache
from pipeline.models import Feature, InputRef, Job
from pipeline.preflight import Preflight

TITLE = "Remote preflight (1,000 URL inputs served locally: fetch, cache, check)"
TARGET_SECONDS = 10.0


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (index % 256, index // 256, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Host:
    def __init__(self, count: int) -> None:
        images = {f"{i}.png": _png(i) for i in range(count)}

        async def image(request: web.Request) -> web.Response:
            return web.Response(body=images[request.match_info["name"]], content_type="image/png")

        app = web.Application()
        app.router.add_get("/{name}", image)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _jobs(base: str, count: int) -> list[Job]:
    return [
        Job(f"j{i}", Feature.BACKGROUND, InputRef("url", f"{base}/{i}.png"), "p", size="auto")
        for i in range(count)
    ]


def _preflight_seconds(jobs: list[Job], cache: Path, prefetch: bool) -> float:
    preflight = Preflight(cache=InputCache(cache))
    started = time.perf_counter()
    if prefetch:
        preflight.prefetch_manifest(jobs)
    for job in jobs:
        _checked, problems, _notices = preflight.check(job)
        if problems:
            raise RuntimeError(f"unexpected problem: {problems[0]}")
    return time.perf_counter() - started


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("remote_preflight", TITLE)
    count, repeats = (200, 1) if quick else (1_000, 3)
    result.params = {"urls": count, "repeats": repeats}
    host = _Host(count)
    try:
        with scratch("remote_preflight") as folder:
            jobs = _jobs(host.base, count)
            concurrent = [
                _preflight_seconds(jobs, folder / f"c{r}", prefetch=True) for r in range(repeats)
            ]
            one_by_one = [_preflight_seconds(jobs, folder / "s", prefetch=False)]
    finally:
        host.stop()
    result.add(
        Figure(
            f"preflight {count:,} URLs (prefetched)",
            median(concurrent),
            "s",
            ("<", TARGET_SECONDS),
            concurrent,
        )
    )
    result.add(Figure(f"{count:,} URLs one at a time", median(one_by_one), "s", None, one_by_one))
    return result
