"""`POST /api/features`: the order of a feature call's checks, up to the edit.

A feature call goes through these steps, in this order (each may end it):
read body -> drop -> CDN challenge (HTML 403)
-> [from here the CDN waits at most `gateway_timeout`: beyond, its HTML 524, and the origin
   goes on regardless (gateway.py)]
-> API key (401/403) -> request window (429) -> random 429 -> latency -> random 5xx
-> validation (400; with `require_all_params` every seed-table parameter is required;
   `forget` deletes the image asset here) -> asset lookup (404) and mask size (400) -> slow
-> credits (402: the member's cap or the team's balance) -> provider busy (400
   EXTERNAL_API_RESPONSE_WITH_ERROR, free) -> malformed
-> unfinished record (`"async": true` when `honour_async`, or `rate_processing`: charge,
   render in the background, 200 PROCESSING at once)
-> FAILED/FAILURE (free) -> edit (held `edit_seconds`), render, store, charge -> 200 SUCCESS
-> an answer lost after the charge (`rate_lost_after_charge`: dropped, or HTML 502/520/522).
Nothing is charged unless the edit succeeds; dropped, refused, malformed and failed calls are
free, so the client's own credit accounting can be checked exactly against the charge log
(state.charges). A charged edit whose answer never reached the client shows there as "lost".
"""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from . import answers, transport
from .context import RECORD_KEY, Context
from .editing import Editor
from .faults import FeatureFaults
from .gateway import Gateway
from .records import PROCESSING, SUCCESS, Record
from .results import RecordViews
from .state import StoredAsset
from .validation import ApiError, FeatureParams, validate_feature
from .words import BUSY_ERROR_CODE


class Features:
    def __init__(
        self, context: Context, editor: Editor, gateway: Gateway, views: RecordViews
    ) -> None:
        self._context = context
        self._state = context.state
        self._editor = editor
        self._gateway = gateway
        self._views = views

    async def handle(self, request: web.Request) -> web.StreamResponse:
        context = self._context
        # Decide the whole fate before the first await: the fault sequence follows arrival order.
        faults = context.faults.feature()
        self._state.feature_calls += 1
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(413, "body: request body is too large") from exc
        payload = transport.decode_json(body)
        if isinstance(payload, dict) and isinstance(payload.get("type"), str):
            # Logged even when the call is refused before validation (401, 429, 5xx).
            request[RECORD_KEY].feature_type = payload["type"][:40]
        if faults.drop:
            return context.drop(request)
        if faults.html_403:
            return context.challenged(request)
        return await self._gateway.hold(request, self._origin(request, payload, faults))

    async def _origin(
        self, request: web.Request, payload: object, faults: FeatureFaults
    ) -> web.StreamResponse:
        """What the API's own server does with the call, behind the CDN."""
        context = self._context
        context.check_key(request)
        self._admit(request, faults)
        await context.sleep(context.config.latency + faults.jitter)
        if faults.server_error is not None:
            context.fault(request, "5xx")
            return answers.server_error(faults.server_error, faults.error_shape)
        params = self._parse(request, payload, faults)
        image, mask = self._lookup_assets(params)
        if faults.slow:
            context.fault(request, "slow")
            await context.sleep(context.config.slow_seconds)
            if transport.client_gone(request):
                # Best effort: nobody will read the answer, so do not do (or charge) the work.
                request[RECORD_KEY].dropped = True
                return web.Response(status=499)
        return await self._answer(request, params, image, mask, faults)

    def _admit(self, request: web.Request, faults: FeatureFaults) -> None:
        """Rolling-window limit, then the random 429 storm; only admitted calls count."""
        context = self._context
        if context.window_full():
            context.window_check(request)  # raises the window's 429
        if faults.storm_429:
            context.fault(request, "429")
            raise ApiError(429, "Too many requests", context.retry_after(1))
        context.window_check(request)

    def _parse(self, request: web.Request, payload: object, faults: FeatureFaults) -> FeatureParams:
        if isinstance(payload, transport.BadJson):
            raise ApiError(400, f"body: malformed JSON ({payload.reason})")
        params = validate_feature(payload, self._context.config.require_all_params)
        if faults.forget:
            # Like an asset store that expired the upload: the client has to upload again.
            self._context.fault(request, "forget")
            self._state.assets.pop(params.image_url, None)
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
        asset = self._state.assets.get(path)
        if asset is None:
            raise ApiError(404, f"{field_name}: asset not found: {path}")
        return asset

    async def _answer(
        self,
        request: web.Request,
        params: FeatureParams,
        image: StoredAsset,
        mask: StoredAsset | None,
        faults: FeatureFaults,
    ) -> web.StreamResponse:
        context = self._context
        if not self._state.can_afford(params.cost):
            raise ApiError(402, "Insufficient credit balance")
        if faults.busy is not None:
            # The provider behind the API refused; the canned words hide its cause in details.
            context.fault(request, "busy_400")
            busy = faults.busy
            details = answers.provider_details(busy.cause, busy.cause_code)
            raise ApiError(400, busy.message, code=BUSY_ERROR_CODE, details=details, live=True)
        if faults.malformed is not None:
            context.fault(request, "malformed")
            return self._malformed(request, params, faults.malformed)
        record = Record(
            str(uuid.uuid4()), params, answers.iso_now(), PROCESSING, words=faults.words
        )
        request[RECORD_KEY].uuid = record.uuid
        asynchronous = params.asynchronous and context.config.honour_async
        if asynchronous or faults.processing:
            return self._editor.submit(request, record, image, mask, faults)
        if faults.failed:
            return self._editor.failed(request, record, faults)
        return await self._editor.sync(request, record, image, mask, faults)

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
            full = json.dumps(self._views.ai_record(request, record))
            text = full[: len(full) // 2]
        return web.Response(text=text, content_type="application/json")
