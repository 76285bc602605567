"""The emulator in a background thread with its own event loop, for tests of the real CLI.

The CLI under test runs in the main thread (in-process) or in a subprocess; either way it talks
HTTP to 127.0.0.1, and the test can read the emulator's request log and state directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.emulator import EmulatorConfig, EmulatorServer

KEY = "e2e-test-key-0123456789"


class RunningEmulator:
    def __init__(self, server: EmulatorServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    @property
    def env(self) -> dict[str, str]:
        return {
            "ONEMIN_API_KEY": KEY,
            "ONEMIN_API_BASE": self.server.api_base,
            "ONEMIN_ASSET_BASE": self.server.asset_base,
        }

    @property
    def log(self) -> list[dict[str, Any]]:
        return list(self.server.state.log)

    def calls(self, route: str, status: int | None = 200) -> list[dict[str, Any]]:
        return [
            e for e in self.log if e["route"] == route and (status is None or e["status"] == status)
        ]

    def drain(self, timeout: float = 30.0) -> None:
        """Wait for the origin's work on calls the CDN already answered (and its charges)."""
        asyncio.run_coroutine_threadsafe(self.server.drain(), self.loop).result(timeout)

    def configure(self, **changes: Any) -> None:
        """Change fault rates on the running server (read per request)."""

        def apply() -> None:
            for name, value in changes.items():
                setattr(self.server.config, name, value)

        self.loop.call_soon_threadsafe(apply)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(5)


@contextmanager
def serve_in_thread(server: EmulatorServer) -> Iterator[RunningEmulator]:
    """Any EmulatorServer on 127.0.0.1, served by its own event loop in a background thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="emulator", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the emulator did not start")
    try:
        yield RunningEmulator(server, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# The default regime (live), its edits shortened: tests about time name their own.
TEST_EDIT_SECONDS = 0.05


@contextmanager
def emulator_thread(**config: Any) -> Iterator[RunningEmulator]:
    config.setdefault("edit_seconds", TEST_EDIT_SECONDS)
    with serve_in_thread(EmulatorServer(EmulatorConfig(api_key=KEY, **config))) as running:
        yield running
