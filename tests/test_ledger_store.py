from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from PIL import Image

from pipeline.errors import BadResponse, LockError, StoreError
from pipeline.events import FeatureSubmitted, JobFailed, JobRetrying, JobSucceeded
from pipeline.ledger import LedgerWriter, OutputLock, read_ledger
from pipeline.models import ErrorInfo, FeatureResult
from pipeline.store.local import Store
from pipeline.store.verify import check_image

RESULT = FeatureResult("u1", ("r/0.png",), "http://x/r/0.png", 5, 10)


def write_events(path: Path, *events: object) -> None:
    with LedgerWriter(path) as writer:
        for event in events:
            writer(event)  # type: ignore[arg-type]


def test_every_line_has_ts_job_id_status(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    write_events(
        ledger,
        FeatureSubmitted("a", "k1", 1, RESULT, 4000),
        JobSucceeded("a", "k1", ("a/0.png",), 1, 4000, "u1"),
        JobFailed("b", "k2", ErrorInfo("bad_request", "no", 400), 1),
    )
    lines = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
    assert all({"ts", "job_id", "status"} <= line.keys() for line in lines)
    assert lines[1]["outputs"] == ["a/0.png"] and lines[1]["attempts"] == 1
    assert lines[2]["error"] == {
        "kind": "bad_request",
        "message": "no",
        "http_status": 400,
        "transient": False,
        "uuid": None,
    }


def test_latest_line_wins_and_key_matters(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    write_events(
        ledger,
        JobFailed("a", "k1", ErrorInfo("server_error", "x", 500), 5),
        JobSucceeded("a", "k1", ("a/0.png",), 2, 4000, "u1"),
    )
    state = read_ledger(ledger)
    assert state.status_of("a", "k1") == "succeeded"
    assert state.status_of("a", "other-content") is None
    assert state.status_of("zzz", "k1") is None


def test_torn_tail_ignored_and_next_write_starts_a_fresh_line(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    write_events(ledger, JobSucceeded("a", "k", ("a/0.png",), 1, 1, "u"))
    with ledger.open("ab") as handle:
        handle.write(b'{"ts": "2026", "job_id": "b", "sta')  # kill -9 mid-write
    state = read_ledger(ledger)
    assert state.damage.torn_tail and not state.damage.corrupt_lines
    assert state.status_of("a", "k") == "succeeded"
    write_events(ledger, JobSucceeded("b", "k", ("b/0.png",), 1, 1, "u"))
    state = read_ledger(ledger)
    assert state.status_of("b", "k") == "succeeded"
    assert state.damage.corrupt_lines == [2]  # the torn fragment is now a reported middle line


def test_corrupt_middle_line_reported_with_number(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    good = orjson.dumps({"ts": "t", "job_id": "a", "status": "succeeded", "key": "k"})
    ledger.write_bytes(good + b"\n\x00garbage\n[1,2]\n" + good.replace(b'"a"', b'"b"') + b"\n")
    state = read_ledger(ledger)
    assert state.damage.corrupt_lines == [2, 3]
    assert state.status_of("b", "k") == "succeeded"


def test_submitted_result_is_pending_until_success(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    retry = JobRetrying("a", "k", "download", 1, ErrorInfo("bad_response", "cut", None), 1.0)
    write_events(ledger, FeatureSubmitted("a", "k", 1, RESULT, 4000), retry)
    state = read_ledger(ledger)
    pending = state.resume().pending_for("a", "k")
    assert pending is not None and pending.result.result_paths == ("r/0.png",)
    assert state.resume().pending_for("a", "changed-content") is None
    write_events(ledger, JobSucceeded("a", "k", ("a/0.png",), 1, 1, "u1"))
    assert read_ledger(ledger).resume().pending_for("a", "k") is None


def test_lock_refuses_second_holder_and_is_released(tmp_path: Path) -> None:
    with OutputLock(tmp_path), pytest.raises(LockError, match="in use by another run"):
        OutputLock(tmp_path).acquire()
    with OutputLock(tmp_path):
        pass


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from pipeline.ledger import OutputLock;"
        f"OutputLock(Path({str(tmp_path)!r})).acquire(); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (tmp_path / ".lock").exists()
    with OutputLock(tmp_path):  # the kernel released the dead holder's flock
        pass


def make_png(path: Path, size: tuple[int, int] = (32, 16)) -> Path:
    Image.new("RGB", size, "blue").save(path, "PNG")
    return path


def test_check_image_accepts_expected_and_rejects_the_rest(tmp_path: Path) -> None:
    assert check_image(make_png(tmp_path / "a"), (32, 16)) == "png"
    with pytest.raises(BadResponse, match="expected 64x64"):
        check_image(make_png(tmp_path / "b"), (64, 64))
    truncated = tmp_path / "c"
    truncated.write_bytes(make_png(tmp_path / "d").read_bytes()[:40])
    with pytest.raises(BadResponse):
        check_image(truncated, None)
    (tmp_path / "e").write_bytes(b"<html>not an image</html>")
    with pytest.raises(BadResponse):
        check_image(tmp_path / "e", None)


def test_publish_renames_and_keeps_earlier_outputs_aside(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    store.prepare()
    first = make_png(store.temp_path("job", 0))
    outputs, superseded = store.publish_now("job", [(first, "png")])
    assert outputs == ["job/0.png"] and superseded == []
    second = make_png(store.temp_path("job", 0), (8, 8))
    outputs, superseded = store.publish_now("job", [(second, "png")])
    assert outputs == ["job/0.png"]
    assert len(superseded) == 1 and superseded[0].startswith("job/.superseded/")
    assert (store.root / superseded[0]).is_file()
    assert not list((store.root / "job").glob(".part-*"))


@pytest.mark.parametrize("bad_id", ["../escape", "a/../../b", "/abs"])
def test_store_never_writes_outside_out(tmp_path: Path, bad_id: str) -> None:
    store = Store(tmp_path / "out")
    store.prepare()
    with pytest.raises(StoreError):
        store.temp_path(bad_id, 0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_out_is_a_clear_store_error(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    with pytest.raises(StoreError, match="not writable"):
        Store(out).prepare()
