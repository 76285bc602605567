"""A shard on another machine gets the driver's fetched URL inputs into its own node's cache,
and only the bytes the driver planned with (moto's S3 on 127.0.0.1 as the source)."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path

import pytest

from pipeline.distributed.inputs import localize
from pipeline.inputs import objectstore
from pipeline.inputs.cache import InputCache
from pipeline.manifest import load_manifest
from pipeline.models import InputRef, PlannedJob
from pipeline.plan.prepare import scan
from tests.helpers.e2e import write_catalog

pytestmark = pytest.mark.slow  # a real S3 server


def planned_from_url(tmp_path: Path, url: str, data: bytes) -> PlannedJob:
    """A planned job as the driver leaves it: its image a cache blob of another machine."""
    job = next(
        j for j in scan(load_manifest(write_catalog(tmp_path, 1))) if isinstance(j, PlannedJob)
    )
    digest = hashlib.sha256(data).hexdigest()
    elsewhere = f"/nonexistent/driver-cache/blobs/{digest[:2]}/{digest}"
    image = InputRef("file", elsewhere, source=url)
    return dataclasses.replace(job, job=dataclasses.replace(job.job, image=image))


def test_a_missing_cached_input_is_fetched_into_this_nodes_cache(
    tmp_path: Path,
    s3_server: str,
) -> None:
    bucket = f"in-{uuid.uuid4().hex[:10]}"
    fs = objectstore.filesystem(f"s3://{bucket}")
    fs.mkdir(bucket)
    data = b"\x89PNG" + bytes(300)  # the bytes the driver planned with
    url = f"s3://{bucket}/p.png"
    fs.pipe_file(url, data)
    planned = planned_from_url(tmp_path, url, data)
    cache = InputCache(tmp_path / "node-cache")

    local = localize(planned, cache)
    assert local.job.image.source == url
    assert Path(local.job.image.value).read_bytes() == data
    assert Path(local.job.image.value).is_relative_to(tmp_path / "node-cache")
    assert local.job.mask == planned.job.mask  # a file every node sees: left as it is

    fs.pipe_file(url, b"changed since the plan")
    cache_again = InputCache(tmp_path / "other-node")
    stale = localize(planned, cache_again)
    assert stale.job.image == planned.job.image  # not fetched under the planned digest
    assert not (tmp_path / "other-node").exists()
