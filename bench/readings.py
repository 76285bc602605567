"""Readings a measured child appends to ``$BENCH_EVENTS``: one JSON line per named moment."""

from __future__ import annotations

import resource
import time
from typing import Any

import orjson

EVENTS_ENV = "BENCH_EVENTS"


def peak_rss_kb(usage: resource.struct_rusage) -> int:
    """This process's own peak resident memory: ``VmHWM`` of its address space.

    Not ``ru_maxrss``: Linux carries a parent's high-water mark across fork and exec into the
    child's, so a child of the (large) bench runner would report at least the runner's size.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return usage.ru_maxrss  # not Linux: the best there is


def io_counters() -> dict[str, int]:
    """This process's ``rchar`` (bytes its read calls returned, from files, sockets and the page
    cache alike) and ``read_bytes`` (bytes fetched from storage for it), from /proc/self/io."""
    counters: dict[str, int] = {}
    try:
        with open("/proc/self/io", "rb") as io_file:
            for line in io_file:
                name, _, value = line.partition(b":")
                if name in (b"rchar", b"read_bytes"):
                    counters[name.decode()] = int(value)
    except OSError:
        pass  # not Linux: no reading
    return counters


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
            "maxrss_kb": peak_rss_kb(usage),
            **io_counters(),
            **extra,
        }
        with open(self._path, "ab") as sink:
            sink.write(orjson.dumps(line) + b"\n")
