"""`POST /api/features` and `GET /api/results/{uuid}`: the edits, their records and credits.

A feature call goes through these steps, in this order (each may end it):
read body -> drop -> CDN challenge (HTML 403) -> API key (401/403) -> request window (429)
-> random 429 -> latency -> random 5xx -> validation (400; `forget` deletes the image asset here)
-> asset lookup (404) and mask size (400) -> slow -> credits (402) -> malformed
-> PROCESSING (`"async": true` or `rate_processing`: charge, render in the background, 200)
-> FAILED/FAILURE -> render, store, charge -> 200.
Nothing is charged unless the record succeeds; dropped, malformed and failed calls are free, so
the client's own credit accounting can be checked exactly against `used_credit`. A processing
record is charged at submission (see records.py), once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web

from . import answers, transport
from .context import RECORD_KEY, Context
from .faults import FeatureFaults
from .imaging import OUTPUT_EXTENSION, OUTPUT_MIME, EditRequest, Imager, digest_of
from .records import PROCESSING, SUCCESS, Record, RecordBook
from .signing import presign
from .state import StoredAsset
from .validation import INPAINTER, ApiError, FeatureParams, validate_feature

FOREIGN_HOST = "http://203.0.113.1"  # TEST-NET-3: never routable, like a misconfigured server


class Features:
    def __init__(self, context: Context, imager: Imager) -> None:
        self._context = context
        self._state = context.state
        self.imager = imager
        self.records = RecordBook(
            lambda: context.clock(), on_success=self._record_succeeded, on_broken=self._refund
        )

    async def handle_feature(self, request: web.Request) -> web.StreamResponse:
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

    async def handle_result(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/results/{uuid}`: the record as it stands; an unknown uuid is `null`."""
        context = self._context
        challenged = context.faults.html_403("results")
        self._state.polls += 1
        if challenged:
            return context.challenged(request)
        context.check_key(request)
        context.window_check(request)
        record_id = request.match_info["uuid"]
        request[RECORD_KEY].uuid = record_id[:64]
        record = await self.records.current(record_id)
        if record is None:
            return web.json_response({"aiRecord": None})
        request[RECORD_KEY].record = record.status
        request[RECORD_KEY].feature_type = record.params.type
        return web.json_response(self._ai_record(request, record))

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
        params = validate_feature(payload)
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
        cost = params.cost
        state = self._state
        if state.used_credit + state.reserved_credit + cost > state.credit_limit:
            raise ApiError(402, "Insufficient credit balance")
        if faults.malformed is not None:
            self._context.fault(request, "malformed")
            return self._malformed(request, params, faults.malformed)
        record = Record(str(uuid.uuid4()), params, answers.iso_now(), PROCESSING)
        request[RECORD_KEY].uuid = record.uuid
        if params.asynchronous or faults.processing:
            return self._submit_processing(request, record, image, mask, faults)
        if faults.failed:
            self._context.fault(request, "failed")
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
        self._context.fault(request, "processing")
        record.ready_at = self._context.clock() + faults.processing_seconds
        if faults.processing_failed or faults.failed:
            record.final_status = faults.failure_word  # free, like a FAILED direct answer
        else:
            # Charged now, once: the edit is bought when submitted, whatever happens to the answer.
            self._charge(request, record.params.cost)
            record.render = asyncio.ensure_future(self._render(record.params, image, mask))
        self.records.add(record)
        return self._record_answer(request, record)

    def _charge(self, request: web.Request, cost: int) -> None:
        self._state.used_credit += cost
        request[RECORD_KEY].credits = cost

    def _record_succeeded(self, record: Record) -> None:
        self._state.successes += 1

    def _refund(self, record: Record) -> None:
        # Only when a background render broke (never by design): the record ends FAILURE.
        self._state.used_credit -= record.params.cost

    def _record_answer(self, request: web.Request, record: Record) -> web.Response:
        if record.status != PROCESSING and record.uuid not in self.records:
            self.records.add(record)
        request[RECORD_KEY].record = record.status
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
            drift=self._context.config.drift,
        )
        results = await self._context.in_thread(_render_and_digest, self.imager, edit)
        stem = "inpainted" if params.type == INPAINTER else "background_replaced"
        fmt = edit.output_format
        name = f"{stem}.{OUTPUT_EXTENSION[fmt]}"
        width, height = params.size
        return [
            self._state.store(name, data, digest, OUTPUT_MIME[fmt], width, height).path
            for data, digest in results
        ]

    def _ai_record(self, request: web.Request, record: Record) -> dict[str, Any]:
        context = self._context
        now = answers.iso_now()
        temporary_url = None
        if record.status == SUCCESS and record.paths:
            foreign = context.config.foreign_temporary_url
            base = FOREIGN_HOST if foreign else context.base_for(request)
            temporary_url = presign(base, record.paths[0], context.secret)
        return answers.ai_record(
            record_id=record.uuid,
            feature_type=record.params.type,
            prompt_object=record.params.prompt_object,
            status=record.status,
            paths=record.paths if record.status == SUCCESS else [],
            temporary_url=temporary_url,
            team=answers.team_user(self._state.credit_limit, self._state.used_credit, now),
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


def _render_and_digest(imager: Imager, edit: EditRequest) -> list[tuple[bytes, str]]:
    # Results can be inputs of later calls, so they need a digest too; hash off the loop.
    return [(data, digest_of(data)) for data in imager.render(edit)]
