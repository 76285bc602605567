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

import builtins
import io
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    runs: each binary ``open()`` of such a file (builtins, ``io``, pathlib's, Pillow's) gets
    a raw file that counts what its reads return. Opens counts files; this counts bytes, so a
    look at a header is told from a read of the whole file."""
    counts = BytesRead()
    lock = threading.Lock()
    root = os.path.realpath(folder) + os.sep
    original = builtins.open

    class CountingFile(io.FileIO):
        real = ""

        def _count(self, count: int) -> None:
            with lock:
                counts[self.real] = counts.get(self.real, 0) + count

        def readinto(self, buffer: Any) -> int | None:
            count = super().readinto(buffer)
            self._count(count or 0)
            return count

        def readall(self) -> bytes:
            data = super().readall()
            self._count(len(data))
            return data

        def read(self, size: int | None = -1) -> bytes | None:
            data = super().read(size)
            self._count(len(data or b""))
            return data

    def counting_open(
        file: Any, mode: str = "r", buffering: int = -1, *args: Any, **kw: Any
    ) -> Any:
        if isinstance(file, str | bytes | os.PathLike) and set(mode) == {"r", "b"}:
            real = os.path.realpath(os.fsdecode(file))
            if real.startswith(root):
                raw = CountingFile(file, "r")
                raw.real = real
                if buffering == 0:
                    return raw
                return io.BufferedReader(
                    raw, buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE
                )
        return original(file, mode, buffering, *args, **kw)

    builtins.open = io.open = counting_open  # type: ignore[assignment]
    try:
        yield counts
    finally:
        builtins.open = io.open = original
