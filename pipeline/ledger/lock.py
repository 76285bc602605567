"""The output folder's lock: an exclusive ``flock`` on ``OUT/.lock`` for the life of a run.

The kernel drops a ``flock`` when its holder dies, however it dies, so a lock left by a killed
run is simply taken over: there is no stale pid file and no pid-reuse race.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pipeline.errors import LockError
from pipeline.layout import LOCK_NAME


class OutputLock:
    """An exclusive ``flock`` on ``OUT/.lock`` for the life of a run."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockError(
                f"{self.path.parent} is in use by another run (pid {holder}); "
                "wait for it to finish or use another --out"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
