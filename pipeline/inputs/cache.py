"""The content-addressed cache of remote inputs: blobs by sha256, and a URL → digest index.

Layout under the cache folder (default ``$XDG_CACHE_HOME/onemin-pipeline/inputs``, else
``~/.cache/onemin-pipeline/inputs``; ``ONEMIN_INPUT_CACHE`` overrides)::

    blobs/<2 hex>/<sha256>        the bytes, written to a temporary name and renamed
    index/<2 hex>/<sha256(url)>   JSON {url, digest, etag, last_modified}

A blob's name is its digest, so the same image behind two URLs is stored once, and a job's
content key (made from the blob's bytes) changes when the bytes behind a URL change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.durability import atomic_write

CACHE_ENV = "ONEMIN_INPUT_CACHE"


def default_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onemin-pipeline" / "inputs"


@dataclass(frozen=True, slots=True)
class CachedInput:
    url: str
    digest: str  # sha256 hex of the bytes
    path: Path  # the blob
    etag: str | None = None
    last_modified: str | None = None


class InputCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_cache_dir()

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def store(
        self, url: str, data: bytes, etag: str | None = None, modified: str | None = None
    ) -> CachedInput:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            _write_atomically(path, data)
        entry = CachedInput(url, digest, path, etag, modified)
        document = {"url": url, "digest": digest, "etag": etag, "last_modified": modified}
        _write_atomically(self._index_path(url), orjson.dumps(document))
        return entry

    def lookup(self, url: str) -> CachedInput | None:
        """The last fetch of ``url``, if its blob is still there."""
        try:
            document = orjson.loads(self._index_path(url).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        path = self.blob_path(str(document.get("digest", "")))
        if document.get("url") != url or not path.is_file():
            return None
        return CachedInput(
            url, document["digest"], path, document.get("etag"), document.get("last_modified")
        )

    def _index_path(self, url: str) -> Path:
        key = hashlib.sha256(url.encode()).hexdigest()
        return self.root / "index" / key[:2] / key


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
