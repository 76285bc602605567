"""The origin's edit: render for `edit_seconds`, charge, and answer (or lose the answer).

A sync call is held open while the edit renders; the charge is booked when it is done, marked
"sync" if the answer then goes out, "lost" if the CDN already gave up (524), the client hung
up, or the answer is lost after the charge. An unfinished record (`"async": true`, honoured, or
`rate_processing`) is charged at submission and answered PROCESSING at once; it renders in the
background and finishes `edit_seconds` later on the server's clock (see records.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import answers, transport
from .charges import REFUND, Charge
from .context import RECORD_KEY, Context
from .faults import FeatureFaults
from .gateway import Gateway
from .imaging import OUTPUT_EXTENSION, OUTPUT_MIME, EditRequest, Imager, digest_of
from .records import SUCCESS, Record, RecordBook
from .results import RecordViews
from .state import StoredAsset
from .validation import INPAINTER, FeatureParams


class Editor:
    def __init__(
        self, context: Context, imager: Imager, gateway: Gateway, views: RecordViews
    ) -> None:
        self._context = context
        self._state = context.state
        self.imager = imager
        self._gateway = gateway
        self._views = views
        self.records = RecordBook(
            lambda: context.clock(), on_success=self._record_succeeded, on_broken=self._refund
        )

    async def sync(
        self,
        request: web.Request,
        record: Record,
        image: StoredAsset,
        mask: StoredAsset | None,
        faults: FeatureFaults,
    ) -> web.StreamResponse:
        """Hold the call for the edit's duration, charge, answer SUCCESS."""
        state = self._state
        cost = record.params.cost
        state.reserved_credit += cost
        render = asyncio.ensure_future(self._render(record.params, image, mask))
        try:
            # The render itself runs meanwhile; the edit takes what the origin's time says.
            await self._context.sleep(faults.edit_seconds)
            record.paths = await render
        except BaseException:
            render.cancel()
            raise
        finally:
            state.reserved_credit -= cost
        self._charge(request, record, "lost" if self._lost(request, faults) else "sync")
        state.successes += 1
        record.status = SUCCESS
        self.records.add(record)
        if faults.lost_after_charge is not None:
            return self._gateway.lose(request, faults.lost_after_charge)
        return self._views.answer(request, record)

    def submit(
        self,
        request: web.Request,
        record: Record,
        image: StoredAsset,
        mask: StoredAsset | None,
        faults: FeatureFaults,
    ) -> web.StreamResponse:
        """Answer PROCESSING at once; the record finishes `edit_seconds` later (clock)."""
        self._context.fault(request, "processing")
        record.ready_at = self._context.clock() + faults.edit_seconds
        charged = not (faults.processing_failed or faults.failed)
        if charged:
            # Charged now, once: the edit is bought when submitted, whatever happens to the answer.
            self._charge(request, record, "lost" if self._lost(request, faults) else "async")
            record.render = asyncio.ensure_future(self._render(record.params, image, mask))
        else:
            record.final_status = faults.failure_word  # free, like a FAILED direct answer
        self.records.add(record)
        if charged and faults.lost_after_charge is not None:
            return self._gateway.lose(request, faults.lost_after_charge)
        return self._views.answer(request, record)

    def failed(self, request: web.Request, record: Record, faults: FeatureFaults) -> web.Response:
        """A record that failed at once: free."""
        self._context.fault(request, "failed")
        record.status = faults.failure_word
        self.records.add(record)
        return self._views.answer(request, record)

    def _lost(self, request: web.Request, faults: FeatureFaults) -> bool:
        """Whether the answer of this charged edit will never reach the client."""
        gave_up = request[RECORD_KEY].gateway_gave_up
        return gave_up or transport.client_gone(request) or faults.lost_after_charge is not None

    def _charge(self, request: web.Request, record: Record, answered: str) -> None:
        params = record.params
        before = self._state.charge(self._charge_of(record, params.cost, answered))
        request[RECORD_KEY].credits = params.cost
        request[RECORD_KEY].used_before = before

    def _charge_of(self, record: Record, cost: int, answered: str) -> Charge:
        params = record.params
        return Charge(
            uuid=record.uuid,
            feature_type=params.type,
            cost=cost,
            n=params.n,
            prompt=params.prompt,
            image_url=params.image_url,
            at=self._context.clock(),
            ts=answers.iso_now(),
            answered=answered,
        )

    def _record_succeeded(self, record: Record) -> None:
        self._state.successes += 1

    def _refund(self, record: Record) -> None:
        # Only when a background render broke (never by design): the record ends FAILURE.
        self._state.charge(self._charge_of(record, -record.params.cost, REFUND))

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


def _render_and_digest(imager: Imager, edit: EditRequest) -> list[tuple[bytes, str]]:
    # Results can be inputs of later calls, so they need a digest too; hash off the loop.
    return [(data, digest_of(data)) for data in imager.render(edit)]
