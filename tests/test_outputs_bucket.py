"""``pipeline run --out s3://...`` (docs/ledger.md#outputs-in-a-bucket) against a real S3-compatible
server (moto, 127.0.0.1).

Outputs go to the bucket, put whole and verified by size; the ledger, lock and summaries stay in
the local state folder and the ledger is copied to OUT at the end; resume works from the state
folder; a redone job's earlier outputs move to ``.superseded/`` in the bucket; a bucket that
cannot be written stops the run in one line before anything is sent.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from pipeline.inputs import objectstore
from tests.helpers.e2e import QUICK_POLLS, purchases, records, run_cli, states, write_catalog
from tests.helpers.emulator import emulator_thread

pytestmark = pytest.mark.slow  # whole runs against a real S3 server: ~1 s each

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


@pytest.fixture
def bucket(s3_server: str) -> str:
    name = f"out-{uuid.uuid4().hex[:12]}"  # moto keeps buckets per process: one per test
    objectstore.filesystem(f"s3://{name}").mkdir(name)
    return f"s3://{name}/runs/spring"


def objects(out: str) -> dict[str, bytes]:
    """Every object under ``out``, by its name relative to ``out``."""
    fs = objectstore.filesystem(out)
    fs.invalidate_cache()
    root = out.split("://", 1)[1]
    return {
        name[len(root) + 1 :]: fs.cat_file(name) for name in fs.find(root) if not name.endswith("/")
    }


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a cut-short object would fail here
        return image.size


def succeeded_outputs(state: Path) -> dict[str, list[str]]:
    latest: dict[str, list[str]] = {}
    for record in records(state):
        if record["status"] == "succeeded":
            latest[record["job_id"]] = record["outputs"]
    return latest


def test_a_bucket_run_puts_every_output_whole_and_copies_the_ledger(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 3, n=2)
    with emulator_thread() as emulator:
        code = run_cli(["run", str(manifest), "--out", bucket, *FAST], emulator.env, monkeypatch)
    assert code == 0
    state = tmp_path / ".pipeline" / "e2e"  # the default state folder, beside the manifest
    assert states(state) == {f"sku-{j:04d}": "succeeded" for j in range(3)}
    stored = objects(bucket)
    outputs = succeeded_outputs(state)
    for job_id, files in outputs.items():
        assert files == [f"{job_id}/0.png", f"{job_id}/1.png"]
        for relative in files:
            assert decoded_size(stored[relative]) == (1024, 1024)
    assert stored["ledger.jsonl"] == (state / "ledger.jsonl").read_bytes()
    assert json.loads(stored["summary.json"]) == json.loads((state / "summary.json").read_text())
    assert sorted(stored) == sorted(
        [f for files in outputs.values() for f in files] + ["ledger.jsonl", "summary.json"]
    )  # no probe, no temporaries, no lock in the bucket
    assert not (tmp_path / "out").exists() and not (tmp_path / "s3:").exists()
    assert not list((state / "staging").rglob("*"))  # every temporary put and removed


def test_a_second_run_buys_nothing_it_resumes_from_the_state_folder(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 3)
    state = tmp_path / "state"
    args = ["run", str(manifest), "--out", bucket, "--state", str(state), *FAST]
    with emulator_thread() as emulator:
        assert run_cli(args, emulator.env, monkeypatch) == 0
        sent = len(emulator.log)
        first = objects(bucket)
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert len(emulator.log) == sent
    again = objects(bucket)
    assert again.pop("summary.json") and first.pop("summary.json")  # its updated_at moves on
    assert again == first  # the same outputs, and a ledger with no line added
    assert (state / "ledger.jsonl").is_file() and not (tmp_path / ".pipeline").exists()


def test_a_rejected_job_is_redone_and_its_earlier_outputs_move_aside_in_the_bucket(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 2)
    state = tmp_path / ".pipeline" / "e2e"
    args = ["run", str(manifest), "--out", bucket, *FAST]
    with emulator_thread() as emulator:
        assert run_cli(args, emulator.env, monkeypatch) == 0
        before = objects(bucket)
        assert run_cli(["review", str(state), "--reject", "sku-0000"], {}, monkeypatch) == 0
        assert run_cli(args, emulator.env, monkeypatch) == 0
    after = objects(bucket)
    aside = [name for name in after if name.startswith("sku-0000/.superseded/")]
    assert len(aside) == 1 and aside[0].endswith("/0.png")
    assert after[aside[0]] == before["sku-0000/0.png"]  # moved whole, not re-encoded
    assert decoded_size(after["sku-0000/0.png"]) == (1024, 1024)
    assert after["sku-0001/0.png"] == before["sku-0001/0.png"]  # the other job untouched
    assert after["ledger.jsonl"] == (state / "ledger.jsonl").read_bytes()
    redo = [r for r in records(state) if r["status"] == "succeeded" and r["job_id"] == "sku-0000"]
    assert redo[-1]["outputs"] == ["sku-0000/0.png"]


def test_a_protected_jobs_raw_images_go_to_the_bucket_and_aside_with_their_outputs(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 1)
    document: dict[str, Any] = json.loads(manifest.read_text())
    document["defaults"]["protect"] = True
    manifest.write_text(json.dumps(document))
    state = tmp_path / ".pipeline" / "e2e"
    args = ["run", str(manifest), "--out", bucket, *FAST]
    with emulator_thread() as emulator:
        assert run_cli(args, emulator.env, monkeypatch) == 0
        first = objects(bucket)
        assert {"sku-0000/0.png", "sku-0000/.raw/0.png"} <= set(first)
        assert run_cli(["review", str(state), "--reject", "sku-0000"], {}, monkeypatch) == 0
        assert run_cli(args, emulator.env, monkeypatch) == 0
    after = objects(bucket)
    raw_aside = [n for n in after if n.startswith("sku-0000/.superseded/") and "/.raw/" in n]
    assert len(raw_aside) == 1 and after[raw_aside[0]] == first["sku-0000/.raw/0.png"]
    assert "sku-0000/.raw/0.png" in after and "sku-0000/0.png" in after


def test_an_unreachable_endpoint_is_one_line_before_anything_is_sent(
    tmp_path: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.helpers.servers import free_port

    manifest = write_catalog(tmp_path, 2)
    dead = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    with emulator_thread() as emulator:
        code = run_cli(
            ["run", str(manifest), "--out", bucket, *FAST], emulator.env | dead, monkeypatch
        )
        assert emulator.log == []
    assert code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write to {bucket}: ") and "\n" not in err
    assert "Traceback" not in err
    assert not (tmp_path / ".pipeline").exists()  # nothing left behind either


def test_a_missing_bucket_is_one_line_before_anything_is_sent(
    tmp_path: Path,
    s3_server: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_catalog(tmp_path, 2)
    out = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/out"
    with emulator_thread() as emulator:
        assert run_cli(["run", str(manifest), "--out", out, *FAST], emulator.env, monkeypatch) == 3
        assert emulator.log == []
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write to {out}: ") and "\n" not in err


def test_status_reads_a_bucket_runs_state_folder(
    tmp_path: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_catalog(tmp_path, 2)
    with emulator_thread() as emulator:
        assert (
            run_cli(["run", str(manifest), "--out", bucket, *FAST], emulator.env, monkeypatch) == 0
        )
    capsys.readouterr()
    assert run_cli(["status", str(tmp_path / ".pipeline" / "e2e")], {}, monkeypatch) == 0
    assert "succeeded" in capsys.readouterr().out


def test_an_image_deleted_from_the_bucket_is_missing_then_fetched_again_free(
    tmp_path: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_catalog(tmp_path, 3)
    state = tmp_path / ".pipeline" / "e2e"
    run = ["run", str(manifest), "--out", bucket, *FAST]
    with emulator_thread() as emulator:  # one emulator: its stored results still serve
        assert run_cli(run, emulator.env, monkeypatch) == 0
        objectstore.filesystem(bucket).rm(f"{bucket}/sku-0001/0.png")
        capsys.readouterr()
        assert run_cli(["status", str(state)], {}, monkeypatch) == 1
        assert "missing" in capsys.readouterr().out
        assert run_cli(run, emulator.env, monkeypatch) == 0
    lines = [orjson.loads(line) for line in (state / "ledger.jsonl").read_bytes().splitlines()]
    assert [r["job_id"] for r in lines if r["status"] == "refetched"] == ["sku-0001"]
    assert len(purchases(state)) == 3  # nothing bought again
    assert decoded_size(objects(bucket)["sku-0001/0.png"]) == (1024, 1024)
    capsys.readouterr()
    assert run_cli(["status", str(state)], {}, monkeypatch) == 0


def test_state_with_a_local_out_and_an_unknown_scheme_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 1)
    base = ["run", str(manifest), "--emulator", *FAST]
    local = [*base, "--out", str(tmp_path / "o"), "--state", str(tmp_path / "s")]
    assert run_cli(local, {}, monkeypatch) == 2
    assert "--state is for an object-store --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        run_cli([*base, "--out", "ftp://host/out"], {}, monkeypatch)
    assert exited.value.code == 2
    assert "neither a folder nor an object-store URL" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_a_stopped_run_still_copies_its_ledger_to_the_bucket(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 4)
    state = tmp_path / ".pipeline" / "e2e"
    args = ["run", str(manifest), "--out", bucket, "--concurrency", "1", *FAST]
    with emulator_thread() as emulator:
        # 1000 credits a job (the credit table): the budget lets two run, then stops the run
        assert run_cli([*args, "--max-credits", "2500"], emulator.env, monkeypatch) == 3
    assert list(states(state).values()).count("succeeded") == 2
    stored = objects(bucket)
    assert stored["ledger.jsonl"] == (state / "ledger.jsonl").read_bytes()


def test_status_of_a_bucket_url_points_to_the_state_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["status", "s3://bucket/runs/spring"], {}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "pipeline status .pipeline/<name>" in err and err.count("\n") == 1


def test_a_put_that_fails_stops_the_run_and_the_next_run_buys_nothing_again(
    tmp_path: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import pipeline.store.bucket

    manifest = write_catalog(tmp_path, 2)
    state = tmp_path / ".pipeline" / "e2e"
    args = ["run", str(manifest), "--out", bucket, "--concurrency", "1", *FAST]

    def refused(local: object, url: str, *_: object, **__: object) -> int:
        raise objectstore.ObjectStoreError(f"cannot write {url}: AccessDenied")

    with emulator_thread() as emulator:
        with monkeypatch.context() as patched:
            patched.setattr(pipeline.store.bucket.objects, "put_file", refused)
            assert run_cli(args, emulator.env, monkeypatch) == 3
        assert "AccessDenied" in capsys.readouterr().out  # the stop message names the put
        # The stop comes at the first put; an async call of the second job may be paid by then.
        assert 1 <= len(emulator.calls("features")) <= 2
        assert "succeeded" not in states(state).values()
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert len(emulator.calls("features")) == 2  # each job bought once over both runs
    assert {"sku-0000/0.png", "sku-0001/0.png"} <= set(objects(bucket))
