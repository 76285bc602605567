"""Big catalogs shared by several scenarios, written once per suite run and removed at its end.

A catalog of N jobs cycles over a handful of small (image, mask) pairs with one prompt, as a
CSV items file: what a large catalog run's manifest looks like, without gigabytes of images.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench.common import log
from bench.fixtures import shared_rows, small_images, write_catalog

PAIRS = 5  # "a handful of small images"


class Catalogs:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # scenarios running side by side share the catalogs
        self._root: Path | None = None
        self._made: dict[tuple[int, int], Path] = {}

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="bench-catalogs-"))
            return self._root

    def catalog(self, jobs: int, pairs: int = PAIRS) -> Path:
        """The manifest of ``jobs`` jobs over ``pairs`` shared (image, mask) pairs."""
        key = (jobs, pairs)
        with self._lock:
            return self._made.get(key) or self._make(key)

    def _make(self, key: tuple[int, int]) -> Path:
        jobs, pairs = key
        started = time.monotonic()
        folder = self.root / f"catalog-{jobs}-{pairs}"
        images = small_images(folder / "img", pairs)
        self._made[key] = write_catalog(
            folder, shared_rows(jobs, images, folder), f"catalog-{jobs}"
        )
        log(f"  catalog of {jobs:,} jobs written in {time.monotonic() - started:.1f}s")
        return self._made[key]

    def cleanup(self) -> None:
        with self._lock:
            self._remove()

    def _remove(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._made.clear()


CATALOGS = Catalogs()
