"""Time the emulator can be given: a clock and a sleep that move only when a test says so.

`server.use_time(ManualTime())` makes every wait of the emulator (latency, edits, the CDN's
patience, uploads) and every moment it reads (records, the request window) follow the test's
`advance()`, so a 100 s gateway or a 60 s edit costs a test no time at all.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class ManualTime:
    """A clock (call it) and an async `sleep`, moved by `advance(seconds)`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._arrived: asyncio.Event | None = None

    def __call__(self) -> float:
        return self.now

    @property
    def sleeping(self) -> int:
        """Sleeps still waiting for their moment."""
        return sum(not future.done() for _, _, future in self._sleepers)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        self._event().set()
        await future

    def advance(self, seconds: float) -> None:
        """Move the clock on and wake every sleep whose moment has come."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def wait_for_sleepers(self, count: int) -> None:
        """Return once at least `count` sleeps wait (requests reached their waits)."""
        event = self._event()
        while self.sleeping < count:
            event.clear()
            await event.wait()

    def _event(self) -> asyncio.Event:
        # Made on first use, inside the running loop.
        if self._arrived is None:
            self._arrived = asyncio.Event()
        return self._arrived
