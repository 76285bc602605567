"""inputs.objectstore against a real S3-compatible server (moto, on 127.0.0.1)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.inputs import objectstore
from pipeline.store import objects

pytestmark = pytest.mark.slow  # a real S3 server (moto) started for the module


@pytest.fixture
def bucket(s3_server: str) -> str:
    # moto keeps its buckets per process, so each test takes its own.
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    objectstore.filesystem(f"s3://{name}").mkdir(name)
    return f"s3://{name}/out"


def test_an_output_is_put_whole_and_verified_by_size(tmp_path: Path, bucket: str) -> None:
    local = tmp_path / "0.png"
    local.write_bytes(b"\x89PNG" + bytes(5000))
    url = objects.output_url(bucket, "sku-1", 0, "png")
    assert url == f"{bucket}/sku-1/0.png"
    assert not objects.exists(url)
    assert objects.put_file(local, url) == 5004
    assert objects.size_of(url) == 5004
    assert objectstore.fetch_bytes(url) == local.read_bytes()
    assert list(objects.list_outputs(bucket, "sku-1")) == [(url, 5004)]


def test_a_second_put_of_the_same_file_sends_nothing(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "0.png"
    local.write_bytes(b"x" * 100)
    url = objects.output_url(bucket, "a", 0, "png")
    objects.put_file(local, url)
    fs = objectstore.filesystem(url)
    puts: list[str] = []
    monkeypatch.setattr(type(fs), "put_file", lambda self, lpath, rpath, **kw: puts.append(rpath))
    objects.put_file(local, url)
    assert puts == []


def test_the_ledger_is_copied_to_out_and_replaced_as_it_grows(tmp_path: Path, bucket: str) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"job_id": "a"}\n')
    url = objects.copy_ledger(ledger, bucket)
    ledger.write_text('{"job_id": "a"}\n{"job_id": "b"}\n')
    assert objects.copy_ledger(ledger, bucket) == url == f"{bucket}/ledger.jsonl"
    assert objectstore.fetch_bytes(url) == ledger.read_bytes()


def test_a_missing_input_is_file_not_found(bucket: str) -> None:
    with pytest.raises(FileNotFoundError):
        objectstore.fetch_bytes(bucket + "/in/nothing.png")


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    def missing(protocol: str, **_: object) -> None:
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec, "filesystem", missing)
    with pytest.raises(objectstore.ObjectStoreError, match=r"pip install 'onemin-pipeline\[gcs\]'"):
        objectstore.filesystem("gs://bucket/x.png")
