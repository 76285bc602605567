"""Just enough of the Chrome DevTools Protocol to click through a page and read it back.

Chromium is started with ``--remote-debugging-port=0``; it writes the port it picked to
``DevToolsActivePort`` in its profile folder. The page's target is found at ``/json/list`` and
driven over its WebSocket with ``Runtime.evaluate`` (aiohttp is already a dependency).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp

from tests.browser.chromium import FLAGS

START_TIMEOUT = 20.0
CALL_TIMEOUT = 20.0


class CdpError(RuntimeError):
    pass


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events in between are dropped)."""
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(CALL_TIMEOUT):
            async for message in self._ws:
                reply = message.json()
                if reply.get("id") != call_id:
                    continue
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise CdpError(f"{method}: the browser closed the connection")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression; promises are awaited."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"page script failed: {text}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        async with asyncio.timeout(CALL_TIMEOUT):
            while await self.evaluate("document.readyState") != "complete":
                await asyncio.sleep(0.05)


@asynccontextmanager
async def open_page(binary: str, size: tuple[int, int] = (1400, 1000)) -> AsyncIterator[Page]:
    with tempfile.TemporaryDirectory(prefix="chromium-cdp-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            port = await _devtools_port(Path(profile), process)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                    targets = await answer.json()
                target = next(t for t in targets if t.get("type") == "page")
                async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    yield Page(ws)
        finally:
            await _stop(process)


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    marker = profile / "DevToolsActivePort"
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            if process.returncode is not None:
                raise CdpError(f"chromium exited with {process.returncode} before listening")
            with suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            await asyncio.sleep(0.05)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        async with asyncio.timeout(10):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
