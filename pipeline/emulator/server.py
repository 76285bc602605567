"""The emulator's HTTP server: lifecycle, routes and the request log.

The routes live in their own modules: uploads.py (`POST /api/assets`), features.py (feature calls,
with the order of their checks) with editing.py (the origin's edit and its charge) and
gateway.py (the CDN in front of the API), results.py (result polls, and how every answer shows a
record), downloads.py (the asset host and presigned URLs); context.py holds what they share (the
key, the request window, faults, time) and state.py what the emulator remembers (with the
charge log of charges.py). Uploads and result polls pass the same challenge, key and
window checks as feature calls: the window counts every request to the API host (uploads,
feature calls, polls), never downloads.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from aiohttp import web

from . import answers, transport
from .config import EmulatorConfig
from .context import RECORD_KEY, Context, RequestRecord
from .downloads import Downloads
from .editing import Editor
from .features import Features
from .gateway import Gateway
from .imaging import Imager
from .records import RecordBook
from .results import RecordViews, Results
from .state import EmulatorState, StoredAsset
from .timing import ManualTime
from .uploads import Uploads
from .validation import ApiError

# Feature bodies are small JSON (a prompt is at most 4000 characters).
MAX_JSON_BYTES = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["EmulatorServer", "EmulatorState", "StoredAsset"]


class EmulatorServer:
    """A local stand-in of the 1min.ai API. `async with EmulatorServer(cfg) as server: ...`"""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._context = Context(config)
        self._gateway = Gateway(self._context)
        views = RecordViews(self._context)
        self._editor = Editor(self._context, Imager(), self._gateway, views)
        self._features = Features(self._context, self._editor, self._gateway, views)
        self._results = Results(self._context, self._editor.records, views)
        self._uploads = Uploads(self._context)
        self._downloads = Downloads(self._context)
        self._runner: web.AppRunner | None = None
        self._log_file: IO[str] | None = None
        self.app = self._build_app()

    @property
    def state(self) -> EmulatorState:
        return self._context.state

    @property
    def clock(self) -> Callable[[], float]:
        """The server's monotonic clock; replace it to move time in a test instead of sleeping."""
        return self._context.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._context.clock = clock

    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]:
        """Every wait of the server (latency, edits, the CDN's patience, uploads)."""
        return self._context.timer

    @sleep.setter
    def sleep(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._context.timer = sleep

    def use_time(self, time_source: ManualTime) -> None:
        """Drive the server's clock and every wait from a test: nothing then takes real time."""
        self.clock = time_source
        self.sleep = time_source.sleep

    async def drain(self) -> None:
        """Wait for the origin's work on calls the CDN already answered (and its charges)."""
        await self._gateway.drain()

    @property
    def records(self) -> RecordBook:
        return self._editor.records

    @property
    def imager(self) -> Imager:
        return self._editor.imager

    # ----------------------------------------------------------------- lifecycle

    @property
    def api_base(self) -> str:
        if self._context.api_base is None:
            raise RuntimeError("EmulatorServer.api_base is known only after start()")
        return self._context.api_base

    @property
    def asset_base(self) -> str:
        return f"{self.api_base}/asset"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._context.stopping.clear()
        if self.config.request_log is not None:
            self.config.request_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.config.request_log.open("a", encoding="utf-8")
        if self.config.charge_log is not None:
            self.state.charge_log.open(self.config.charge_log)
        self._context.executor = ThreadPoolExecutor(
            max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="emulator-image"
        )
        # No access log: our request log is the record, and it never holds headers.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            self._release()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self._context.api_base = f"http://{transport.url_host(host)}:{bound_port}"

    async def stop(self) -> None:
        # Wake sleeping slow/latency handlers so shutdown does not wait for them.
        self._context.stopping.set()
        self.records.cancel_renders()
        self._gateway.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._release()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _release(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.state.charge_log.close()
        if self._context.executor is not None:
            self._context.executor.shutdown(wait=False, cancel_futures=True)
            self._context.executor = None

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_JSON_BYTES, middlewares=[self._middleware])
        add_get, add_post = app.router.add_get, app.router.add_post
        add_post("/api/assets", self._uploads.handle, name="assets")
        add_post("/api/features", self._features.handle, name="features")
        add_get("/api/results/{uuid}", self._results.handle, name="results")
        add_get("/asset/{path:.+}", self._downloads.handle_asset, name="asset")
        add_get("/s3/asset.1min.ai/{path:.+}", self._downloads.handle_temporary, name="temporary")
        return app

    # ----------------------------------------------------------------- the request log

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        # Stamped before anything else: pacing is judged by when requests came, not left.
        record = RequestRecord(route=route, arrived=time.time())
        request[RECORD_KEY] = record
        status: int | None = 500
        try:
            try:
                response = await handler(request)
            except ApiError as error:
                response = self._error_answer(request, error)
            status = None if record.dropped else response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = None  # cancelled at shutdown: nothing was sent
            raise
        finally:
            self._log(request, record, status)

    def _error_answer(self, request: web.Request, error: ApiError) -> web.Response:
        style = self.config.error_bodies
        live = style == "live" or error.live
        # Drawn only for live bodies, so other modes keep their streams as they were.
        details_missing = live and self._context.faults.live_details_missing()
        return answers.api_error_response(error, style, details_missing, request.path)

    def _log(self, request: web.Request, record: RequestRecord, status: int | None) -> None:
        # Method, path without query, and our own facts only: never headers (the key is one).
        entry = {
            "ts": time.time(),
            "arrived": record.arrived,
            "method": request.method,
            "path": request.path,
            "route": record.route,
            "status": status,
            "fault": record.fault,
            "type": record.feature_type,
            "uuid": record.uuid,
            "record": record.record,
            "credits": record.credits,
        }
        self.state.log.append(entry)
        if status is not None:
            self.state.statuses[status] += 1
        if self._log_file is not None:
            self._log_file.write(json.dumps(entry) + "\n")
            self._log_file.flush()
