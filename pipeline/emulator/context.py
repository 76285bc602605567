"""What every route shares: the gates a request passes (key, window, CDN), faults and sleeps.

`Context` is one emulator's shared machinery, handed to the route classes (uploads.py,
features.py, downloads.py); the server owns it and its lifecycle.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from typing import TypeVar

from aiohttp import web

from . import answers
from .config import EmulatorConfig
from .faults import FaultPlan
from .ratelimit import RollingWindow
from .state import EmulatorState
from .validation import ApiError

T = TypeVar("T")


@dataclass
class RequestRecord:
    """What the request log says about one request, filled in as the handler goes."""

    route: str | None
    arrived: float
    fault: str | None = None
    feature_type: str | None = None
    uuid: str | None = None
    record: str | None = None  # the aiRecord.status answered, if any
    credits: int = 0
    dropped: bool = False
    # The CDN answered in the origin's stead (its 524): whatever the origin does next is lost.
    gateway_gave_up: bool = False
    # The member's used credit as it stood before this request's own charge, if it charged.
    used_before: int | None = None


RECORD_KEY = web.RequestKey("emulator.record", RequestRecord)


class Context:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = EmulatorState(
            credit_limit=config.credit_limit,
            used_credit=config.used_credit,
            team_balance=config.team_balance,
        )
        # Replace both (server.use_time) to drive every wait, window and record from a test.
        self.clock: Callable[[], float] = time.monotonic
        self.timer: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.faults = FaultPlan(config)
        window = config.window
        self._window = (
            RollingWindow(window[0], window[1], clock=lambda: self.clock())
            if window is not None
            else None
        )
        # Per-process secret: temporary URLs do not survive a restart, nor do the assets.
        self.secret = secrets.token_bytes(32)
        self.stopping = asyncio.Event()
        self.api_base: str | None = None
        # Image work gets its own threads: run in-process (`pipeline run --emulator`), it must not
        # starve the client's own to_thread calls. None (the loop's default) until start().
        self.executor: ThreadPoolExecutor | None = None

    async def in_thread(self, function: Callable[..., T], *args: object) -> T:
        # CPU-bound work off the event loop, so other requests' sleeps keep their timing.
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def fault(self, request: web.Request, name: str) -> None:
        request[RECORD_KEY].fault = name
        self.state.faults[name] += 1

    def drop(self, request: web.Request) -> web.Response:
        """Close the connection without answering; aiohttp cannot send the returned dummy."""
        self.fault(request, "drop")
        return self.hang_up(request)

    def hang_up(self, request: web.Request) -> web.Response:
        request[RECORD_KEY].dropped = True
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)

    def check_key(self, request: web.Request) -> None:
        given = request.headers.get("API-KEY", "")
        if not hmac.compare_digest(given.encode(), self.config.api_key.encode()):
            raise ApiError(self.config.bad_key_status, "Invalid API key")

    def challenged(self, request: web.Request) -> web.Response:
        """The CDN in front of the API answers first: an HTML 403 the API never sees."""
        self.fault(request, "html_403")
        return answers.challenge_403()

    def window_full(self) -> bool:
        return self._window is not None and self._window.wait_time() is not None

    def window_check(self, request: web.Request) -> None:
        """The account's one request window: 429 beyond it; only admitted requests count."""
        if self._window is None:
            return
        wait = self._window.wait_time()
        if wait is not None:
            self.fault(request, "rate_limit")
            raise ApiError(429, "Too many requests", self.retry_after(wait))
        self._window.admit()

    async def sleep(self, seconds: float) -> None:
        """Sleep, unless the server stops first (shutdown must not wait for slow answers)."""
        if seconds <= 0 or self.stopping.is_set():
            return
        timer = asyncio.ensure_future(self.timer(seconds))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((timer, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            stop.cancel()

    def base_for(self, request: web.Request) -> str:
        # Served by someone else's runner (e.g. aiohttp's TestServer): use how we were reached.
        return self.api_base or str(request.url.origin())

    def retry_after(self, seconds: float) -> dict[str, str]:
        wait = max(1, math.ceil(seconds))
        if self.config.retry_after == "none":
            return {}
        if self.config.retry_after == "http-date":
            # Round the date up so a client honouring it never comes back a moment early.
            return {"Retry-After": formatdate(math.ceil(time.time()) + wait, usegmt=True)}
        return {"Retry-After": str(wait)}
