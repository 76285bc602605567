"""The real CLI against the emulator in the live API's regime: edits slower than the CDN's
gateway, a private result bucket, live error bodies. Money is counted from the emulator's
charge log (what the account paid), never from answers.

Short real times stand for the live ones: 0.4 s edits behind a 0.25 s gateway behave as 100 s
edits behind Cloudflare's 100 s.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.emulator.charges import charges_by_prompt
from pipeline.layout import REPORT_DATA_DIR
from tests.helpers.e2e import (
    QUICK_POLLS,
    Expected,
    assert_outputs_whole,
    records,
    run_inprocess,
    states,
    write_catalog,
)
from tests.helpers.emulator import RunningEmulator, emulator_thread

# Whole runs of the CLI against the emulator: make test runs them, test-fast does not.
pytestmark = pytest.mark.slow

FAST = ["--no-progress", "--no-report", "--rpm", "60000", "--config", str(QUICK_POLLS)]
JOBS = 8
CONCURRENCY = 4
SLOW_EDITS = {"edit_seconds": 0.4, "edit_jitter": 0.1, "gateway_timeout": 0.25}
FINISHED_WORDS = frozenset({"SUCCESS", "COMPLETED", "SUCCEEDED"})


def _run(
    args: list[str],
    emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    return run_inprocess(args, emulator.env, monkeypatch, capsys)


def _catalog_args(tmp_path: Path, count: int = JOBS, n: int = 1) -> tuple[list[str], Path]:
    manifest = write_catalog(tmp_path, count, images=count, n=n)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), *FAST, "--concurrency", str(CONCURRENCY)]
    return args, out


def _sync_calls(emulator: RunningEmulator) -> list[dict[str, Any]]:
    """Feature calls sent without "async": held open (answered by the origin or the CDN)."""
    return [
        entry
        for entry in emulator.calls("features", status=None)
        if entry["fault"] == "gateway_524"
        or (entry["status"] == 200 and entry["fault"] != "processing")
    ]


def _assert_no_sync_call_after_the_first_gateway_error(emulator: RunningEmulator) -> None:
    lost = [e for e in emulator.calls("features", status=524)]
    if not lost:
        return
    first = min(entry["ts"] for entry in lost)  # when the run could first know
    late = [e for e in _sync_calls(emulator) if e["arrived"] > first]
    assert late == [], "a sync call was sent after the run's first gateway error"


def _assert_each_lost_answer_resent_at_most_once(out: Path) -> None:
    lost = Counter(line["job_id"] for line in records(out) if line["status"] == "unknown_outcome")
    assert all(count <= 1 for count in lost.values()), lost
    for line in records(out):
        if line["status"] == "unknown_outcome":
            assert line["http_status"] == 524 and line["step"] == "feature"
            assert line["credits"] and line["error"]["kind"] == "server_error"


# -- edits slower than the gateway -------------------------------------------------------------


def test_async_edits_slower_than_the_gateway_are_each_paid_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, out = _catalog_args(tmp_path)
    with emulator_thread(**SLOW_EDITS) as emulator:
        result = _run([*args, "--async"], emulator, monkeypatch, capsys)
        emulator.drain()
        charges = emulator.server.state.charges
    assert result.code == 0, result.streams
    assert set(states(out).values()) == {"succeeded"}
    assert_outputs_whole(out, {f"sku-{j:04d}": Expected(1, (1024, 1024)) for j in range(JOBS)})
    per_job = emulator.server.state.edits_charged / JOBS
    assert per_job <= 1.05, per_job  # the figure: 43 charged for 16 jobs before
    assert len(charges_by_prompt(charges)) == JOBS
    assert not [c for c in charges if c.answered == "lost"]
    assert _sync_calls(emulator) == []


@pytest.mark.parametrize("mode", [[], ["--sync"]], ids=["defaults", "sync"])
def test_sync_calls_stop_at_the_first_gateway_error_and_lost_answers_are_resent_once(
    mode: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, out = _catalog_args(tmp_path)
    metrics = tmp_path / "pipeline.prom"
    with emulator_thread(**SLOW_EDITS) as emulator:
        result = _run([*args, *mode, "--metrics-file", str(metrics)], emulator, monkeypatch, capsys)
        emulator.drain()
        state = emulator.server.state
    assert result.code == 0, result.streams
    assert set(states(out).values()) == {"succeeded"}
    assert_outputs_whole(out, {f"sku-{j:04d}": Expected(1, (1024, 1024)) for j in range(JOBS)})
    _assert_no_sync_call_after_the_first_gateway_error(emulator)
    _assert_each_lost_answer_resent_at_most_once(out)
    lost = len(emulator.calls("features", status=524))
    if mode:  # sync calls of 0.4 s behind a 0.25 s gateway: the first wave is lost, and paid
        assert 1 <= lost <= CONCURRENCY
    # Money, from the charge log: each job paid once, plus once per answer lost (re-sent async).
    paid = {prompt: len(calls) for prompt, calls in charges_by_prompt(state.charges).items()}
    assert len(paid) == JOBS and sum(paid.values()) == JOBS + lost
    assert all(count <= 2 for count in paid.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["possibly_charged"] == lost
    assert (
        f'onemin_pipeline_possibly_charged{{manifest="e2e"}} {float(lost)}' in metrics.read_text()
    )
    assert summary["last_run"]["credits"]["possibly_charged"] == lost
    if lost:
        assert f"possibly charged: {lost}" in result.stdout
        status = run_inprocess(["status", str(out)], {}, monkeypatch, capsys)
        assert f"possibly charged: {lost}" in status.stdout


def test_answers_lost_twice_fail_the_job_outcome_unknown_and_count_as_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every answer lost after the charge: each job's call is sent twice, never a third time;
    both count as spent and possibly charged; the job fails for a person to decide."""
    args, out = _catalog_args(tmp_path, count=2)
    with emulator_thread(rate_lost_after_charge=1.0, seed=3) as emulator:
        result = _run([*args, "--max-attempts", "5"], emulator, monkeypatch, capsys)
        state = emulator.server.state
        again = _run(args, emulator, monkeypatch, capsys)  # nothing retried on its own
        assert again.code == 1 and len(emulator.calls("features", status=None)) == 4
    assert result.code == 1, result.streams
    failed = [line for line in records(out) if line["status"] == "failed"]
    assert {line["error"]["kind"] for line in failed} == {"outcome_unknown"}
    assert not any(line["error"]["transient"] for line in failed)
    assert len(emulator.calls("features", status=None)) == 4  # two a job, not one more
    assert state.edits_charged == 4 and len(state.lost_charges()) == 4
    lost_lines = [line for line in records(out) if line["status"] == "unknown_outcome"]
    assert len(lost_lines) == 4
    spent = json.loads((out / "summary.json").read_text())["credits_all_runs"]
    assert spent == sum(line["credits"] for line in lost_lines)  # counted as spent
    status = run_inprocess(["status", str(out)], {}, monkeypatch, capsys)
    assert "outcome_unknown" in status.stdout and "possibly charged: 4" in status.stdout


def test_lost_answers_count_against_max_credits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three calls of ~1000 credits fit --max-credits 3000; answers lost count as spent, so the
    run stops once the lost and the paid together reach it."""
    args, _out = _catalog_args(tmp_path, count=6)
    args[args.index("--concurrency") + 1] = "1"
    with emulator_thread(rate_lost_after_charge=1.0, seed=3) as emulator:
        result = _run([*args, "--max-credits", "3000"], emulator, monkeypatch, capsys)
    assert result.code == 3, result.streams
    assert "--max-credits 3000 reached" in result.stdout
    assert len(emulator.calls("features", status=None)) == 3  # lost answers spent the budget


# -- a private result bucket -------------------------------------------------------------------


def _write_n_catalog(folder: Path, counts: list[int]) -> Path:
    (folder / "in").mkdir(parents=True, exist_ok=True)
    jobs = []
    for j, n in enumerate(counts):
        Image.new("RGB", (64, 64), (30 * j % 255, 90, 160)).save(folder / "in" / f"p{j}.png")
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (10 + j, 10, 50, 50))
        mask.save(folder / "in" / f"m{j}.png")
        jobs.append(
            {
                "id": f"job-{n}-{j}",
                "image": f"in/p{j}.png",
                "mask": f"in/m{j}.png",
                "prompt": f"studio shot {j}",
                "n": n,
            }
        )
    manifest = {"version": 1, "name": "private", "defaults": {"type": "inpaint"}, "jobs": jobs}
    path = folder / "catalog.yaml"
    path.write_text(json.dumps(manifest))
    return path


def test_a_private_bucket_delivers_every_image_and_images_paid_equal_images_wanted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = [1, 2, 3, 4]
    manifest = _write_n_catalog(tmp_path, counts)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), *FAST]
    dry = run_inprocess([*args, "--dry-run"], {}, monkeypatch, capsys)
    assert dry.code == 0 and "one call per image: 10 calls, not 4" in dry.stdout, dry.stdout
    with emulator_thread() as emulator:
        result = _run(args, emulator, monkeypatch, capsys)
        state = emulator.server.state
    assert result.code == 0, result.streams
    wanted = sum(counts)
    assert state.images_charged == wanted == state.edits_charged  # one call of n: 1 per image
    assert all(charge.n == 1 for charge in state.charges)
    expected = {f"job-{n}-{j}": Expected(n, (1024, 1024)) for j, n in enumerate(counts)}
    assert_outputs_whole(out, expected)
    # Each image's call is in the ledger under its index, so a resume never buys it again.
    parts = Counter(
        (line["job_id"], line["part"]) for line in records(out) if line["status"] == "submitted"
    )
    assert {job for job, part in parts if part is not None} == {"job-2-1", "job-3-2", "job-4-3"}
    assert {(job, part) for job, part in parts if job == "job-4-3"} == {
        ("job-4-3", index) for index in range(4)
    }
    done = [line for line in records(out) if line["status"] == "succeeded"]
    assert all(len(line["uuids"]) == len(line["outputs"]) for line in done if line["uuids"])


def test_a_paid_image_out_of_reach_makes_the_job_partial_and_redo_missing_buys_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The asset host answered the check, then refused the results (a bucket made private
    meanwhile): image 0 comes through its temporaryUrl, image 1 cannot be had. Never bought
    again silently: partial, exit 1, until --redo-missing buys exactly that image."""
    from pipeline.api.client import OneMinClient

    manifest = _write_n_catalog(tmp_path, [2])
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), *FAST]

    async def said_yes(self: OneMinClient, path: str) -> bool:
        self.unsigned_reads = True
        return True

    with emulator_thread() as emulator:
        with monkeypatch.context() as patched:
            patched.setattr(OneMinClient, "serves_unsigned", said_yes)
            result = _run(args, emulator, monkeypatch, capsys)
        assert result.code == 1, result.streams
        assert "1 partial" in result.stdout
        assert emulator.server.state.images_charged == 2  # one call, two images
        [partial] = [line for line in records(out) if line["status"] == "partial"]
        assert partial["missing"] == [1] and partial["outputs"] == ["job-2-0/0.png"]
        status = run_inprocess(["status", str(out)], {}, monkeypatch, capsys)
        assert (
            status.code == 1 and "partial" in status.stdout and "missing images 1" in status.stdout
        )

        again = _run(args, emulator, monkeypatch, capsys)  # nothing bought silently
        assert again.code == 1 and emulator.server.state.images_charged == 2

        redo = _run([*args, "--redo-missing"], emulator, monkeypatch, capsys)
        assert redo.code == 0, redo.streams
        state = emulator.server.state
        assert state.images_charged == 3 and state.charges[-1].n == 1  # exactly the missing one
    assert_outputs_whole(out, {"job-2-0": Expected(2, (1024, 1024))})
    assert states(out) == {"job-2-0": "succeeded"}


# -- what the API says, shown ------------------------------------------------------------------


def test_a_live_400_is_tried_once_and_its_error_code_and_cause_are_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, out = _catalog_args(tmp_path, count=3)
    with emulator_thread(rate_busy_400=1.0, seed=2) as emulator:
        result = _run(args, emulator, monkeypatch, capsys)
        calls = emulator.calls("features", status=None)
        state = emulator.server.state
    assert result.code == 1, result.streams
    assert len(calls) == 3 and {entry["status"] for entry in calls} == {400}  # one try each
    assert state.charges == []
    failed = [line for line in records(out) if line["status"] == "failed"]
    assert len(failed) == 3
    for line in failed:
        error = line["error"]
        assert (error["kind"], error["http_status"], error["transient"]) == (
            "bad_request",
            400,
            False,
        )
        message = error["message"]
        assert "EXTERNAL_API_RESPONSE_WITH_ERROR: " in message and "busy" not in message.lower()
    status = run_inprocess(["status", str(out)], {}, monkeypatch, capsys)
    assert status.code == 1
    assert status.stdout.count("EXTERNAL_API_RESPONSE_WITH_ERROR: ") == 3
    assert "EXTERNAL_API_RESPONSE_WITH_ERROR" in result.streams  # the log's failure lines
    report = run_inprocess(["report", str(out)], {}, monkeypatch, capsys)
    assert report.code == 0, report.streams
    chunks = sorted((out / REPORT_DATA_DIR).glob("*/*.js"))  # the page's jobs are in its chunks
    page = (out / "report.html").read_text() + "".join(chunk.read_text() for chunk in chunks)
    assert page.count("EXTERNAL_API_RESPONSE_WITH_ERROR: ") >= 3  # the review page's cards
