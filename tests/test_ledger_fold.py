"""The ledger's schema and its one fold: every reader sees the same state for every job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.layout import LEDGER_NAME
from pipeline.ledger import Status, parse_record, read_ledger, to_dict
from pipeline.ledger.fold import apply
from pipeline.ledger.schema import Failed, Submitted
from pipeline.models import ErrorInfo
from pipeline.plan.prepare import PlanOptions, Skip, skip_reason
from pipeline.reporting.status import read_status

ERROR = {"kind": "server_error", "message": "HTTP 503", "http_status": 503}


def line(job_id: str, status: str, key: str = "k1", **fields: Any) -> dict[str, Any]:
    return {
        "ts": "2026-12-01T00:00:00.000Z",
        "job_id": job_id,
        "status": status,
        "key": key,
        **fields,
    }


TIMEOUT = {"kind": "processing_timeout", "message": "still processing after 900 s"}
SUBMITTED: dict[str, Any] = {
    "attempt": 1,
    "credits": 4000,
    "uuid": "rec-1",
    "result_paths": ["r/0.png"],
}

# Each job's lines, and the state every reader must agree on.
CASES: dict[str, tuple[list[dict[str, Any]], Status]] = {
    "done": (
        [
            line("done", "started", job={"feature": "IMAGE_INPAINTER", "image": "/i.png"}),
            line("done", "uploaded", assets={"image": {"digest": "d1", "path": "a/1.png"}}),
            line("done", "submitted", **SUBMITTED),
            line("done", "succeeded", outputs=["done/0.png"], attempts=1, credits=4000),
        ],
        Status.SUCCEEDED,
    ),
    # A download retry after the feature was paid: the job stays submitted (was "retrying" in
    # `pipeline status` while resume saw "submitted").
    "download-retry": (
        [
            line("download-retry", "started"),
            line("download-retry", "submitted", **SUBMITTED),
            line("download-retry", "retrying", step="download", attempt=1, error=ERROR),
        ],
        Status.SUBMITTED,
    ),
    "feature-retry": (
        [
            line("feature-retry", "started"),
            line("feature-retry", "retrying", step="feature", attempt=1, error=ERROR),
        ],
        Status.RETRYING,
    ),
    "failed": (
        [
            line("failed", "started"),
            line("failed", "failed", attempts=3, error={**ERROR, "transient": True}),
        ],
        Status.FAILED,
    ),
    # Content changed after a success: the new content's run was interrupted at its start.
    "changed": (
        [
            line("changed", "started"),
            line("changed", "submitted", **SUBMITTED),
            line("changed", "succeeded", outputs=["changed/0.png"], attempts=1),
            line("changed", "started", key="k2"),
        ],
        Status.STARTED,
    ),
}


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    lines = [orjson.dumps(record) for case, _ in CASES.values() for record in case]
    lines.insert(3, b'{"job_id": "x", "status": "succeeded", "outputs": 7}')  # breaks the schema
    lines.insert(5, b"not json at all")
    path = tmp_path / LEDGER_NAME
    path.write_bytes(b"\n".join(lines) + b'\n{"job_id": "torn", "sta')
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "0.png").write_bytes(b"x")
    return path


def test_resume_and_status_agree_on_every_job(ledger_path: Path) -> None:
    resume = read_ledger(ledger_path).resume()
    detailed = read_ledger(ledger_path, detailed=True)
    status = {job.job_id: job.state for job in read_status(ledger_path.parent).jobs}
    for job_id, (records, expected) in CASES.items():
        key = records[-1]["key"]
        assert resume.status_of(job_id, key) is expected, job_id
        assert detailed.jobs[job_id].status is expected, job_id
        assert status[job_id] == expected.value, job_id


RUN_FIELDS = ("status", "key", "order", "submitted", "outputs", "error", "attempts", "credits")


def test_the_resume_read_folds_the_same_states_as_the_detailed_one(ledger_path: Path) -> None:
    # Resume decodes only the fields a run reads (schema.CoreRecord): those must come out the
    # same, and so must the assets, the spend and the damage.
    core, detailed = read_ledger(ledger_path), read_ledger(ledger_path, detailed=True)
    assert core.jobs.keys() == detailed.jobs.keys()
    for job_id, job in core.jobs.items():
        other = detailed.jobs[job_id]
        for name in RUN_FIELDS:
            mine, theirs = getattr(job, name), getattr(other, name)
            if name == "submitted" and mine is not None:  # the same record type, both ways
                mine, theirs = to_dict(mine), to_dict(theirs)
            assert mine == theirs, (job_id, name)
        assert job.details is None and job.retries is None  # what only status and report use
    assert core.assets == detailed.assets
    assert core.credits_spent == detailed.credits_spent
    assert core.damage == detailed.damage


def test_damage_is_counted_not_fatal(ledger_path: Path) -> None:
    state = read_ledger(ledger_path)
    assert state.damage.corrupt_lines == [4, 6]  # the schema break and the garbage, by number
    assert state.damage.torn_tail
    assert "torn" not in state.jobs and "x" not in state.jobs


def test_a_paid_result_is_pending_until_success_or_other_content(ledger_path: Path) -> None:
    resume = read_ledger(ledger_path).resume()
    pending = resume.pending_for("download-retry", "k1")
    assert pending is not None and pending.result.result_paths == ("r/0.png",)
    assert resume.pending_for("done", "k1") is None  # stored
    assert resume.pending_for("changed", "k2") is None  # paid for the old content only
    assert resume.asset_for("d1") is not None and resume.asset_for("nope") is None


def test_a_record_still_processing_is_pending_and_paid_once(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    processing: dict[str, Any] = {
        "attempt": 1,
        "credits": 4000,
        "uuid": "rec-9",
        "result_paths": [],
    }
    finished = {**processing, "result_paths": ["r/9.png"]}
    path.write_bytes(
        b"\n".join(
            orjson.dumps(r)
            for r in (
                line("slow", "started"),
                line("slow", "submitted", **processing),
                line(
                    "slow",
                    "failed",
                    attempts=1,
                    uuid="rec-9",
                    error={"kind": "processing_timeout", "message": "m"},
                ),
            )
        )
        + b"\n"
    )
    state = read_ledger(path)
    pending = state.resume().pending_for("slow", "k1")
    # --retry-failed polls the record once more instead of buying the edit again.
    assert pending is not None and pending.result.uuid == "rec-9"
    assert pending.result.result_paths == ()
    with path.open("ab") as handle:
        handle.write(orjson.dumps(line("slow", "submitted", **finished)) + b"\n")
    state = read_ledger(path)
    assert state.credits_spent == 4000  # the finished answer repeats the uuid: one purchase


def test_records_round_trip_through_their_lines() -> None:
    submitted = Submitted(
        job_id="a",
        key="k",
        ts="t",
        uuid="rec",
        result_paths=("r/0.png",),
        attempt=2,
        credits=4000,
        temporary_url="https://x",
        used_credit=10,
        credit_limit=20,
    )
    error = ErrorInfo("timeout", "slow", None, True)
    failed = Failed(job_id="a", key="k", ts="t", error=error, attempts=4, uuid="rec")
    for record in (submitted, failed):
        assert parse_record(orjson.loads(orjson.dumps(to_dict(record)))) == record


def test_the_skip_rule() -> None:
    state = read_ledger(Path("/nonexistent"))
    assert skip_reason(None, PlanOptions()) is None
    ledger_jobs = {}
    for job_id, (records, _) in CASES.items():
        for record in records:
            parsed = parse_record(record)
            assert parsed is not None
            apply(state, parsed)
        ledger_jobs[job_id] = state.jobs[job_id]
    assert skip_reason(ledger_jobs["done"], PlanOptions()) is Skip.DONE
    # A transient failure (an outage) runs again without --retry-failed.
    assert skip_reason(ledger_jobs["failed"], PlanOptions()) is None
    job_fatal = Failed(job_id="f", key="k", error=ErrorInfo("bad_request", "no"), attempts=1)
    apply(state, job_fatal)
    assert skip_reason(state.jobs["f"], PlanOptions()) is Skip.FAILED
    assert skip_reason(state.jobs["f"], PlanOptions(retry_failed=True)) is None
    assert skip_reason(ledger_jobs["download-retry"], PlanOptions()) is None
