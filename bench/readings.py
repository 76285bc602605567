"""Readings a measured child appends to ``$BENCH_EVENTS``: one JSON line per named moment."""

from __future__ import annotations

import resource
import time
from typing import Any

import orjson

EVENTS_ENV = "BENCH_EVENTS"


class Events:
    """Appends readings to a file (or nothing when no file is named)."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._seen: set[str] = set()

    def note(self, name: str, **extra: Any) -> None:
        """Append one reading; a name is noted only the first time."""
        if self._path is None or name in self._seen:
            return
        self._seen.add(name)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        line = {
            "event": name,
            "t": time.time(),
            "cpu": usage.ru_utime + usage.ru_stime,
            "user": usage.ru_utime,
            "maxrss_kb": usage.ru_maxrss,
            **extra,
        }
        with open(self._path, "ab") as sink:
            sink.write(orjson.dumps(line) + b"\n")
