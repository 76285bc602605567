"""End to end: the real CLI against the emulator on 127.0.0.1 (issue 4's "done when")."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.images.provenance import read_provenance
from tests.helpers.e2e import (
    QUICK_POLLS,
    Expected,
    assert_outputs_whole,
    folder_summary,
    records,
    run_cli,
    spawn_cli,
    states,
    summary,
    write_catalog,
)
from tests.helpers.emulator import emulator_thread

# Whole runs of the CLI against the emulator: make test runs them, test-fast does not.
pytestmark = pytest.mark.slow

FAST = ["--no-progress", "--no-report", "--rpm", "60000", "--config", str(QUICK_POLLS)]


def test_all_jobs_done_then_a_second_run_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 6, images=3, n=2)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        args = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert_outputs_whole(out, {f"sku-{j:04d}": Expected(2, (1024, 1024)) for j in range(6)})
        # Every delivered image says it was AI-edited (docs/ledger.md#provenance), its pixels
        # untouched.
        marked = read_provenance((out / "sku-0000" / "0.png").read_bytes())
        assert marked is not None and marked["digital_source_type"].endswith(
            "compositeWithTrainedAlgorithmicMedia"
        )
        # Two images a job, one call each: the live bucket serves a record's first only.
        assert len(emulator.calls("features")) == 12
        assert emulator.server.state.images_charged == 12  # images paid = images wanted
        # 6 jobs over 3 photos + 3 byte-identical masks: uploads go by content, so 4
        assert len(emulator.calls("assets")) == 4
        requests_before = len(emulator.log)
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert len(emulator.log) == requests_before  # nothing sent at all
    # The no-op night keeps the folder's figures: the last run is still the one that ran.
    result = summary(out)
    assert result["counts"]["succeeded"] == 6 and result["exit_code"] == 0
    jobs = {"total": 6, "succeeded": 6, "failed": 0, "partial": 0, "pending": 0}
    assert folder_summary(out)["jobs"] == jobs
    assert len(list((out / "runs").glob("*.json"))) == 1


def test_faults_are_all_survived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_catalog(tmp_path, 30, images=3)
    out = tmp_path / "out"
    faults = {
        "rate_429": 0.1,
        "retry_after": "seconds",
        "rate_5xx": 0.1,
        "rate_drop": 0.05,
        "rate_malformed": 0.05,
        "rate_failed": 0.05,
        "rate_truncate": 0.1,
        "rate_expire": 0.2,
        "seed": 7,
    }
    with emulator_thread(**faults) as emulator:
        args = ["run", str(manifest), "--out", str(out), *FAST, "--max-attempts", "8"]
        code = run_cli([*args, "--config", str(_fast_backoff(tmp_path))], emulator.env, monkeypatch)
        injected = [e["fault"] for e in emulator.log if e["fault"]]
        assert len(injected) >= 10  # the faults really happened
        # A dropped call or an HTML 502/503 may have been charged (an unknown outcome): sent
        # again once; a job that meets a second fails for a person to decide, nothing else.
        failed = [line for line in records(out) if line["status"] == "failed"]
        assert {line["error"]["kind"] for line in failed} <= {"outcome_unknown"}
        assert code == (1 if failed else 0)
        charged = [e for e in emulator.calls("features") if e["credits"]]
        assert len(charged) == 30 - len(failed)  # each edit bought once despite the faults
    lost = {line["job_id"] for line in failed}
    assert {job for job, state in states(out).items() if state != "succeeded"} == lost
    done = {f"sku-{j:04d}" for j in range(30)} - lost
    assert_outputs_whole(out, {job: Expected(1, (1024, 1024)) for job in done})
    stats = summary(out)["stats"]
    assert stats["retry/count"] >= 10


def _fast_backoff(folder: Path) -> Path:
    profile = folder / "fast-retry.yaml"
    profile.write_text(
        "retry: {backoff_base: 0.01, backoff_max: 0.05, retry_after_max: 0.05}\n"
        "timeouts: {poll_initial: 0.05, poll_max: 0.2}\n"
    )
    return profile


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"api_key": "a-different-key"}, "key"),
        ({"credit_limit": 2000}, "credit"),  # two low-quality images' worth
    ],
)
def test_rejected_key_and_exhausted_credits_stop_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: dict[str, object], reason: str
) -> None:
    manifest = write_catalog(tmp_path, 10, images=2)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        for name, value in setup.items():
            if name == "credit_limit":
                emulator.server.state.credit_limit = int(value)  # type: ignore[call-overload]
            else:
                emulator.configure(**{name: value})
        args = ["run", str(manifest), "--out", str(out), *FAST, "--concurrency", "2"]
        assert run_cli(args, emulator.env, monkeypatch) == 3
        stopped = summary(out)["stopped"]
        assert reason in stopped["message"].lower()
        latest = states(out)
        assert "failed" not in latest.values()  # nothing is marked failed: all resumable
        assert len(emulator.calls("features", status=None)) <= 2 + 2  # stopped within a few
        # Fix the cause, run again: everything completes, nothing bought twice.
        emulator.configure(api_key="e2e-test-key-0123456789")
        emulator.server.state.credit_limit = 10**9
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert len([e for e in emulator.calls("features") if e["credits"]]) == 10


def test_rpm_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring only: the CLI's --rpm reaches the pacer (its rule has a fake-clock unit test,
    tests/test_throttle.py::test_even_pacing_without_burst)."""
    manifest = write_catalog(tmp_path, 6, images=1)
    with emulator_thread() as emulator:
        args = ["run", str(manifest), "--out", str(tmp_path / "o"), "--no-progress", "--no-report"]
        assert (
            run_cli([*args, "--rpm", "300", "--concurrency", "6"], emulator.env, monkeypatch) == 0
        )
        arrivals = sorted(e["arrived"] for e in emulator.calls("features"))
    # 300/min is one call every 0.2 s: paced, six calls span at least 1.0 s from the first send;
    # unpaced, at concurrency 6, they all arrive within a few milliseconds. Arrival stamps (not
    # answer stamps) can only come late, so the span shrinks at most by the first call's delay
    # on the way: half the nominal span tells the two apart without flaking.
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 0.5 * 5 * 0.2


def test_run_without_key_explains_and_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 2)
    monkeypatch.delenv("ONEMIN_API_KEY", raising=False)
    assert run_cli(["run", str(manifest), "--out", str(tmp_path / "o")], {}, monkeypatch) == 2
    assert "ONEMIN_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_emulator_flag_needs_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_catalog(tmp_path, 3)
    monkeypatch.delenv("ONEMIN_API_KEY", raising=False)
    args = ["run", str(manifest), "--out", str(tmp_path / "o"), "--emulator", *FAST]
    assert run_cli(args, {}, monkeypatch) == 0
    assert states(tmp_path / "o") == dict.fromkeys([f"sku-{j:04d}" for j in range(3)], "succeeded")


def test_kill_9_mid_run_then_resume(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 24, images=3)
    out = tmp_path / "out"
    concurrency = 4
    with emulator_thread(latency=0.15) as emulator:
        args = ["run", str(manifest), "--out", str(out), "--no-progress", "--no-report"]
        args += ["--rpm", "6000", "--concurrency", str(concurrency)]
        process = spawn_cli(args, emulator.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            latest = states(out) if (out / "ledger.jsonl").exists() else {}
            if list(latest.values()).count("succeeded") >= 6:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        before = states(out)
        succeeded_before = {j for j, s in before.items() if s == "succeeded"}
        assert 6 <= len(succeeded_before) < 24
        lines_before = len(records(out))
        resumed = spawn_cli(args, emulator.env)
        assert resumed.wait(60) == 0, resumed.stderr.read().decode()  # type: ignore[union-attr]
        paid = [e for e in emulator.calls("features") if e["credits"]]
    after = records(out)[lines_before:]
    restarted = {line["job_id"] for line in after if line["status"] == "started"}
    assert not restarted & succeeded_before  # no job recorded as succeeded is sent again
    assert set(states(out).values()) == {"succeeded"}
    assert len(paid) - 24 <= concurrency  # at most the in-flight calls were paid twice
    assert_outputs_whole(out, {f"sku-{j:04d}": Expected(1, (1024, 1024)) for j in range(24)})
    assert not list(out.glob("*/.part-*"))


def test_sigint_settles_in_flight_and_exits_130(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 40, images=2)
    out = tmp_path / "out"
    with emulator_thread(latency=0.2) as emulator:
        args = ["run", str(manifest), "--out", str(out), "--no-progress", "--no-report"]
        process = spawn_cli([*args, "--rpm", "6000", "--concurrency", "3"], emulator.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            (out / "ledger.jsonl").exists() and "succeeded" in states(out).values()
        ):
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        code = process.wait(20)
        assert code == 130, process.stderr.read().decode()  # type: ignore[union-attr]
        latest = states(out)
    assert "failed" not in latest.values()
    # In-flight jobs were settled, not dropped: a paid edit is finished and stored; a job
    # stopped before its feature call was sent (uploading, or at the rate gate) spent nothing
    # and stays `started`, resumable. Which of the two a job is depends on timing.
    assert set(latest.values()) <= {"succeeded", "started"}
    assert len(latest) < 40
    assert os.path.exists(out / "summary.json")


def test_resume_reads_each_row_once_and_counts_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run checks every row once; the run streams the spooled unfinished jobs."""
    manifest = write_catalog(tmp_path, 8, images=2)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), *FAST]
    with emulator_thread() as emulator:
        assert run_cli([*args, "--max-credits", "4000"], emulator.env, monkeypatch) == 3
        done_first = [j for j, s in states(out).items() if s == "succeeded"]
        assert 0 < len(done_first) < 8
        built: list[int] = []
        from pipeline.manifest import sources

        original = sources.build_job

        def counting_build_job(*a: Any, **kw: Any) -> object:  # build_job's arguments
            built.append(1)
            return original(*a, **kw)

        monkeypatch.setattr(sources, "build_job", counting_build_job)
        assert run_cli(args, emulator.env, monkeypatch) == 0
    # the one checking pass builds all 8; the run reads the spooled jobs, building none again
    assert len(built) == 8
    result = summary(out)
    assert result["counts"]["skipped"] == len(done_first)
    assert result["counts"]["succeeded"] == 8 - len(done_first)
