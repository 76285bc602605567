"""The emulator's HTTP side: routes, in-memory state, request log and fault injection.

A feature call goes through these steps, in this order (each may end it):
read body -> drop -> CDN challenge (HTML 403) -> API key (401/403) -> request window (429)
-> random 429 -> latency -> random 5xx -> validation (400; `forget` deletes the image asset here)
-> asset lookup (404) and mask size (400) -> slow -> credits (402) -> malformed
-> PROCESSING (`"async": true` or `rate_processing`: charge, render in the background, 200)
-> FAILED/FAILURE -> render, store, charge -> 200.
Uploads and result polls pass the same challenge, key and window checks: the window counts every
request to the API host (uploads, feature calls, polls), never downloads.
Nothing is charged unless the record succeeds; dropped, malformed and failed calls are free, so
the client's own credit accounting can be checked exactly against `used_credit`. A processing
record is charged at submission (see records.py), once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import IO, Any, TypeVar

from aiohttp import web

from . import answers, transport
from .config import EmulatorConfig
from .faults import FaultPlan, FeatureFaults
from .imaging import (
    OUTPUT_EXTENSION,
    OUTPUT_MIME,
    EditRequest,
    ImageInfo,
    Imager,
    SourceImage,
    digest_of,
    inspect_image,
)
from .ratelimit import RollingWindow
from .records import PROCESSING, SUCCESS, Record, RecordBook
from .signing import check_presigned, presign
from .validation import INPAINTER, ApiError, FeatureParams, validate_feature

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# Feature bodies are small JSON (a prompt is at most 4000 characters).
MAX_JSON_BYTES = 1024 * 1024
ASSET_PREFIX = "development/images"
FOREIGN_HOST = "http://203.0.113.1"  # TEST-NET-3: never routable, like a misconfigured server
_CHUNK = 1 << 20
# What aiohttp raises when writing to a connection the client has closed.
_STREAM_WRITE_ERRORS = (ConnectionError,)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


@dataclass
class StoredAsset:
    path: str
    name: str
    data: bytes
    mime: str
    width: int
    height: int
    digest: str
    uuid: str

    @property
    def source(self) -> SourceImage:
        return SourceImage(self.digest, self.data)


@dataclass
class EmulatorState:
    """Everything the emulator remembers; tests inspect it directly."""

    credit_limit: int
    used_credit: int
    assets: dict[str, StoredAsset] = field(default_factory=dict)
    # Credits of calls being rendered: counted against the limit so that concurrent calls
    # cannot together overspend it.
    reserved_credit: int = 0
    feature_calls: int = 0
    uploads: int = 0
    downloads: int = 0
    polls: int = 0
    successes: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counters(self) -> dict[str, int]:
        return {
            "feature_calls": self.feature_calls,
            "uploads": self.uploads,
            "downloads": self.downloads,
            "polls": self.polls,
            "successes": self.successes,
            **{f"fault_{name}": count for name, count in self.faults.items()},
        }


@dataclass
class _RequestRecord:
    """What the request log says about one request, filled in as the handler goes."""

    route: str | None
    arrived: float
    fault: str | None = None
    feature_type: str | None = None
    uuid: str | None = None
    record: str | None = None  # the aiRecord.status answered, if any
    credits: int = 0
    dropped: bool = False


_RECORD_KEY = web.RequestKey("emulator.record", _RequestRecord)


class EmulatorServer:
    """A local stand-in of the 1min.ai API. `async with EmulatorServer(cfg) as server: ...`"""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = EmulatorState(credit_limit=config.credit_limit, used_credit=config.used_credit)
        # Replace to drive the request window and processing records from a test without sleeping.
        self.clock: Callable[[], float] = time.monotonic
        self.imager = Imager()
        self._faults = FaultPlan(config)
        window = config.window
        self._window = (
            RollingWindow(window[0], window[1], clock=lambda: self.clock())
            if window is not None
            else None
        )
        self.records = RecordBook(
            lambda: self.clock(), on_success=self._record_succeeded, on_broken=self._refund
        )
        # Per-process secret: temporary URLs do not survive a restart, nor do the assets.
        self._secret = secrets.token_bytes(32)
        self._issued_paths: set[str] = set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._api_base: str | None = None
        self._log_file: IO[str] | None = None
        # Image work gets its own threads: run in-process (`pipeline run --emulator`), it must not
        # starve the client's own to_thread calls. None (the loop's default) until start().
        self._executor: ThreadPoolExecutor | None = None
        self.app = self._build_app()

    # ----------------------------------------------------------------- lifecycle

    @property
    def api_base(self) -> str:
        if self._api_base is None:
            raise RuntimeError("EmulatorServer.api_base is known only after start()")
        return self._api_base

    @property
    def asset_base(self) -> str:
        return f"{self.api_base}/asset"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._stopping.clear()
        if self.config.request_log is not None:
            self.config.request_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.config.request_log.open("a", encoding="utf-8")
        # No access log: our request log is the record, and it never holds headers.
        self._executor = ThreadPoolExecutor(
            max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="emulator-image"
        )
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
        self._api_base = f"http://{transport.url_host(host)}:{bound_port}"

    async def stop(self) -> None:
        # Wake sleeping slow/latency handlers so shutdown does not wait for them.
        self._stopping.set()
        self.records.cancel_renders()
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
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        # CPU-bound work off the event loop, so other requests' sleeps keep their timing.
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_JSON_BYTES, middlewares=[self._middleware])
        app.router.add_post("/api/assets", self._handle_upload, name="assets")
        app.router.add_post("/api/features", self._handle_feature, name="features")
        app.router.add_get("/api/results/{uuid}", self._handle_result, name="results")
        app.router.add_get("/asset/{path:.+}", self._handle_asset, name="asset")
        app.router.add_get("/s3/asset.1min.ai/{path:.+}", self._handle_temporary, name="temporary")
        return app

    # ----------------------------------------------------------------- logging

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        # Stamped before anything else: pacing is judged by when requests came, not left.
        record = _RequestRecord(route=route, arrived=time.time())
        request[_RECORD_KEY] = record
        status: int | None = 500
        try:
            try:
                response = await handler(request)
            except ApiError as error:
                response = web.json_response(
                    {"message": error.message}, status=error.status, headers=error.headers
                )
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

    def _log(self, request: web.Request, record: _RequestRecord, status: int | None) -> None:
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

    def _fault(self, request: web.Request, name: str) -> None:
        request[_RECORD_KEY].fault = name
        self.state.faults[name] += 1

    def _drop(self, request: web.Request) -> web.Response:
        """Close the connection without answering; aiohttp cannot send the returned dummy."""
        self._fault(request, "drop")
        request[_RECORD_KEY].dropped = True
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)

    # ----------------------------------------------------------------- helpers

    def _check_key(self, request: web.Request) -> None:
        given = request.headers.get("API-KEY", "")
        if not hmac.compare_digest(given.encode(), self.config.api_key.encode()):
            raise ApiError(self.config.bad_key_status, "Invalid API key")

    def _challenged(self, request: web.Request) -> web.Response:
        """The CDN in front of the API answers first: an HTML 403 the API never sees."""
        self._fault(request, "html_403")
        return answers.challenge_403()

    def _window_check(self, request: web.Request) -> None:
        """The account's one request window: 429 beyond it; only admitted requests count."""
        if self._window is None:
            return
        wait = self._window.wait_time()
        if wait is not None:
            self._fault(request, "rate_limit")
            raise ApiError(429, "Too many requests", self._retry_after(wait))
        self._window.admit()

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _base_for(self, request: web.Request) -> str:
        # Served by someone else's runner (e.g. aiohttp's TestServer): use how we were reached.
        return self._api_base or str(request.url.origin())

    def _retry_after(self, seconds: float) -> dict[str, str]:
        wait = max(1, math.ceil(seconds))
        if self.config.retry_after == "none":
            return {}
        if self.config.retry_after == "http-date":
            # Round the date up so a client honouring it never comes back a moment early.
            return {"Retry-After": formatdate(math.ceil(time.time()) + wait, usegmt=True)}
        return {"Retry-After": str(wait)}

    def _new_path(self, name: str) -> str:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y_%m_%d_%H_%M_%S_") + f"{now.microsecond // 1000:03d}"
        path = f"{ASSET_PREFIX}/{stamp}_{name}"
        counter = 0
        # Never reuse a path, even of a forgotten asset: a client may still hold the old one.
        while path in self._issued_paths:
            counter += 1
            path = f"{ASSET_PREFIX}/{stamp}_{counter}_{name}"
        self._issued_paths.add(path)
        return path

    def _store(
        self, name: str, data: bytes, digest: str, mime: str, width: int, height: int
    ) -> StoredAsset:
        asset = StoredAsset(
            path=self._new_path(name),
            name=name,
            data=data,
            mime=mime,
            width=width,
            height=height,
            digest=digest,
            uuid=str(uuid.uuid4()),
        )
        self.state.assets[asset.path] = asset
        return asset

    # ----------------------------------------------------------------- uploads

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        drop = self._faults.upload_drop()
        self.state.uploads += 1
        challenged = self._faults.html_403("assets")
        if drop:
            await transport.discard_body(request)
            return self._drop(request)
        if challenged:
            await transport.discard_body(request)
            return self._challenged(request)
        self._check_key(request)
        self._window_check(request)
        await self._sleep(self.config.asset_latency)
        filename, data = await transport.read_asset_field(request, MAX_UPLOAD_BYTES)
        try:
            info, digest = await self._in_thread(_inspect_and_digest, data)
        except ValueError as exc:
            raise ApiError(400, f"asset: {exc}") from exc
        name = transport.safe_name(filename, info.format)
        asset = self._store(name, data, digest, info.mime, info.width, info.height)
        return web.json_response(self._upload_answer(asset, request))

    def _upload_answer(self, asset: StoredAsset, request: web.Request) -> dict[str, Any]:
        created = answers.iso_now()
        location = f"{self._base_for(request)}/asset/{asset.path}"
        return {
            "fileContent": {
                "uuid": asset.uuid,
                "path": asset.path,
                "name": asset.name,
                "type": asset.mime,
                "size": len(asset.data),
                "width": asset.width,
                "height": asset.height,
            },
            "asset": {
                "uuid": asset.uuid,
                "key": asset.path,
                "name": asset.name,
                "location": location,
                "mimeType": asset.mime,
                "size": len(asset.data),
                "createdAt": created,
            },
        }

    # ----------------------------------------------------------------- features

    async def _handle_feature(self, request: web.Request) -> web.StreamResponse:
        # Decide the whole fate before the first await: the fault sequence follows arrival order.
        faults = self._faults.feature()
        self.state.feature_calls += 1
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(413, "body: request body is too large") from exc
        payload = transport.decode_json(body)
        if isinstance(payload, dict) and isinstance(payload.get("type"), str):
            # Logged even when the call is refused before validation (401, 429, 5xx).
            request[_RECORD_KEY].feature_type = payload["type"][:40]
        if faults.drop:
            return self._drop(request)
        if faults.html_403:
            return self._challenged(request)
        self._check_key(request)
        self._admit(request, faults)
        await self._sleep(self.config.latency + faults.jitter)
        if faults.server_error is not None:
            self._fault(request, "5xx")
            return answers.server_error(faults.server_error, faults.error_shape)
        params = self._parse(request, payload, faults)
        image, mask = self._lookup_assets(params)
        if faults.slow:
            self._fault(request, "slow")
            await self._sleep(self.config.slow_seconds)
            if transport.client_gone(request):
                # Best effort: nobody will read the answer, so do not do (or charge) the work.
                request[_RECORD_KEY].dropped = True
                return web.Response(status=499)
        return await self._answer_feature(request, params, image, mask, faults)

    def _admit(self, request: web.Request, faults: FeatureFaults) -> None:
        """Rolling-window limit, then the random 429 storm; only admitted calls count."""
        if self._window is not None and self._window.wait_time() is not None:
            self._window_check(request)  # raises the window's 429
        if faults.storm_429:
            self._fault(request, "429")
            raise ApiError(429, "Too many requests", self._retry_after(1))
        self._window_check(request)

    def _parse(self, request: web.Request, payload: object, faults: FeatureFaults) -> FeatureParams:
        if isinstance(payload, transport.BadJson):
            raise ApiError(400, f"body: malformed JSON ({payload.reason})")
        params = validate_feature(payload)
        if faults.forget:
            # Like an asset store that expired the upload: the client has to upload again.
            self._fault(request, "forget")
            self.state.assets.pop(params.image_url, None)
        return params

    def _lookup_assets(self, params: FeatureParams) -> tuple[StoredAsset, StoredAsset | None]:
        image = self._find_asset("imageUrl", params.image_url)
        if params.mask_url is None:
            return image, None
        mask = self._find_asset("maskUrl", params.mask_url)
        if (mask.width, mask.height) != (image.width, image.height):
            raise ApiError(
                400,
                f"maskUrl: mask is {mask.width}x{mask.height} but the image is "
                f"{image.width}x{image.height}; they must match exactly",
            )
        return image, mask

    def _find_asset(self, field_name: str, path: str) -> StoredAsset:
        asset = self.state.assets.get(path)
        if asset is None:
            raise ApiError(404, f"{field_name}: asset not found: {path}")
        return asset

    async def _answer_feature(
        self,
        request: web.Request,
        params: FeatureParams,
        image: StoredAsset,
        mask: StoredAsset | None,
        faults: FeatureFaults,
    ) -> web.StreamResponse:
        cost = params.cost
        state = self.state
        if state.used_credit + state.reserved_credit + cost > state.credit_limit:
            raise ApiError(402, "Insufficient credit balance")
        if faults.malformed is not None:
            self._fault(request, "malformed")
            return self._malformed(request, params, faults.malformed)
        record = Record(str(uuid.uuid4()), params, answers.iso_now(), PROCESSING)
        request[_RECORD_KEY].uuid = record.uuid
        if params.asynchronous or faults.processing:
            return self._submit_processing(request, record, image, mask, faults)
        if faults.failed:
            self._fault(request, "failed")
            record.status = faults.failure_word
            return self._record_answer(request, record)
        state.reserved_credit += cost
        try:
            record.paths = await self._render(params, image, mask)
        finally:
            state.reserved_credit -= cost
        self._charge(request, cost)
        state.successes += 1
        record.status = SUCCESS
        return self._record_answer(request, record)

    def _submit_processing(
        self,
        request: web.Request,
        record: Record,
        image: StoredAsset,
        mask: StoredAsset | None,
        faults: FeatureFaults,
    ) -> web.Response:
        """Answer PROCESSING at once; the record finishes `processing_seconds` later (clock)."""
        self._fault(request, "processing")
        record.ready_at = self.clock() + faults.processing_seconds
        if faults.processing_failed or faults.failed:
            record.final_status = faults.failure_word  # free, like a FAILED direct answer
        else:
            # Charged now, once: the edit is bought when submitted, whatever happens to the answer.
            self._charge(request, record.params.cost)
            record.render = asyncio.ensure_future(self._render(record.params, image, mask))
        self.records.add(record)
        return self._record_answer(request, record)

    def _charge(self, request: web.Request, cost: int) -> None:
        self.state.used_credit += cost
        request[_RECORD_KEY].credits = cost

    def _record_succeeded(self, record: Record) -> None:
        self.state.successes += 1

    def _refund(self, record: Record) -> None:
        # Only when a background render broke (never by design): the record ends FAILURE.
        self.state.used_credit -= record.params.cost

    def _record_answer(self, request: web.Request, record: Record) -> web.Response:
        if record.status != PROCESSING and record.uuid not in self.records:
            self.records.add(record)
        request[_RECORD_KEY].record = record.status
        return web.json_response(self._ai_record(request, record))

    async def _handle_result(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/results/{uuid}`: the record as it stands; an unknown uuid is `null`."""
        challenged = self._faults.html_403("results")
        self.state.polls += 1
        if challenged:
            return self._challenged(request)
        self._check_key(request)
        self._window_check(request)
        record_id = request.match_info["uuid"]
        request[_RECORD_KEY].uuid = record_id[:64]
        record = await self.records.current(record_id)
        if record is None:
            return web.json_response({"aiRecord": None})
        request[_RECORD_KEY].record = record.status
        request[_RECORD_KEY].feature_type = record.params.type
        return web.json_response(self._ai_record(request, record))

    async def _render(
        self, params: FeatureParams, image: StoredAsset, mask: StoredAsset | None
    ) -> list[str]:
        edit = EditRequest(
            kind=params.type,
            image=image.source,
            mask=mask.source if mask else None,
            prompt=params.prompt,
            size=params.size,
            n=params.n,
            quality=params.quality,
            output_format=params.output_format if params.type == INPAINTER else "png",
            output_compression=params.output_compression,
            background=params.background,
            drift=self.config.drift,
        )
        results = await self._in_thread(_render_and_digest, self.imager, edit)
        stem = "inpainted" if params.type == INPAINTER else "background_replaced"
        fmt = edit.output_format
        name = f"{stem}.{OUTPUT_EXTENSION[fmt]}"
        width, height = params.size
        return [
            self._store(name, data, digest, OUTPUT_MIME[fmt], width, height).path
            for data, digest in results
        ]

    def _ai_record(self, request: web.Request, record: Record) -> dict[str, Any]:
        now = answers.iso_now()
        temporary_url = None
        if record.status == SUCCESS and record.paths:
            base = FOREIGN_HOST if self.config.foreign_temporary_url else self._base_for(request)
            temporary_url = presign(base, record.paths[0], self._secret)
        return answers.ai_record(
            record_id=record.uuid,
            feature_type=record.params.type,
            prompt_object=record.params.prompt_object,
            status=record.status,
            paths=record.paths if record.status == SUCCESS else [],
            temporary_url=temporary_url,
            team=answers.team_user(self.state.credit_limit, self.state.used_credit, now),
            created_at=record.created_at,
        )

    def _malformed(self, request: web.Request, params: FeatureParams, variant: str) -> web.Response:
        if variant == "half-json":
            text = '{"aiRecord": {"uuid": "'
        elif variant == "not-json":
            text = "not json"
        elif variant == "empty":
            text = ""
        else:
            # A plausible answer cut in the middle, as a proxy that lost the connection might send.
            record = Record(str(uuid.uuid4()), params, answers.iso_now(), SUCCESS)
            full = json.dumps(self._ai_record(request, record))
            text = full[: len(full) // 2]
        return web.Response(text=text, content_type="application/json")

    # ----------------------------------------------------------------- downloads

    async def _handle_asset(self, request: web.Request) -> web.StreamResponse:
        return await self._download(request, temporary=False)

    async def _handle_temporary(self, request: web.Request) -> web.StreamResponse:
        return await self._download(request, temporary=True)

    async def _download(self, request: web.Request, temporary: bool) -> web.StreamResponse:
        faults = self._faults.download(temporary)
        self.state.downloads += 1
        if faults.drop:
            return self._drop(request)
        await self._sleep(self.config.asset_latency)
        path = request.match_info["path"]
        if temporary:
            reason = check_presigned(path, dict(request.query), self._secret)
            if reason is None and faults.expire:
                self._fault(request, "expire")
                reason = "Request has expired"
            if reason is not None:
                return answers.xml_error(403, "AccessDenied", reason)
        asset = self.state.assets.get(path)
        if asset is None:
            return answers.xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if request.method == "HEAD":
            return _asset_response(asset)
        if faults.huge:
            self._fault(request, "huge")
            return await self._stream_huge(request, asset)
        if faults.truncate:
            self._fault(request, "truncate")
            return await _stream_truncated(request, asset)
        return _asset_response(asset)

    async def _stream_huge(self, request: web.Request, asset: StoredAsset) -> web.StreamResponse:
        """An endless-looking body with a matching Content-Length; stops when the client leaves."""
        total = self.config.huge_bytes
        response = web.StreamResponse(headers={"Content-Type": asset.mime})
        response.content_length = total
        await response.prepare(request)
        chunk = bytes(_CHUNK)
        sent = 0
        with contextlib.suppress(*_STREAM_WRITE_ERRORS):
            while (
                sent < total and not self._stopping.is_set() and not transport.client_gone(request)
            ):
                piece = chunk[: min(_CHUNK, total - sent)]
                await response.write(piece)
                sent += len(piece)
        if sent < total and request.transport is not None:
            request.transport.close()
        return response


# --------------------------------------------------------------------- module helpers


def _inspect_and_digest(data: bytes) -> tuple[ImageInfo, str]:
    return inspect_image(data), digest_of(data)


def _render_and_digest(imager: Imager, edit: EditRequest) -> list[tuple[bytes, str]]:
    # Results can be inputs of later calls, so they need a digest too; hash off the loop.
    return [(data, digest_of(data)) for data in imager.render(edit)]


def _asset_response(asset: StoredAsset) -> web.Response:
    return web.Response(body=asset.data, content_type=asset.mime)


async def _stream_truncated(request: web.Request, asset: StoredAsset) -> web.StreamResponse:
    """Promise the full Content-Length, send about half, then hang up."""
    response = web.StreamResponse(headers={"Content-Type": asset.mime})
    response.content_length = len(asset.data)
    await response.prepare(request)
    with contextlib.suppress(*_STREAM_WRITE_ERRORS):
        await response.write(asset.data[: len(asset.data) // 2])
    if request.transport is not None:
        request.transport.close()
    return response
