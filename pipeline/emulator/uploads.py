"""`POST /api/assets`: multipart uploads, checked as images and kept in the asset store."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import answers, transport
from .context import Context
from .imaging import ImageInfo, digest_of, inspect_image
from .state import StoredAsset
from .validation import ApiError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024


class Uploads:
    def __init__(self, context: Context) -> None:
        self._context = context

    async def handle(self, request: web.Request) -> web.StreamResponse:
        context = self._context
        drop = context.faults.upload_drop()
        context.state.uploads += 1
        challenged = context.faults.html_403("assets")
        if drop:
            await transport.discard_body(request)
            return context.drop(request)
        if challenged:
            await transport.discard_body(request)
            return context.challenged(request)
        context.check_key(request)
        context.window_check(request)
        self._check_concurrency(request)
        context.state.uploads_in_flight += 1
        try:
            return await self._store(request)
        finally:
            context.state.uploads_in_flight -= 1

    def _check_concurrency(self, request: web.Request) -> None:
        """At most `upload_concurrency` uploads in flight; one more is refused (it still counted
        in the request window: it reached the API)."""
        context = self._context
        limit = context.config.upload_concurrency
        if limit is None or context.state.uploads_in_flight < limit:
            return
        context.fault(request, "upload_concurrency")
        # The live API's answer beyond its reported limit is not documented. We answer as its
        # gateway does for the other limit it enforces (the request window): a JSON 429 with
        # Retry-After, the answer a client already has to cope with and the likeliest one.
        raise ApiError(429, f"Too many uploads at once (at most {limit})", context.retry_after(1))

    async def _store(self, request: web.Request) -> web.Response:
        context = self._context
        await context.sleep(context.config.asset_latency)
        filename, data = await transport.read_asset_field(request, MAX_UPLOAD_BYTES)
        try:
            info, digest = await context.in_thread(_inspect_and_digest, data)
        except ValueError as exc:
            raise ApiError(400, f"asset: {exc}") from exc
        name = transport.safe_name(filename, info.format)
        asset = context.state.store(name, data, digest, info.mime, info.width, info.height)
        return web.json_response(self._answer(asset, request))

    def _answer(self, asset: StoredAsset, request: web.Request) -> dict[str, Any]:
        created = answers.iso_now()
        location = f"{self._context.base_for(request)}/asset/{asset.path}"
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


def _inspect_and_digest(data: bytes) -> tuple[ImageInfo, str]:
    return inspect_image(data), digest_of(data)
