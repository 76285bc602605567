"""Asset downloads: the plain asset host and the presigned S3-style temporary URLs.

Downloads are not API requests: no key, no request window; they have faults of their own
(drop, expire, huge, truncate). With `public_assets` off the bucket is private, as the live
one is: an unsigned read answers 403 AccessDenied (for a missing key too, as S3 answers a
reader that may not list the bucket), and only a presigned URL, checked for its own object,
reads anything.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from . import answers, transport
from .context import Context
from .signing import check_presigned
from .state import StoredAsset

_CHUNK = 1 << 20
# What aiohttp raises when writing to a connection the client has closed.
_STREAM_WRITE_ERRORS = (ConnectionError,)


class Downloads:
    def __init__(self, context: Context) -> None:
        self._context = context

    async def handle_asset(self, request: web.Request) -> web.StreamResponse:
        return await self._download(request, temporary=False)

    async def handle_temporary(self, request: web.Request) -> web.StreamResponse:
        return await self._download(request, temporary=True)

    async def _download(self, request: web.Request, temporary: bool) -> web.StreamResponse:
        context = self._context
        faults = context.faults.download(temporary)
        context.state.downloads += 1
        if faults.drop:
            return context.drop(request)
        await context.sleep(context.config.asset_latency)
        path = request.match_info["path"]
        if not temporary and not context.config.public_assets:
            context.fault(request, "private")
            return answers.xml_error(403, "AccessDenied", "Access Denied")
        if temporary:
            reason = check_presigned(path, dict(request.query), context.secret)
            if reason is None and faults.expire:
                context.fault(request, "expire")
                reason = "Request has expired"
            if reason is not None:
                return answers.xml_error(403, "AccessDenied", reason)
        asset = context.state.assets.get(path)
        if asset is None:
            return answers.xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if request.method == "HEAD":
            return _asset_response(asset)
        if faults.huge:
            context.fault(request, "huge")
            return await self._stream_huge(request, asset)
        if faults.truncate:
            context.fault(request, "truncate")
            return await _stream_truncated(request, asset)
        return _asset_response(asset)

    async def _stream_huge(self, request: web.Request, asset: StoredAsset) -> web.StreamResponse:
        """An endless-looking body with a matching Content-Length; stops when the client leaves."""
        total = self._context.config.huge_bytes
        stopping = self._context.stopping
        response = web.StreamResponse(headers={"Content-Type": asset.mime})
        response.content_length = total
        await response.prepare(request)
        chunk = bytes(_CHUNK)
        sent = 0
        with contextlib.suppress(*_STREAM_WRITE_ERRORS):
            while sent < total and not stopping.is_set() and not transport.client_gone(request):
                piece = chunk[: min(_CHUNK, total - sent)]
                await response.write(piece)
                sent += len(piece)
        if sent < total and request.transport is not None:
            request.transport.close()
        return response


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
