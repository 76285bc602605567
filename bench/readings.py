"""Readings a measured child appends to ``$BENCH_EVENTS``: one JSON line per named moment."""

from __future__ import annotations

import builtins
import io
import os
import resource
import threading
import time
from collections.abc import Callable
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


class ReadCounter:
    """The bytes read from files under ``folder``, by real path, while installed: each binary
    ``open()`` of such a file (builtins, ``io``, pathlib's, Pillow's) gets a raw file that
    counts what its reads return; buffering, seeking and reading stay the standard library's.
    Opens count files; this counts bytes, so a look at a header is told from a whole read.
    Counts are added under a lock: worker threads read too. (The probe's ``read_from``, and
    ``tests.helpers.file_opens.reading``.)"""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.counts: dict[str, int] = {}
        self._root = os.path.join(os.path.realpath(folder), "")
        self._lock = threading.Lock()
        self._original: Callable[..., Any] | None = None

    def install(self) -> None:
        original = self._original = builtins.open
        counter = self

        class CountingFile(io.FileIO):
            real = ""

            def readinto(self, buffer: Any) -> int | None:
                count = super().readinto(buffer)
                counter.add(self.real, count or 0)
                return count

            def readall(self) -> bytes:
                data = super().readall()
                counter.add(self.real, len(data))
                return data

            def read(self, size: int | None = -1) -> bytes:
                data = super().read(size)
                counter.add(self.real, len(data or b""))
                return data

        def counting_open(
            file: Any, mode: str = "r", buffering: int = -1, *args: Any, **kw: Any
        ) -> Any:
            if isinstance(file, str | bytes | os.PathLike) and set(mode) == {"r", "b"}:
                real = os.path.realpath(os.fsdecode(file))
                if real.startswith(counter._root):
                    raw = CountingFile(file, "r")
                    raw.real = real
                    if buffering == 0:
                        return raw
                    size = buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE
                    return io.BufferedReader(raw, size)
            return original(file, mode, buffering, *args, **kw)

        builtins.open = io.open = counting_open

    def uninstall(self) -> None:
        if self._original is not None:
            builtins.open = io.open = self._original
            self._original = None

    def add(self, real: str, count: int) -> None:
        with self._lock:
            self.counts[real] = self.counts.get(real, 0) + count

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())
