"""Every object store the product offers, against a real local server (``tests/store_servers``):
S3 (moto), Google Cloud Storage (gcp-storage-emulator), Azure Blob (Azurite).

For each: a run whose inputs and OUT are both in the store, a resume that buys nothing, a lost
output fetched again free, an export to a folder and to another bucket (a second copies
nothing), and a wrong bucket or refused credentials as one line, exit 3, nothing bought.
Money is counted from the emulator's charge log, not from what the client says.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.review.export import CSV_COLUMNS
from tests.helpers.e2e import QUICK_POLLS, records, run_cli, write_catalog
from tests.helpers.emulator import emulator_thread
from tests.helpers.stores import StoreServer, use_store
from tests.test_outputs_bucket import decoded_size

# Whole runs against real store servers, a few seconds a store: make test-stores runs them.
pytestmark = [pytest.mark.slow, pytest.mark.stores]

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]
JOBS = 3


def objects_under(server: StoreServer, url: str) -> dict[str, bytes]:
    """Every object under ``url``, by its name relative to it."""
    fs: Any = server.filesystem()
    fs.invalidate_cache()
    root = url.split("://", 1)[1].rstrip("/")
    return {
        name[len(root) + 1 :]: fs.cat_file(name) for name in fs.find(root) if not name.endswith("/")
    }


def catalog_in_store(folder: Path, server: StoreServer, bucket: str) -> Path:
    """``write_catalog``'s jobs, their images and masks read from ``bucket/in/``."""
    manifest = write_catalog(folder, JOBS)
    fs: Any = server.filesystem()
    for local in sorted((folder / "img").iterdir()):
        fs.put_file(str(local), f"{bucket}/in/{local.name}")
    document = json.loads(manifest.read_text())
    for job in document["jobs"]:
        job["image"] = f"{bucket}/in/{Path(job['image']).name}"
        job["mask"] = f"{bucket}/in/{Path(job['mask']).name}"
    manifest.write_text(json.dumps(document))
    return manifest


def test_a_run_in_the_store_resumes_refetches_and_exports_without_buying_again(
    tmp_path: Path,
    store: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = store.bucket()
    out = f"{bucket}/runs/spring"
    manifest = catalog_in_store(tmp_path / "catalog", store, bucket)
    state = tmp_path / "state"
    run = ["run", str(manifest), "--out", out, "--state", str(state), *FAST]
    with emulator_thread() as emulator:
        assert run_cli(run, emulator.env, monkeypatch) == 0
        assert len(emulator.server.state.charges) == JOBS  # each job bought once
        stored = objects_under(store, out)
        images = sorted(name for name in stored if name.endswith(".png"))
        assert images == [f"sku-{j:04d}/0.png" for j in range(JOBS)]
        assert all(decoded_size(stored[name]) == (1024, 1024) for name in images)
        assert stored["ledger.jsonl"] == (state / "ledger.jsonl").read_bytes()

        requests = len(emulator.log)
        assert run_cli(run, emulator.env, monkeypatch) == 0  # the resume
        assert len(emulator.log) == requests  # sent nothing at all

        fs: Any = store.filesystem()
        fs.rm_file(f"{out}/sku-0001/0.png")
        assert run_cli(run, emulator.env, monkeypatch) == 0  # fetched again, free
        assert len(emulator.server.state.charges) == JOBS
    refetched = [r["job_id"] for r in records(state) if r["status"] == "refetched"]
    assert refetched == ["sku-0001"]
    assert objects_under(store, out)["sku-0001/0.png"] == stored["sku-0001/0.png"]

    # Export from the bucket run (its state folder is its OUT), to a folder and a bucket.
    folder = tmp_path / "shop"
    other = f"{store.bucket()}/export"
    for dest in (str(folder), other):
        capsys.readouterr()
        assert run_cli(["export", str(state), dest], {}, monkeypatch) == 0
        assert capsys.readouterr().out.strip() == f"{JOBS} copied, 0 unchanged"
        assert run_cli(["export", str(state), dest], {}, monkeypatch) == 0
        assert capsys.readouterr().out.strip() == f"0 copied, {JOBS} unchanged"
    exported = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert objects_under(store, other) == exported
    for j in range(JOBS):
        assert exported[f"sku-{j:04d}_0.png"] == stored[f"sku-{j:04d}/0.png"]  # byte for byte
    rows = exported["export.csv"].decode().splitlines()
    assert rows[0] == ",".join(CSV_COLUMNS) and len(rows) == 1 + JOBS
    first = f"sku-0000,0,sku-0000_0.png,{bucket}/in/p0.png,studio shot 0,"
    assert any(row.startswith(first) for row in rows)


def test_a_wrong_bucket_is_one_line_exit_3_and_nothing_is_bought(
    tmp_path: Path,
    store: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_catalog(tmp_path, 2)
    out = f"{store.scheme}://nosuch{uuid.uuid4().hex[:10]}/out"
    with emulator_thread() as emulator:
        code = run_cli(["run", str(manifest), "--out", out, *FAST], emulator.env, monkeypatch)
        assert emulator.log == [] and emulator.server.state.charges == []
    assert code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write to {out}: ") and "\n" not in err
    assert not (tmp_path / ".pipeline").exists()


def test_refused_credentials_are_one_line_exit_3_and_nothing_is_bought(
    tmp_path: Path,
    store: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = f"{store.bucket()}/out"  # a bucket that is there, with credentials that are not
    use_store(store, monkeypatch, store.wrong_credentials, store.wrong_options)
    manifest = write_catalog(tmp_path, 2)
    with emulator_thread() as emulator:
        code = run_cli(["run", str(manifest), "--out", out, *FAST], emulator.env, monkeypatch)
        assert emulator.log == [] and emulator.server.state.charges == []
    assert code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write to {out}: ") and "\n" not in err
    assert "Traceback" not in err
