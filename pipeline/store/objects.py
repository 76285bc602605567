"""Outputs in an object store, written whole: every put is one call, then checked by its size
(``fs.info``), so an object at its final name is whole, as a renamed file is on a local disk.

Puts are idempotent (an object already there with the same size is not sent again), so a
resumed run repeats nothing. A store has no rename: ``move`` is a copy and a delete.
``probe_writable`` writes and deletes one tiny object at the start of a run, failing fast.
Every failure is one ``ObjectStoreError`` line (botocore's messages are not all OSErrors, and
some span lines).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ObjectStoreError
from pipeline.inputs.objectstore import filesystem, join, one_line, scheme_of


def output_url(out: str, job_id: str, index: int, ext: str) -> str:
    """``OUT/<id>/<index>.<ext>`` (docs/ledger.md#delivered-images)."""
    return join(out, job_id, f"{index}.{ext}")


def put_file(
    local: str | Path,
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    skip_same: bool = True,
) -> int:
    """Put a finished local file at ``url`` whole, verify it by size; the size in bytes.

    Idempotent with ``skip_same``: an object already there with the same size is left as it
    is (one HEAD). The store, which moves earlier outputs aside first, puts without looking.
    """
    fs = filesystem(url, storage_options)
    size = os.path.getsize(local)
    if skip_same and _size_of(fs, url) == size:
        return size
    try:
        fs.put_file(os.fspath(local), url)
    except Exception as exc:  # botocore's errors are not all OSErrors
        raise ObjectStoreError(f"cannot write {url}: {one_line(exc)}") from exc
    stored = _size_of(fs, url)
    if stored != size:
        raise ObjectStoreError(f"{url} holds {stored} bytes after the put, expected {size}")
    return size


def move(source: str, target: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """An object moved within its store: copied, then the original deleted (no rename there)."""
    fs = filesystem(source, storage_options)
    try:
        fs.copy(source, target)
        fs.rm_file(source)
    except Exception as exc:
        raise ObjectStoreError(f"cannot move {source} to {target}: {one_line(exc)}") from exc


def names_under(prefix: str, storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Every object's name under ``prefix``, relative to it, sub-folders included: one flat
    listing (S3 pages 1,000 names a request) instead of a request per folder."""
    return set(sizes_under(prefix, storage_options))


def sizes_under(prefix: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """``names_under`` with each object's size in bytes (the same one listing)."""
    fs = filesystem(prefix, storage_options)
    root = fs._strip_protocol(prefix).rstrip("/")
    try:
        found = fs.find(root, withdirs=False, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:
        raise ObjectStoreError(f"cannot list {prefix}: {one_line(exc)}") from exc
    start = len(root) + 1
    return {
        name[start:]: int(info.get("size") or 0)
        for name, info in found.items()
        if name.startswith(root + "/")
    }


def list_files(
    prefix: str, storage_options: Mapping[str, Any] | None = None
) -> list[tuple[str, int]]:
    """(url, size) of each object directly under ``prefix`` (not in its sub-folders)."""
    fs = filesystem(prefix, storage_options)
    try:
        entries = fs.ls(prefix, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise ObjectStoreError(f"cannot list {prefix}: {one_line(exc)}") from exc
    protocol = scheme_of(prefix)
    found = []
    for entry in entries:
        if entry.get("type") == "file":
            name = entry["name"]
            found.append(((name if "://" in name else f"{protocol}://{name}"), int(entry["size"])))
    return found


# The start-of-run probe fails fast: botocore's defaults retry a refused connection for a
# minute; the run's own puts keep them (a blip mid-run is worth waiting out).
_PROBE_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 15,
        }
    }
}


def probe_writable(out: str) -> None:
    """Write and delete a tiny object under ``out``: a bad bucket, missing credentials or an
    unreachable endpoint is one ObjectStoreError before anything is spent."""
    options = _PROBE_OPTIONS.get(scheme_of(out), {})
    try:
        fs = filesystem(out, options)
    except ObjectStoreError as exc:
        raise ObjectStoreError(f"cannot write to {out}: {exc}") from exc
    url = join(out, f".probe-{secrets.token_hex(6)}")
    try:
        fs.pipe_file(url, b"onemin-pipeline write probe")
        fs.rm_file(url)
    except Exception as exc:
        raise ObjectStoreError(f"cannot write to {out}: {one_line(exc)}") from exc


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    return _size_of(filesystem(url, storage_options), url) is not None


def size_of(url: str, storage_options: Mapping[str, Any] | None = None) -> int | None:
    return _size_of(filesystem(url, storage_options), url)


def list_outputs(
    out: str, job_id: str, storage_options: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, int]]:
    """(url, size) of each object under ``OUT/<id>/``, for resume and ``status``."""
    yield from list_files(join(out, job_id), storage_options)


def copy_ledger(
    local_path: str | Path, out: str, storage_options: Mapping[str, Any] | None = None
) -> str:
    """Copy a local state file (the ledger, the summary) to ``OUT/<its name>`` at the end of a run
    (docs/ledger.md#outputs-in-a-bucket); its URL. Always replaced, never skipped: a ledger
    grows."""
    url = join(out, Path(local_path).name)
    put_file(local_path, url, storage_options, skip_same=False)
    return url


def _size_of(fs: Any, url: str) -> int | None:
    try:
        fs.invalidate_cache(url)
        info = fs.info(url)
    except FileNotFoundError:
        return None
    except Exception as exc:  # refused, unreachable: one line for the caller to show
        raise ObjectStoreError(f"cannot read {url}: {one_line(exc)}") from exc
    return int(info["size"]) if info.get("type", "file") == "file" else None
