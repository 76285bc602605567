"""The rolling window that answers 429 beyond the account's limit of API requests (uploads,
feature calls and result polls together, as the real API counts them)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class RollingWindow:
    """Admits at most `capacity` calls in any `period` seconds.

    Only admitted calls are recorded, so a client that keeps knocking while limited does not
    push its own next slot further away (the same as most API gateways).
    """

    def __init__(
        self,
        limit: float,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # A fractional limit cannot admit a fraction of a call; round down, but admit at least one.
        self.capacity = max(1, math.floor(limit))
        self.period = period
        self.clock = clock
        self._admitted: deque[float] = deque()

    def wait_time(self) -> float | None:
        """Seconds until a slot frees, or None if a call may go now."""
        now = self.clock()
        while self._admitted and self._admitted[0] <= now - self.period:
            self._admitted.popleft()
        if len(self._admitted) < self.capacity:
            return None
        return self._admitted[0] + self.period - now

    def admit(self) -> None:
        self._admitted.append(self.clock())

    def __len__(self) -> int:
        return len(self._admitted)
