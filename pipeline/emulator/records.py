"""AI records the emulator has answered, and the life of those still processing.

A record answered PROCESSING finishes `edit_seconds` (with its jitter) after its submission,
measured on the server's clock (injectable, so tests move time instead of sleeping). It becomes
what was decided at submission: SUCCESS (its rendering started in the background at once, and
its results exist before any answer says SUCCESS) or FAILED/FAILURE. A record changes state when
it is looked at (`current`), which is the only time anyone can tell.

Credits are charged once, at submission, and only for a record that will succeed: a record bound
to fail is free, as a FAILED answer of a direct call is. So the request log's `credits` sits on
the feature call that bought the edit, and a feature call whose answer was lost still shows as
bought, exactly what a client must avoid repeating.

What an answer calls the state is the record's own `words` (seed words, or the live ones).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .validation import FeatureParams
from .words import SEED_WORDS, StatusWords

PROCESSING = "PROCESSING"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"


@dataclass
class Record:
    """One AI record: what a poll of `GET /api/results/{uuid}` answers about it."""

    uuid: str
    params: FeatureParams
    created_at: str
    status: str
    paths: list[str] = field(default_factory=list)
    # For a PROCESSING record: when (server clock) it finishes, and what it becomes then.
    ready_at: float | None = None
    final_status: str = SUCCESS
    render: asyncio.Task[list[str]] | None = None
    words: StatusWords = SEED_WORDS

    @property
    def failed(self) -> bool:
        return self.status not in (SUCCESS, PROCESSING)

    @property
    def word(self) -> str:
        """The status word an answer gives for the record as it stands."""
        if self.status == SUCCESS:
            return self.words.finished
        if self.status == PROCESSING:
            return self.words.unfinished
        return self.words.failed


class RecordBook:
    """Every record by uuid; settles processing records as the clock passes their time."""

    def __init__(
        self,
        clock: Callable[[], float],
        on_success: Callable[[Record], None],
        on_broken: Callable[[Record], None],
    ) -> None:
        self._clock = clock
        self._on_success = on_success
        self._on_broken = on_broken
        self._records: dict[str, Record] = {}

    def add(self, record: Record) -> None:
        self._records[record.uuid] = record
        if record.render is not None:
            # Retrieve a failed render's exception even if nobody ever polls the record.
            record.render.add_done_callback(_quiet)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._records

    @property
    def processing(self) -> int:
        return sum(record.status == PROCESSING for record in self._records.values())

    async def current(self, record_id: str) -> Record | None:
        """The record as it stands now (None if unknown), finishing it if its time has come."""
        record = self._records.get(record_id)
        if record is None or record.status != PROCESSING:
            return record
        assert record.ready_at is not None
        if self._clock() < record.ready_at:
            return record
        if record.final_status != SUCCESS:
            record.status = record.final_status
            return record
        assert record.render is not None
        try:
            # Usually done long ago; if not, the record is not SUCCESS before its results exist.
            paths = await asyncio.shield(record.render)
        except Exception:
            paths = None
        if record.status != PROCESSING:  # a concurrent poll finished it meanwhile
            return record
        if paths is None:
            record.status = FAILURE
            self._on_broken(record)
        else:
            record.paths = paths
            record.status = SUCCESS
            self._on_success(record)
        return record

    def cancel_renders(self) -> None:
        """At shutdown: stop background renders nobody will collect."""
        for record in self._records.values():
            if record.render is not None and not record.render.done():
                record.render.cancel()


def _quiet(task: asyncio.Task[list[str]]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.exception()
