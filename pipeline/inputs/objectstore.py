"""Object stores (s3://, gs://, az://) through fsspec: inputs read, outputs written whole.

SPEC 4: with ``--out s3://bucket/prefix`` every output is put in one call, then checked by its
size (``fs.info``): a file at its final name is whole, as on a local disk. Puts are idempotent
(a file already there with the same size is not sent again), so a resumed run repeats nothing.

Endpoints: credentials and endpoints come from the standard places. For S3-compatible servers
(MinIO, moto, R2) set ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``): botocore >= 1.31 reads
it, and s3fs hands the client to botocore, so nothing of ours is needed; ``storage_options``
(fsspec's ``client_kwargs={"endpoint_url": ...}``) overrides it for one call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec

from pipeline.errors import ObjectStoreError

REMOTE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")
EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_object_store(url: str) -> bool:
    return scheme_of(url) in REMOTE_SCHEMES


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``url``; a clear message naming the extra when it is missing."""
    scheme = scheme_of(url)
    try:
        return fsspec.filesystem(scheme, **dict(storage_options or {}))
    except ImportError as exc:
        extra = EXTRAS.get(scheme, scheme)
        package = PACKAGES.get(extra, extra)
        message = f"{scheme}:// needs {package}: pip install 'onemin-pipeline[{extra}]'"
        raise ObjectStoreError(message) from exc
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ObjectStoreError(f"{scheme}:// is not a storage fsspec knows") from exc


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def output_url(out: str, job_id: str, index: int, ext: str) -> str:
    """``OUT/<id>/<index>.<ext>`` (SPEC 4)."""
    return join(out, job_id, f"{index}.{ext}")


def put_file(local: str | Path, url: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Put a finished local file at ``url`` whole, verify it by size; the size in bytes.

    Idempotent: an object already there with the same size is left as it is.
    """
    fs = filesystem(url, storage_options)
    size = os.path.getsize(local)
    if _size_of(fs, url) == size:
        return size
    try:
        fs.put_file(os.fspath(local), url)
    except OSError as exc:
        raise ObjectStoreError(f"cannot write {url}: {exc}") from exc
    stored = _size_of(fs, url)
    if stored != size:
        raise ObjectStoreError(f"{url} holds {stored} bytes after the put, expected {size}")
    return size


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    return _size_of(filesystem(url, storage_options), url) is not None


def size_of(url: str, storage_options: Mapping[str, Any] | None = None) -> int | None:
    return _size_of(filesystem(url, storage_options), url)


def list_outputs(
    out: str, job_id: str, storage_options: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, int]]:
    """(url, size) of each object under ``OUT/<id>/``, for resume and ``status``."""
    fs = filesystem(out, storage_options)
    prefix = join(out, job_id)
    try:
        entries = fs.ls(prefix, detail=True, refresh=True)
    except FileNotFoundError:
        return
    protocol = scheme_of(out)
    for entry in entries:
        if entry.get("type") == "file":
            name = entry["name"]
            yield (name if "://" in name else f"{protocol}://{name}"), int(entry.get("size", 0))


def copy_ledger(
    local_path: str | Path, out: str, storage_options: Mapping[str, Any] | None = None
) -> str:
    """Copy the local ledger to ``OUT/ledger.jsonl`` at the end of a run (SPEC 4); its URL."""
    url = join(out, Path(local_path).name)
    fs = filesystem(url, storage_options)
    fs.put_file(os.fspath(local_path), url)  # a ledger grows: always replaced, never skipped
    stored = _size_of(fs, url)
    if stored != os.path.getsize(local_path):
        raise ObjectStoreError(f"{url} holds {stored} bytes after the copy")
    return url


def fetch_bytes(url: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """The object's bytes (remote inputs); FileNotFoundError when it is not there."""
    fs = filesystem(url, storage_options)
    with fs.open(url, "rb") as handle:
        data: bytes = handle.read()
    return data


def _size_of(fs: Any, url: str) -> int | None:
    try:
        fs.invalidate_cache(url)
        info = fs.info(url)
    except FileNotFoundError:
        return None
    return int(info["size"]) if info.get("type", "file") == "file" else None
