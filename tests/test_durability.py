"""fsyncs leave the event loop: the Syncer batches folder and ledger fsyncs in its thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pipeline.durability import Syncer
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.ledger.schema import Started
from pipeline.store.local import Store


def test_publish_and_records_are_fsynced_by_the_syncer_thread_not_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        calls.append((threading.current_thread().name, fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    syncer = Syncer(interval=3600)  # only nudges and close() sync in this test
    store = Store(tmp_path / "out", syncer)
    store.prepare()
    temp = store.temp_path("job-1", 0)
    temp.write_bytes(b"png")
    with LedgerWriter(tmp_path / "out" / "ledger.jsonl", syncer=syncer) as writer:
        outputs, _ = store.publish_now("job-1", [(temp, "png")])
        writer.write(Started(job_id="job-1", key="k"))
        assert calls == []  # nothing fsynced on the caller's (the event loop's) thread
        syncer.nudge()
        for _ in range(200):
            if syncer.syncs:
                break
            threading.Event().wait(0.01)
        assert syncer.syncs >= 1 and {name for name, _ in calls} == {"fsync"}
    syncer.close()
    assert outputs == ["job-1/0.png"] and (tmp_path / "out" / "job-1" / "0.png").read_bytes()
    assert "job-1" in read_ledger(tmp_path / "out" / "ledger.jsonl").jobs
    assert not syncer.errors


def test_a_folder_gone_before_its_batch_is_no_error(tmp_path: Path) -> None:
    syncer = Syncer(interval=3600)
    folder = tmp_path / "gone"
    folder.mkdir()
    syncer.dirty(folder)
    folder.rmdir()
    syncer.close()
    assert not syncer.errors
