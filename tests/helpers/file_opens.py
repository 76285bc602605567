"""Which files a piece of code opens, seen by the interpreter itself (audit hooks, PEP 578).

Every ``open()`` (builtins, ``io``, ``os.open``, Pillow's, the CSV reader's) raises the ``open``
audit event with the path, whatever opened it and however it was imported, so a test can prove
that a file was *not* opened without trusting the code under test to report it. An audit hook
cannot be removed: one is installed on first use and records only while ``recording()`` is
active.

Use: ``with recording() as opened: ...`` then ``opened.count(path)`` (paths made real).
``reading(folder)`` counts the bytes read from files instead (``open`` patched: a test's own).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.readings import ReadCounter

_active: list[list[str]] = []
_lock = threading.Lock()
_installed = False


class Opened(list[str]):
    """The real paths opened while recording, in order (one per open)."""

    def count_of(self, path: Path | str) -> int:
        return self.count(os.path.realpath(path))

    def any_of(self, paths: list[Path]) -> list[str]:
        wanted = {os.path.realpath(path) for path in paths}
        return [path for path in self if path in wanted]


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _active:
        return
    path = args[0]
    if isinstance(path, int):
        return  # an already open descriptor
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    for sink in _active:
        sink.append(real)


@contextmanager
def recording() -> Iterator[Opened]:
    """Record the files opened in this process (every thread) until the block ends."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
    opened = Opened()
    _active.append(opened)
    try:
        yield opened
    finally:
        _active.remove(opened)


class BytesRead(dict[str, int]):
    """Bytes read from each file (real paths) while ``reading`` was active."""

    def of(self, path: Path | str) -> int:
        return self.get(os.path.realpath(path), 0)


@contextmanager
def reading(folder: Path) -> Iterator[BytesRead]:
    """Count the bytes read from the files under ``folder`` (every thread) while the block
    runs (``bench.readings.ReadCounter``: the benchmarks' own count)."""
    counter = ReadCounter(folder)
    counts = BytesRead()
    counter.counts = counts
    counter.install()
    try:
        yield counts
    finally:
        counter.uninstall()
