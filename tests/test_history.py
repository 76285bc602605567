from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.reporting.history import (
    SCHEMA,
    folder_summary,
    list_run_records,
    read_folder_summary,
    run_stamp,
    sent_anything,
    write_folder_summary,
    write_run_record,
)
from pipeline.reporting.stats import RunStats


def a_run(started_at: str, *, succeeded: int, exit_code: int = 0) -> dict[str, Any]:
    stats = RunStats(started_at=started_at)
    stats.counters["jobs/started"] = succeeded
    stats.counters["jobs/succeeded"] = succeeded
    stats.counters["credits/estimated"] = succeeded * 1000
    return stats.summary(name="catalog", exit_code=exit_code)


def a_noop_run() -> dict[str, Any]:
    stats = RunStats()
    stats.counters["jobs/skipped/done"] = 12
    return stats.summary(name="catalog", exit_code=0)


def test_stamp_is_filename_safe_utc() -> None:
    assert run_stamp("2026-12-01T02:15:03.123Z") == "20261201T021503Z"
    assert run_stamp("2026-12-01T03:15:03+01:00") == "20261201T021503Z"
    assert len(run_stamp(None)) == len("20261201T021503Z")
    assert len(run_stamp("garbage")) == len("20261201T021503Z")


def test_run_records_never_overwrite_each_other(tmp_path: Path) -> None:
    first = write_run_record(tmp_path, a_run("2026-12-01T02:15:03.001Z", succeeded=3))
    second = write_run_record(tmp_path, a_run("2026-12-01T02:15:03.900Z", succeeded=5))
    third = write_run_record(tmp_path, a_run("2026-12-02T02:15:03Z", succeeded=0))
    assert first.name == "20261201T021503Z.json"
    assert second.name == "20261201T021503Z-2.json"
    assert third.name == "20261202T021503Z.json"
    assert json.loads(first.read_text())["counts"]["succeeded"] == 3
    assert json.loads(second.read_text())["counts"]["succeeded"] == 5
    assert list_run_records(tmp_path) == [first, second, third]
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_sent_anything() -> None:
    assert sent_anything(a_run("2026-12-01T02:15:03Z", succeeded=1))
    assert not sent_anything(a_noop_run())
    failed_on_upload = RunStats()
    failed_on_upload.counters["retry/count"] = 4
    assert sent_anything(failed_on_upload.summary())


def test_noop_run_keeps_last_run_and_refreshes_counts(tmp_path: Path) -> None:
    real = a_run("2026-12-01T02:15:03Z", succeeded=12)
    first = folder_summary(
        manifest_name="catalog",
        manifest_total=12,
        states={"done": 12, "failed": 0, "pending": 0, "rejected": 0},
        credits_all_runs=31000,
        last_run=real,
        previous=read_folder_summary(tmp_path),
    )
    write_folder_summary(tmp_path, first)
    # the next night: nothing to do, and one job was added to the manifest meanwhile
    noop = a_noop_run()
    assert not sent_anything(noop)
    second = folder_summary(
        manifest_name="catalog",
        manifest_total=13,
        states={"done": 12, "failed": 0, "pending": 1, "rejected": 0},
        credits_all_runs=31000,
        last_run=None,
        previous=read_folder_summary(tmp_path),
    )
    write_folder_summary(tmp_path, second)
    back = read_folder_summary(tmp_path)
    assert back is not None and back["schema"] == SCHEMA
    assert back["jobs"] == {"total": 13, "done": 12, "failed": 0, "pending": 1, "rejected": 0}
    assert back["credits_all_runs"] == 31000
    assert back["last_run"]["counts"]["succeeded"] == 12  # not zeros
    assert back["last_run"]["wall_seconds"] == real["wall_seconds"]
    assert back["last_success_at"] == real["finished_at"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_failing_run_keeps_earlier_last_success() -> None:
    good = folder_summary(
        manifest_name="c",
        manifest_total=2,
        states={"done": 2},
        credits_all_runs=10,
        last_run=a_run("2026-12-01T02:15:03Z", succeeded=2),
        previous=None,
    )
    bad = folder_summary(
        manifest_name="c",
        manifest_total=3,
        states={"done": 2, "failed": 1},
        credits_all_runs=20,
        last_run=a_run("2026-12-02T02:15:03Z", succeeded=0, exit_code=1),
        previous=good,
    )
    assert bad["last_run"]["exit_code"] == 1
    assert bad["last_success_at"] == good["last_success_at"] is not None


def test_an_older_run_summary_is_taken_as_the_last_run() -> None:
    old_style = a_run("2026-11-30T02:15:03Z", succeeded=4)  # what summary.json used to be
    summary = folder_summary(
        manifest_name="catalog",
        manifest_total=4,
        states={"done": 4},
        credits_all_runs=4000,
        last_run=None,
        previous=old_style,
    )
    assert summary["last_run"]["started_at"] == "2026-11-30T02:15:03Z"


def test_unreadable_summary_reads_as_none(tmp_path: Path) -> None:
    assert read_folder_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text("{torn")
    assert read_folder_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert read_folder_summary(tmp_path) is None
