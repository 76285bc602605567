"""`GET /api/results/{uuid}`, and how any answer shows a record.

Every answer of a finished record (the feature call's and every poll's) carries a freshly signed
`temporaryUrl` of the record's first result, so a client that lost or let expire the first URL
polls once more for a new one; the other results have no signed URL at all. With `credit_lag`,
`teamUser.usedCredit` shows the member's spend before the call it answers, as the live API's
does; `creditLimit` is the member's cap, whatever the team's balance.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import answers
from .context import RECORD_KEY, Context
from .records import SUCCESS, Record, RecordBook
from .signing import presign

FOREIGN_HOST = "http://203.0.113.1"  # TEST-NET-3: never routable, like a misconfigured server


class RecordViews:
    """Turns records into answers, for feature calls and polls alike."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def answer(self, request: web.Request, record: Record) -> web.Response:
        request[RECORD_KEY].record = record.word
        return web.json_response(self.ai_record(request, record))

    def ai_record(self, request: web.Request, record: Record) -> dict[str, Any]:
        context = self._context
        finished = record.status == SUCCESS
        temporary_url = None
        if finished and record.paths:
            foreign = context.config.foreign_temporary_url
            base = FOREIGN_HOST if foreign else context.base_for(request)
            temporary_url = presign(base, record.paths[0], context.secret)
        return answers.ai_record(
            record_id=record.uuid,
            feature_type=record.params.type,
            prompt_object=record.params.prompt_object,
            status=record.word,
            failed=record.failed,
            paths=record.paths if finished else [],
            temporary_url=temporary_url,
            team=answers.team_user(
                context.state.credit_limit, self._used_credit(request), answers.iso_now()
            ),
            created_at=record.created_at,
        )

    def _used_credit(self, request: web.Request) -> int:
        before = request[RECORD_KEY].used_before
        if self._context.config.credit_lag and before is not None:
            return before
        return self._context.state.used_credit


class Results:
    """`GET /api/results/{uuid}`: the record as it stands; an unknown uuid is `null`."""

    def __init__(self, context: Context, records: RecordBook, views: RecordViews) -> None:
        self._context = context
        self._records = records
        self._views = views

    async def handle(self, request: web.Request) -> web.StreamResponse:
        context = self._context
        challenged = context.faults.html_403("results")
        context.state.polls += 1
        if challenged:
            return context.challenged(request)
        context.check_key(request)
        context.window_check(request)
        record_id = request.match_info["uuid"]
        request[RECORD_KEY].uuid = record_id[:64]
        record = await self._records.current(record_id)
        if record is None:
            return web.json_response({"aiRecord": None})
        request[RECORD_KEY].feature_type = record.params.type
        return self._views.answer(request, record)
