"""Where ``pipeline export`` reads a delivered image from: the run's output folder, or the
bucket of a bucket run.

A bucket run's commands take its local state folder as ``OUT``; its ``summary.json`` records
the bucket the images went to (``store.bucket.recorded_bucket``). That bucket is listed once,
with sizes, so telling which images are there costs one listing, not a request per image.
Images are read as streams (a file, or fsspec's ``open`` of the object) and copied a chunk at a
time, so an export holds one chunk in memory, never a whole image, unless it converts it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import IO, Any

from pipeline.errors import ExportError, ObjectStoreError, StoreError
from pipeline.inputs.objectstore import filesystem, is_object_store, join, one_line
from pipeline.review.page import safe_parts
from pipeline.store import objects
from pipeline.store.bucket import recorded_bucket

COPY_CHUNK_BYTES = 1 << 20  # read and write a MiB at a time: few requests, little memory


class DeliveredImages:
    """The delivered images of one ``OUT``: a folder's files, or a bucket's objects."""

    def __init__(self, out_dir: Path) -> None:
        self.bucket = recorded_bucket(out_dir)
        self.root = self.bucket or os.path.abspath(out_dir)
        self._sizes: dict[str, int] | None = None

    def locate(self, relative: str) -> str | None:
        """The path or URL of an output (relative to OUT, as the ledger says), None if gone."""
        parts = safe_parts(relative)
        if not parts:
            return None
        if self.bucket is None:
            path = os.path.join(self.root, *parts)
            return path if os.path.isfile(path) else None
        name = "/".join(parts)
        return join(self.bucket, name) if name in self._listing() else None

    def _listing(self) -> dict[str, int]:
        if self._sizes is None:
            assert self.bucket is not None
            try:
                self._sizes = objects.sizes_under(self.bucket)
            except (ObjectStoreError, StoreError) as exc:
                raise ExportError(str(exc)) from None
        return self._sizes


def open_image(source: str) -> IO[bytes]:
    """A delivered image opened for reading, streamed (a local file or a bucket object)."""
    try:
        if is_object_store(source):
            handle: IO[bytes] = filesystem(source).open(source, "rb", block_size=COPY_CHUNK_BYTES)
            return handle
        return open(source, "rb")  # the caller closes it
    except (OSError, ObjectStoreError) as exc:
        raise ExportError(f"cannot read {source}: {one_line(exc)}") from None


def image_size(source: str) -> int | None:
    try:
        if is_object_store(source):
            return objects.size_of(source)
        return os.path.getsize(source)
    except (OSError, ObjectStoreError):
        return None


def read_image(source: str) -> bytes:
    """The whole image (to convert it: decoding needs all of it)."""
    with open_image(source) as reader:
        return reader.read()


def same_image(fs: Any, dest: str, source: str) -> bool:
    """True when DEST already holds exactly the image at ``source``: sizes first (one request
    each on a store), then both streamed through sha256."""
    try:
        size = fs.info(dest).get("size")
    except (FileNotFoundError, OSError):
        return False
    if size is None or size != image_size(source):
        return False
    with fs.open(dest, "rb") as existing, open_image(source) as wanted:
        return _digest(existing) == _digest(wanted)


def copy_image(source: str, fs: Any, dest: str) -> None:
    """Copy the image to DEST a chunk at a time (bytes unchanged: provenance kept)."""
    try:
        with open_image(source) as reader, fs.open(dest, "wb") as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)
    except ExportError:
        raise
    except Exception as exc:  # botocore's and azure's errors are not all OSErrors
        raise ExportError(f"cannot copy {source} to {dest}: {one_line(exc)}") from None


def _digest(stream: IO[bytes]) -> bytes:
    digest = hashlib.sha256()
    while chunk := stream.read(COPY_CHUNK_BYTES):
        digest.update(chunk)
    return digest.digest()
