"""Reports and status at scale: written streaming, in bounded memory, agreeing with resume.

The figures at a million jobs are the benchmark's (``bench/scenarios/report.py``); here the same
properties on small folders: memory grows with the compact fold only (not with a row per job),
chunks replace the previous build's only once the new page is in place, the run's automatic
report stops at a fixed size, ``status`` streams valid JSON, and resume (with or without its
checkpoint), ``status``, the page and the detailed fold agree on every job.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from pipeline.images.checks import ImageChecks
from pipeline.layout import REPORT_DATA_DIR as DATA_DIR
from pipeline.layout import REPORT_NAME
from pipeline.ledger import LEDGER_NAME, read_ledger, write_checkpoint
from pipeline.ledger.reader import read_state
from pipeline.reporting.status import read_status, write_status
from pipeline.review import page as report_page
from pipeline.review.page import build_payload, write_report
from pipeline.review.view import read_report_fold
from pipeline.runner import aftermath
from pipeline.runner.options import Console
from tests.helpers.ledgers import extras_fields, job_fields, random_ledger

CHUNK_ROWS = 250
# What a job may cost the report's build beyond a fixed base: the compact fold (~100 bytes),
# where its started line is (8), its place on the page (4), with room to spare; a row per job
# held until the end (as before: ~2.5 KB) would be ten times this.
REPORT_BYTES_PER_JOB = 250


def synthetic_run(out: Path, jobs: int) -> Path:
    """``jobs`` jobs over one source: succeeded, one in 50 failed, their lines only."""
    out.mkdir(parents=True)
    lines: list[dict[str, Any]] = []
    for number in range(jobs):
        job_id, key = f"sku-{number:06d}", f"{number:064x}"
        second, millis = divmod(number, 1000)
        ts = f"2026-12-01T10:{second // 60 % 60:02d}:{second % 60:02d}.{millis:03d}Z"
        details = {"feature": "IMAGE_INPAINTER", "image": "/nowhere/src.png",
                   "parameters": {"prompt": f"studio shot {number}", "n": 1}}  # fmt: skip
        lines.append({"ts": ts, "job_id": job_id, "status": "started", "key": key,
                      "job": details})  # fmt: skip
        if number % 50 == 3:
            error = {"kind": "bad_request", "message": "no", "http_status": 400}
            lines.append({"ts": ts, "job_id": job_id, "status": "failed", "key": key,
                          "error": error, "attempts": 1})  # fmt: skip
        else:
            lines.append({"ts": ts, "job_id": job_id, "status": "succeeded", "key": key,
                          "outputs": [f"{job_id}/0.png"], "attempts": 1, "credits": 6})  # fmt: skip
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return out


def peak_of(work: Any) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_page, "CHUNK_ROWS", CHUNK_ROWS)


def test_the_report_holds_the_fold_not_the_rows(tmp_path: Path, small_chunks: None) -> None:
    small, big = 500, 2500
    runs = {jobs: synthetic_run(tmp_path / f"run-{jobs}", jobs) for jobs in (small, big)}
    peaks = {jobs: peak_of(lambda out=out: write_report(out)) for jobs, out in runs.items()}
    per_job = (peaks[big] - peaks[small]) / (big - small)
    assert per_job < REPORT_BYTES_PER_JOB, f"{per_job:.0f} bytes a job"
    chunks = list((runs[big] / DATA_DIR).glob("*/*.js"))
    assert len(chunks) == big // CHUNK_ROWS  # written as they filled
    payload, _ = build_payload(runs[big])
    assert len(payload["jobs"]) == big and payload["header"]["states"]["failed"] == big // 50


def test_a_new_build_replaces_the_old_chunks_only_once_its_page_is_in_place(
    tmp_path: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = synthetic_run(tmp_path / "out", 600)
    write_report(out)
    (first,) = (out / DATA_DIR).iterdir()
    page = (out / REPORT_NAME).read_text()

    def broken(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(report_page, "render_page", broken)
        with pytest.raises(OSError):
            write_report(out)
    assert [p.name for p in (out / DATA_DIR).iterdir()] == [first.name]  # the new one gone
    assert (out / REPORT_NAME).read_text() == page  # the old page, whole, with its chunks
    write_report(out)
    (second,) = (out / DATA_DIR).iterdir()
    assert second.name != first.name and second.name in (out / REPORT_NAME).read_text()


def test_the_runs_own_report_stops_at_a_fixed_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.manifest import load_manifest
    from tests.helpers.images import demo_inputs, write_manifest

    demo_inputs(tmp_path)
    job = {"id": "one", "type": "background", "image": "images/item.png", "prompt": "p"}
    manifest = load_manifest(write_manifest(tmp_path, {"jobs": [job]}))
    out = synthetic_run(tmp_path / "out", 10)
    limit = aftermath.AUTO_REPORT_MAX_JOBS
    console = Console.stdio()
    assert aftermath.write_run_report(out, manifest, limit + 1, console) is None
    assert not (out / REPORT_NAME).exists()
    said = capsys.readouterr().err
    assert f"pipeline report {out}" in said and f"{limit + 1:,} jobs" in said
    assert aftermath.write_run_report(out, manifest, limit, console) == out / REPORT_NAME


def test_status_json_streams_one_job_a_line_and_parses_whole(tmp_path: Path) -> None:
    out = synthetic_run(tmp_path / "out", 120)
    sink = io.StringIO()
    all_done = write_status(out, sink, missing=lambda outputs: False, as_json=True)
    text = sink.getvalue()
    report = json.loads(text)
    assert not all_done
    assert set(report) == {
        "out", "manifest", "jobs", "counts", "total", "not_in_manifest", "credits_spent",
        "possibly_charged", "corrupt_lines",
    }  # fmt: skip
    assert report["total"] == 120 and report["counts"] == {"failed": 3, "succeeded": 117}
    assert sum(line.startswith('    {"id":') for line in text.splitlines()) == 120
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LEDGER_NAME).write_bytes(b"")
    sink = io.StringIO()
    write_status(empty, sink, as_json=True)
    assert json.loads(sink.getvalue())["jobs"] == []


def test_status_holds_the_fold_not_a_list_of_jobs(tmp_path: Path) -> None:
    small, big = 500, 2500
    runs = {jobs: synthetic_run(tmp_path / f"run-{jobs}", jobs) for jobs in (small, big)}

    def status(out: Path) -> None:
        write_status(out, io.StringIO(), missing=lambda outputs: False, as_json=True)

    peaks = {jobs: peak_of(lambda out=out: status(out)) for jobs, out in runs.items()}
    assert (peaks[big] - peaks[small]) / (big - small) < 150  # the compact fold's columns


@pytest.mark.parametrize("seed", range(4))
def test_resume_status_page_and_fold_agree_on_every_job(tmp_path: Path, seed: int) -> None:
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, seed, jobs=60)
    detailed = read_ledger(ledger, detailed=True)
    expected = {job_id: job.status.value for job_id, job in detailed.jobs.items()}
    fresh = read_state(ledger, use_checkpoint=False)
    write_checkpoint(read_state(ledger, use_checkpoint=False), ledger)
    resumed = read_state(ledger)
    assert resumed.checkpoint_note == "used"
    for state in (fresh, resumed):
        assert {job_id: state.jobs[job_id].status.value for job_id in state.jobs} == expected
        resume = state.resume()
        for job_id, job in detailed.jobs.items():
            assert resume.status_of(job_id, job.key) is job.status
    status = read_status(tmp_path, missing=lambda outputs: False)
    assert {job.job_id: job.state for job in status.jobs} == expected
    assert {job.job_id: job.missing for job in status.jobs if job.missing} == {
        job_id: detailed.missing_of(job_id)
        for job_id, job in detailed.jobs.items()
        if job.status.value == "partial"
    }
    assert status.possibly_charged == detailed.possibly_charged
    fold = read_report_fold(ledger)
    views = {view.job_id: view for view in map(fold.view, fold.ranked())}
    fold.close()
    assert {job_id: view.status for job_id, view in views.items()} == expected
    # What only the detailed readers keep: a job's details (its group too) on the page as in
    # the fold export reads, and the marketplace checks of its stored outputs there.
    for job_id, job in detailed.jobs.items():
        assert views[job_id].job == (msgspec.structs.asdict(job.details) if job.details else {})
        assert list(job.checks) == latest_checks(ledger)[job_id]
        assert fresh.jobs[job_id].checks == ()  # resume never decodes them


def latest_checks(ledger: Path) -> dict[str, list[ImageChecks]]:
    """Each job's checks as its latest line left them: a start clears them, a stored result
    (``succeeded``, ``refetched``) sets them; read from the lines themselves."""
    checks: dict[str, list[ImageChecks]] = {}
    for raw in ledger.read_bytes().splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if line.get("status") == "started":
            checks[line["job_id"]] = []
        elif line.get("status") in ("succeeded", "refetched") and isinstance(line["outputs"], list):
            stored = line.get("checks", [])
            checks[line["job_id"]] = [ImageChecks.from_json(orjson.dumps(one)) for one in stored]
    return checks


def test_a_thumbnail_budget_defers_the_rest_to_a_later_report(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    lines = []
    for number in range(6):
        source = tmp_path / f"src-{number}.png"
        Image.new("RGB", (40, 30), (number * 40, 90, 90)).save(source)
        details = {"feature": "BACKGROUND_REPLACER", "image": str(source),
                   "parameters": {"prompt": "p"}}  # fmt: skip
        lines.append({"ts": "2026-12-01T10:00:00.000Z", "job_id": f"j{number}",
                      "status": "started", "key": "k", "job": details})  # fmt: skip
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    write_report(out, thumbnail_budget=2)
    (chunk,) = (out / DATA_DIR).glob("*/0.js")
    text = chunk.read_text()
    sources = json.loads(text[text.index(",") + 1 : text.rindex(")")])["sources"]
    notes = [source.get("note") for source in sources]
    assert len(list((out / ".thumbs").iterdir())) == 2 and notes.count("deferred") == 4
    write_report(out)  # a report without a budget makes the rest
    assert len(list((out / ".thumbs").iterdir())) == 6


# One folder's ledger with every line the live API's regime adds, written as a run writes them.
LIVE_KEY = "a" * 64
LIVE_LOST = {"kind": "answer_lost", "message": "HTTP 524", "http_status": 524, "transient": True}
LIVE_LINES: list[dict[str, Any]] = [
    # "lost": one answer lost after sending (possibly charged), then bought and done
    {"job_id": "lost", "status": "started", "job": {"feature": "IMAGE_INPAINTER"}},
    {"job_id": "lost", "status": "unknown_outcome", "step": "feature", "attempt": 1,
     "error": LIVE_LOST, "http_status": 524, "credits": 6},
    {"job_id": "lost", "status": "submitted", "attempt": 2, "credits": 6, "uuid": "u-lost",
     "result_paths": ["r/0.png"]},
    {"job_id": "lost", "status": "succeeded", "outputs": ["lost/0.png"], "attempts": 2,
     "credits": 6, "uuid": "u-lost"},
    # "parts": bought one call per image (a private bucket), each part paid once, done
    {"job_id": "parts", "status": "started", "job": {"feature": "IMAGE_INPAINTER", "n": 2}},
    {"job_id": "parts", "status": "submitted", "attempt": 1, "credits": 6, "uuid": "u-p0",
     "part": 0, "result_paths": []},
    {"job_id": "parts", "status": "submitted", "attempt": 1, "credits": 6, "uuid": "u-p0",
     "part": 0, "result_paths": ["r/0.png"]},
    {"job_id": "parts", "status": "submitted", "attempt": 1, "credits": 6, "uuid": "u-p1",
     "part": 1, "result_paths": ["r/0.png"]},
    {"job_id": "parts", "status": "succeeded", "outputs": ["parts/0.png", "parts/1.png"],
     "attempts": 1, "credits": 12, "uuid": "u-p0", "uuids": ["u-p0", "u-p1"]},
    # "half": two parts paid, the second never fetched: partial, missing image 1
    {"job_id": "half", "status": "started", "job": {"feature": "IMAGE_INPAINTER", "n": 2}},
    {"job_id": "half", "status": "submitted", "attempt": 1, "credits": 6, "uuid": "u-h0",
     "part": 0, "result_paths": ["r/0.png"]},
    {"job_id": "half", "status": "submitted", "attempt": 1, "credits": 6, "uuid": "u-h1",
     "part": 1, "result_paths": ["r/0.png"]},
    {"job_id": "half", "status": "partial", "outputs": ["half/0.png"], "missing": [1],
     "uuids": ["u-h0"], "uuid": "u-h0", "attempts": 3, "credits": 12,
     "error": {"kind": "download_failed", "message": "403: AccessDenied", "http_status": 403}},
    # "pending": one part paid, then the run was killed: a resume fetches it, buys only part 1
    {"job_id": "pending", "status": "started", "job": {"feature": "IMAGE_INPAINTER", "n": 2}},
    {"job_id": "pending", "status": "submitted", "attempt": 1, "credits": 6, "uuid": "u-q0",
     "part": 0, "result_paths": ["r/0.png"]},
    {"job_id": "pending", "status": "unknown_outcome", "step": "feature", "attempt": 1,
     "error": LIVE_LOST, "credits": 6, "part": 1},
    # "gave-up": two answers lost, failed (job-fatal): the allowance of one re-send starts over
    {"job_id": "gave-up", "status": "started", "job": {"feature": "IMAGE_INPAINTER"}},
    {"job_id": "gave-up", "status": "unknown_outcome", "step": "feature", "attempt": 1,
     "error": LIVE_LOST, "credits": 6},
    {"job_id": "gave-up", "status": "unknown_outcome", "step": "feature", "attempt": 2,
     "error": LIVE_LOST, "credits": 6},
    {"job_id": "gave-up", "status": "failed", "attempts": 2,
     "error": {"kind": "outcome_unknown", "message": "the answers of 2 calls were lost"}},
]  # fmt: skip


def write_live_ledger(out: Path) -> bytes:
    out.mkdir(parents=True, exist_ok=True)
    data = b"".join(
        orjson.dumps({"ts": f"2026-12-01T10:00:{second:02d}.000Z", "key": LIVE_KEY, **line}) + b"\n"
        for second, line in enumerate(LIVE_LINES)
    )
    (out / LEDGER_NAME).write_bytes(data)
    return data


def test_the_live_apis_lines_read_alike_through_resume_checkpoint_status_and_page(
    tmp_path: Path,
) -> None:
    """Unknown outcomes, parts, partial jobs: what the detailed fold makes of them, resume makes
    of them from the whole ledger and from a checkpoint cut at every line plus the tail after
    it; ``status`` shows them, and so do the page's data."""
    out = tmp_path / "out"
    data = write_live_ledger(out)
    ledger = out / LEDGER_NAME
    detailed = read_ledger(ledger, detailed=True)
    expected = {
        "lost": "succeeded", "parts": "succeeded", "half": "partial", "pending": "submitted",
        "gave-up": "failed",
    }  # fmt: skip
    assert {job_id: job.status.value for job_id, job in detailed.jobs.items()} == expected
    assert detailed.possibly_charged == 4 and detailed.credits_spent == 6 * 10
    ends = [index + 1 for index, byte in enumerate(data) if byte == ord("\n")]
    for cut in (0, *ends):  # a checkpoint as of every line, the lines after it read again
        folder = tmp_path / f"at-{cut}"
        folder.mkdir()
        (folder / LEDGER_NAME).write_bytes(data[:cut])
        write_checkpoint(
            read_state(folder / LEDGER_NAME, use_checkpoint=False), folder / LEDGER_NAME
        )
        (folder / LEDGER_NAME).write_bytes(data)
        resumed = read_state(folder / LEDGER_NAME)
        assert resumed.checkpoint_note == "used"
        assert resumed.tail_lines == (len(ends) - ends.index(cut) - 1 if cut else len(ends))
        assert extras_fields(resumed.extras) == extras_fields(detailed.extras)
        assert (resumed.credits_spent, resumed.possibly_charged) == (60, 4)
        mine, theirs = resumed.resume(), detailed.resume()
        for job_id in expected:
            assert job_fields(resumed.jobs[job_id]) == job_fields(detailed.jobs[job_id])
            for ask in ("pending_for", "parts_for", "partial_for", "lost_answers"):
                assert getattr(mine, ask)(job_id, LIVE_KEY) == getattr(theirs, ask)(
                    job_id, LIVE_KEY
                )
            assert resumed.output_records(job_id) == detailed.output_records(job_id)
    resume = read_state(ledger).resume()
    assert set(resume.parts_for("pending", LIVE_KEY)) == {0}  # part 1 is bought, part 0 fetched
    assert resume.lost_answers("pending", LIVE_KEY) == 1
    assert resume.lost_answers("gave-up", LIVE_KEY) == 0  # a job-fatal end: the count starts over
    partial = resume.partial_for("half", LIVE_KEY)
    assert partial is not None and partial.missing == (1,) and partial.delivered == ("half/0.png",)
    assert read_state(ledger).output_records("parts") == ("u-p0", "u-p1")

    sink = io.StringIO()
    write_status(out, sink, missing=lambda outputs: False, as_json=True)
    streamed = json.loads(sink.getvalue())
    assert streamed["possibly_charged"] == 4 and streamed["credits_spent"] == 60
    states = {job["id"]: (job["state"], job.get("missing")) for job in streamed["jobs"]}
    assert states == {job_id: (state, [1] if job_id == "half" else None)
                      for job_id, state in expected.items()}  # fmt: skip
    whole = read_status(out, missing=lambda outputs: False)
    assert whole.as_json() == {**streamed, "jobs": whole.as_json()["jobs"]}
    assert [job.as_json() for job in whole.jobs] == streamed["jobs"]
    text = io.StringIO()
    write_status(out, text, missing=lambda outputs: False)
    assert "possibly charged: 4 feature calls" in text.getvalue()
    assert "half: missing images 1 of 2: 403: AccessDenied" in text.getvalue()

    payload, _ = build_payload(out, make_thumbs=False)
    column = {name: index for index, name in enumerate(payload["fields"])}
    rows = {row[column["id"]]: row for row in payload["jobs"]}
    statuses = payload["tables"]["status"]  # a row names its status by its index there
    assert {job_id: statuses[row[column["status"]]] for job_id, row in rows.items()} == expected
    assert payload["header"]["states"] == Counter(expected.values())
    assert list(rows)[:2] == ["half", "gave-up"]  # with the failed ones, first
