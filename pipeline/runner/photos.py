"""``FirstReads``: the scheduler's ``PhotoReader`` for a first run's new photos.

The plan glanced at each such photo (its header and end: ``preflight.files.glance_facts``) and
left it unread (``models.UnreadImage``), so the photo is read once, here, at its job's start:
the bytes are hashed, checked in full (the decode preflight would have done) and made into the
report's thumbnail on a worker thread, then remembered in the stat cache on the event loop's
thread (the cache is single-threaded), and uploaded by the scheduler from the same bytes. A
photo this run read already (two rows, one file) is not read again: the stat cache answers.
"""

from __future__ import annotations

import asyncio
import os

from pipeline.preflight.files import ImageFacts
from pipeline.preflight.reader import InputReader, PhotoRead, Verdict
from pipeline.runner.thumbnails import SourceThumbnails
from pipeline.scheduler import PhotoBytes


class FirstReads:
    """Reads each unread photo once (see the module)."""

    def __init__(self, reader: InputReader, thumbnails: SourceThumbnails | None = None) -> None:
        self._reader = reader
        self._thumbnails = thumbnails

    async def read(self, path: str) -> PhotoBytes | str:
        """The photo at ``path``: its bytes (None if this run read it already), digest and
        facts; or why it cannot be used."""
        real = os.path.realpath(path)
        known = self._reader.recall_image(real)
        if known is not None:
            assert known.image is not None
            return _answer(None, known.digest, known.image)
        read = await asyncio.to_thread(self._read, path, real)
        if isinstance(read, str):
            return read
        self._reader.learn(real, read)
        return _answer(read.data, read.known.digest, read.verdict)

    def _read(self, path: str, real: str) -> PhotoRead | str:
        """On a worker thread: the one read, its checks, and the thumbnail from its bytes."""
        read = self._reader.read_photo(real)
        thumbnails = self._thumbnails
        # A photo that does not decode has no thumbnail.
        if isinstance(read, PhotoRead) and isinstance(read.verdict, ImageFacts) and thumbnails:
            thumbnails.make_now(path, read.data)
        return read


def _answer(data: bytes | None, digest: str, verdict: Verdict) -> PhotoBytes | str:
    if isinstance(verdict, str):
        return verdict
    return PhotoBytes(data, digest, verdict.planned_from)
