"""Files written whole (``atomic_write``), and fsyncs off the event loop, in batches.

Every file this tool writes whole (summaries, the report, thumbnails, marked or composited
results, cached inputs) goes through ``atomic_file``: a temporary name beside the target, then
one rename, so a reader (or a run after a crash) sees the old file or the new one, never half.

The ledger file and the folders outputs were renamed in are fsynced in batches by ``Syncer``.

A rename is whole at once for every later reader, and a line flushed to the ledger survives a
killed process: the kernel has both. What an fsync adds is survival of a power loss or an OS
crash, and it costs milliseconds each (7-9 ms per job when the output folder was fsynced on
the event loop, every worker waiting). So the run's fsyncs go to one background thread, which
every ``interval`` seconds, or sooner when nudged, syncs the folders first and the ledger last:
after a power loss, a ledger line that says an output exists has its folder entry on disk with
it, or is one of the last second's lines, which a resumed run re-checks (a missing output is
fetched again from its stored result, never bought again).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

SYNC_INTERVAL = 1.0


@contextlib.contextmanager
def atomic_file(
    path: Path, *, sync: bool = False, temp_name: str | None = None
) -> Iterator[BinaryIO]:
    """A binary handle whose bytes land at ``path`` whole, or not at all.

    Written under a temporary name in the same folder (``temp_name``, or ``.<name>.<random>.tmp``;
    mode from the umask, like any file), then renamed over ``path``; the temporary is removed if
    the writer fails. ``sync``: fsync the file before the rename and the folder after it (power
    loss), for files whose loss would cost more than a re-run's rewrite.
    """
    temp = path.with_name(temp_name or f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("xb") as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def atomic_write(
    path: Path,
    data: bytes | Iterable[bytes | memoryview],
    *,
    sync: bool = False,
    temp_name: str | None = None,
) -> int:
    """Write ``data`` (bytes, or pieces of it) to ``path`` whole (``atomic_file``); its size."""
    with atomic_file(path, sync=sync, temp_name=temp_name) as handle:
        if isinstance(data, bytes | bytearray | memoryview):
            handle.write(data)
        else:
            handle.writelines(data)
        return handle.tell()


def fsync_dir(folder: Path | str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    """One background thread that fsyncs registered files and dirtied folders in batches."""

    def __init__(self, interval: float = SYNC_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        self._files: list[int] = []
        self._wake = threading.Event()
        self._closing = False
        self.syncs = 0  # batches done, for tests
        self.errors: list[OSError] = []  # kept, not raised: the next batch tries again
        self._thread = threading.Thread(target=self._loop, name="fsync", daemon=True)
        self._thread.start()

    def watch(self, fd: int) -> None:
        """fsync this file descriptor in every batch (the ledger's)."""
        with self._lock:
            self._files.append(fd)

    def unwatch(self, fd: int) -> None:
        with self._lock:
            if fd in self._files:
                self._files.remove(fd)

    def dirty(self, folder: Path | str) -> None:
        """A file was renamed into ``folder``: its entry goes to disk with the next batch."""
        with self._lock:
            self._dirs.add(os.fspath(folder))

    def nudge(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._closing:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.sync()

    def sync(self) -> None:
        with self._lock:
            dirs, self._dirs = self._dirs, set()
            files = list(self._files)
        for folder in sorted(dirs):
            try:
                fsync_dir(folder)
            except FileNotFoundError:
                pass  # moved aside since (superseded): nothing to make durable there
            except OSError as exc:
                self.errors.append(exc)
        for fd in files:
            try:
                os.fsync(fd)
            except OSError as exc:
                self.errors.append(exc)
        self.syncs += 1

    def close(self) -> None:
        """Stop the thread after one last batch, in the caller's thread."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sync()
