"""The ledger's lines for the live API's harder edges, folded: parts of a job bought one call per
image, unknown outcomes and partial jobs. Resume, ``status`` and the budgets read them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from pipeline.layout import LEDGER_NAME
from pipeline.ledger import Status, read_ledger
from pipeline.reporting.status import format_status, read_status

ERROR = {"kind": "server_error", "message": "HTTP 524: A timeout occurred", "http_status": 524}


def line(job_id: str, status: str, key: str = "k1", **fields: Any) -> dict[str, Any]:
    base = {"ts": "2026-12-01T00:00:00.000Z", "job_id": job_id, "status": status, "key": key}
    return base | fields


def write(path: Path, *lines: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in lines))
    return path


def part(job_id: str, index: int, uuid: str, paths: list[str], **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "uuid": uuid,
        "result_paths": paths,
        "credits": 1000,
        "part": index,
    } | fields
    return line(job_id, "submitted", **values)


def test_parts_are_paid_once_each_and_resumed_by_index(tmp_path: Path) -> None:
    out = write(
        tmp_path,
        line("j", "started"),
        part("j", 0, "u0", []),
        part("j", 0, "u0", ["r/a.png"]),  # the same record, finished: one purchase
        part("j", 1, "u1", []),
    )
    ledger = read_ledger(out / LEDGER_NAME)
    assert ledger.credits_spent == 2000
    state = ledger.jobs["j"]
    assert state.status is Status.SUBMITTED and state.submitted is None  # no whole-job record
    resume = ledger.resume()
    parts = resume.parts_for("j", "k1")
    assert sorted(parts) == [0, 1]
    assert parts[0].result.result_paths == ("r/a.png",) and parts[0].result.finished
    assert parts[1].result.uuid == "u1" and not parts[1].result.result_paths
    assert resume.pending_for("j", "k1") is None
    assert resume.parts_for("j", "other-content") == {}


def test_a_line_for_other_content_forgets_the_parts(tmp_path: Path) -> None:
    out = write(tmp_path, part("j", 0, "u0", ["r/a.png"]), line("j", "started", key="k2"))
    resume = read_ledger(out / LEDGER_NAME).resume()
    assert resume.parts_for("j", "k1") == {} and resume.parts_for("j", "k2") == {}


def test_a_succeeded_job_bought_per_image_keeps_each_outputs_record(tmp_path: Path) -> None:
    outputs = ["j/0.png", "j/1.png"]
    out = write(
        tmp_path,
        part("j", 0, "u0", ["r/a.png"]),
        part("j", 1, "u1", ["r/b.png"]),
        line("j", "succeeded", outputs=outputs, attempts=2, credits=2000, uuids=["u0", "u1"]),
    )
    ledger = read_ledger(out / LEDGER_NAME)
    assert ledger.output_records("j") == ("u0", "u1")
    assert ledger.resume().parts_for("j", "k1") == {}  # done: nothing left to fetch
    assert ledger.credits_spent == 2000


def test_unknown_outcomes_are_spent_possibly_charged_and_remembered_per_job(
    tmp_path: Path,
) -> None:
    lost: dict[str, Any] = {
        "step": "feature",
        "attempt": 1,
        "http_status": 524,
        "error": ERROR,
        "credits": 1000,
    }
    out = write(tmp_path, line("j", "started"), line("j", "unknown_outcome", **lost))
    ledger = read_ledger(out / LEDGER_NAME)
    assert (ledger.credits_spent, ledger.possibly_charged) == (1000, 1)
    assert ledger.jobs["j"].status is Status.RETRYING
    assert ledger.resume().lost_answers("j", "k1") == 1
    # A job-fatal end (a person decides, then --retry-failed) starts the allowance over; a
    # transient one does not.
    fatal = {"kind": "outcome_unknown", "message": "lost twice", "transient": False}
    write(tmp_path, line("j", "unknown_outcome", **lost), line("j", "failed", error=fatal))
    assert read_ledger(out / LEDGER_NAME).resume().lost_answers("j", "k1") == 0
    outage = ERROR | {"transient": True}
    write(tmp_path, line("j", "unknown_outcome", **lost), line("j", "failed", error=outage))
    assert read_ledger(out / LEDGER_NAME).resume().lost_answers("j", "k1") == 1


def test_a_partial_job_shows_its_missing_images_in_status(tmp_path: Path) -> None:
    error = {"kind": "download", "message": "result 1: no URL serves it"}
    partial: dict[str, Any] = {
        "outputs": ["j/0.png"],
        "missing": [1, 2],
        "uuid": "u0",
        "attempts": 1,
        "credits": 3000,
        "error": error,
    }
    lost: dict[str, Any] = {"step": "feature", "attempt": 1, "error": ERROR, "credits": 1000}
    out = write(
        tmp_path,
        line("j", "submitted", uuid="u0", result_paths=["r/a", "r/b", "r/c"], credits=3000),
        line("j", "partial", **partial),
        line("other", "unknown_outcome", **lost),
    )
    (out / "j").mkdir()
    (out / "j" / "0.png").write_bytes(b"x")
    ledger = read_ledger(out / LEDGER_NAME)
    assert ledger.jobs["j"].status is Status.PARTIAL and ledger.missing_of("j") == (1, 2)
    found = ledger.resume().partial_for("j", "k1")
    assert found is not None and (found.delivered, found.missing) == (("j/0.png",), (1, 2))
    assert ledger.resume().pending_for("j", "k1") is None  # the paid record is settled
    status = read_status(out)
    [job] = [job for job in status.jobs if job.job_id == "j"]
    assert (job.state, job.missing) == ("partial", (1, 2))
    text = format_status(status)
    assert "partial    1" in text and "j: missing images 1, 2 of 3" in text
    assert "possibly charged: 1" in text
    payload = status.as_json()
    assert payload["possibly_charged"] == 1
    assert next(item for item in payload["jobs"] if item["id"] == "j")["missing"] == [1, 2]
