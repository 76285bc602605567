"""Remote inputs on a shard's own node.

The driver's preflight fetches every URL input once into its content-addressed cache, and the
planned job then names that cache file (``InputRef("file", <blob>, source=<url>)``: its content
key is the bytes'). A shard on another machine has no such file. Before it runs a batch, it
fetches each missing one from its source URL into its own node's cache, under the same digest,
and keeps it only when the bytes are the ones the driver planned with (the blob's name is
their sha256): an image that changed behind its URL since the plan is not uploaded under the
old content key; its job then fails as an unreadable input and the next run plans it anew.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import fsspec

from pipeline.inputs.cache import InputCache
from pipeline.models import InputRef, PlannedJob


def localize(planned: PlannedJob, cache: InputCache) -> PlannedJob:
    """``planned`` with its fetched inputs pointing at files of this node (fetched if need be)."""
    job = planned.job
    changes: dict[str, InputRef] = {}
    for role, ref in (("image", job.image), ("mask", job.mask)):
        if ref is None or ref.kind != "file" or ref.source is None or Path(ref.value).exists():
            continue
        local = fetch_blob(ref.source, Path(ref.value).name, cache)
        if local is not None:
            changes[role] = InputRef("file", str(local), ref.source)
    if not changes:
        return planned
    return dataclasses.replace(planned, job=dataclasses.replace(job, **changes))  # type: ignore[arg-type]


def fetch_blob(url: str, digest: str, cache: InputCache) -> Path | None:
    """The blob of ``digest`` in this node's cache, fetched from ``url`` if absent; None when
    the URL cannot be read or no longer holds those bytes."""
    path = cache.blob_path(digest)
    if path.is_file():
        return path
    try:
        with fsspec.open(url, "rb") as handle:
            data = handle.read()
    except Exception:  # unreadable here: the upload then names the missing file, one line
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        return None
    return cache.store(url, data).path
