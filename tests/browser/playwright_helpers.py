"""Playwright driving the system Chromium (it cannot download its own browser here).

``make chromium`` installs the Debian package when ``/usr/bin/chromium`` is missing; the tests
skip with that hint instead of installing anything themselves. Every switch that could reach the
network is off.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
WINDOW = {"width": 1400, "height": 1000}


def chromium_path() -> str | None:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def launched() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's ``Browser``)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium is not installed: run `make chromium`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_ready(page: Any) -> None:
    """The page's script sets ``body[data-ready]`` once header and first cards are drawn."""
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


@contextmanager
def served(out_dir: Path, start_timeout: float = 30.0) -> Iterator[str]:
    """``pipeline review OUT`` on a free port in a thread; yields the page's URL once the first
    build of its data is made (``start_timeout``: a million jobs' takes a minute or two)."""
    from pipeline.review.server import serve

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    url: list[str] = []

    def on_ready(address: str) -> None:
        url.append(address)
        ready.set()

    task: list[asyncio.Task[None]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        task.append(loop.create_task(serve(out_dir, "127.0.0.1", 0, ready=on_ready)))
        with suppress(asyncio.CancelledError):
            loop.run_until_complete(task[0])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(start_timeout):
        raise RuntimeError("the review server did not start")
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(10)
        loop.close()
