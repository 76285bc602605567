"""The CDN in front of the API, as a feature call meets it.

A sync call is held open for the whole edit. When the origin has not answered within
`gateway_timeout` seconds, the CDN answers its own HTML 524 page while the origin goes on,
finishes the edit and charges it; the client never learns the record's uuid. The origin's
late answer goes nowhere (its charge shows as "lost" in the charge log).

An answer can also be lost after the origin charged (`rate_lost_after_charge`): the connection
drops, or the CDN answers an HTML 502, 520 or 522 page in its stead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from . import answers
from .context import RECORD_KEY, Context

Origin = Coroutine[Any, Any, web.StreamResponse]


class Gateway:
    def __init__(self, context: Context) -> None:
        self._context = context
        # Origins still working on calls the CDN already answered.
        self._behind: set[asyncio.Future[web.StreamResponse]] = set()

    async def hold(self, request: web.Request, origin: Origin) -> web.StreamResponse:
        """The origin's answer, or the CDN's 524 once its patience ran out first."""
        patience = self._context.config.gateway_timeout
        if patience is None:
            return await origin
        work = asyncio.ensure_future(origin)
        timer = asyncio.ensure_future(self._context.sleep(patience))
        try:
            await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()  # the server is stopping: nobody is left to charge
            raise
        finally:
            timer.cancel()
        if work.done():
            return work.result()
        request[RECORD_KEY].gateway_gave_up = True
        self._context.fault(request, "gateway_524")
        self._behind.add(work)
        work.add_done_callback(self._settled)
        return answers.cdn_error(524)

    def lose(self, request: web.Request, variant: str) -> web.StreamResponse:
        """The answer of a charged edit, lost on its way: a dropped connection or an HTML 5xx."""
        self._context.fault(request, "lost_after_charge")
        if variant == "drop":
            return self._context.hang_up(request)
        return answers.cdn_error(int(variant))

    @property
    def behind(self) -> int:
        """Origins still working on calls the CDN already answered."""
        return len(self._behind)

    async def drain(self) -> None:
        """Wait until every origin the CDN gave up on has finished (and charged)."""
        while self._behind:
            await asyncio.gather(*self._behind, return_exceptions=True)

    def cancel(self) -> None:
        """At shutdown: stop origins nobody will hear from."""
        for work in self._behind:
            work.cancel()

    def _settled(self, work: asyncio.Future[web.StreamResponse]) -> None:
        self._behind.discard(work)
        # Its answer (or refusal) goes nowhere; retrieve it so it is not reported as lost.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            work.exception()
