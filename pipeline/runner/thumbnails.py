"""The report's source thumbnails made from the bytes preflight read, so a first run opens each
photo for its check and its upload only, not a third time for the report.

Preflight tells ``SourceThumbnails`` of every local image it reads (``Preflight(on_image_read=
...)``); a worker thread makes the plain thumbnail exactly as the report would (the same name,
``review.thumbs.thumb_name``, and the same recipe, ``review.thumbs.load_small``) and writes it
to the thumbnail folder, where the report and the run's thumbnail listener find it made. The
queue is short and bounded in bytes, so at most a few photos' bytes wait in memory; a photo too
large to hold is left to the report. Pillow releases the GIL while it decodes and encodes, so
the thumbnails are made beside the checks, on the other core.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
from pathlib import Path

from pipeline.durability import atomic_file
from pipeline.layout import THUMBS_DIR
from pipeline.review.thumbs import THUMB_QUALITY, Input, load_small, stat_file, thumb_name

QUEUE_SIZE = 4  # photos waiting for their thumbnail; preflight waits when the queue is full
LARGEST = 16 * 1024 * 1024  # bytes: a larger photo's thumbnail is the report's (read again)


class SourceThumbnails:
    """Preflight's ``on_image_read``: each photo's plain thumbnail from the bytes read."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / THUMBS_DIR
        self.made = 0
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._existing: set[str] | None = None  # listed by the worker, once
        self._lock = threading.Lock()  # the worker's and ``make_now``'s callers' turns
        self._thread = threading.Thread(target=self._work, name="source-thumbnails", daemon=True)
        self._thread.start()

    def __call__(self, path: str, data: bytes) -> None:
        if len(data) <= LARGEST:
            self._queue.put((path, data))

    def make_now(self, path: str, data: bytes) -> None:
        """Make the thumbnail on the calling thread (a first run's photo read by its upload:
        ``runner.photos``); never raises (the report tries again)."""
        if len(data) <= LARGEST:
            with self._lock, contextlib.suppress(Exception):
                self._make(path, data)

    def wait(self) -> None:
        """Until what preflight queued is made (before the run starts: its thumbnail listener
        then finds them made, and reads no photo again)."""
        self._queue.join()

    def close(self) -> None:
        """Make what is queued, then stop (before the run starts: the report sees them all)."""
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> SourceThumbnails:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            # An undecodable photo or a full disk: the report tries again.
            with self._lock, contextlib.suppress(Exception):
                self._make(*item)
            self._queue.task_done()
        self._queue.task_done()

    def _make(self, path: str, data: bytes) -> None:
        source = Input("file", os.path.basename(path), path, stat_file(path))
        if source.stat is None or source.stat.st_size != len(data):
            return  # gone or changed since it was read: the report makes its own
        name = thumb_name(source)
        if self._existing is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._existing = {entry.name for entry in os.scandir(self.dir)}
        if name in self._existing:
            return
        image, _has_alpha = load_small(io.BytesIO(data))  # type: ignore[arg-type]
        with atomic_file(self.dir / name) as handle:
            image.save(handle, "WEBP", quality=THUMB_QUALITY, method=0)  # as the report saves
        self._existing.add(name)
        self.made += 1
