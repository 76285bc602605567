"""fsync off the event loop, in batches: the ledger file and the folders outputs were renamed in.

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
import threading
from pathlib import Path

SYNC_INTERVAL = 1.0


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
