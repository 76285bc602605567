"""docs/api.md#unfinished-records through the real CLI against the emulator (issues 11 and 12, "done
when"): records still processing, one request budget, HTML 403s, kill -9 while records process, an
API that is down, and a budget over several runs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.e2e import (
    QUICK_POLLS,
    run_cli,
    spawn_cli,
    states,
    write_catalog,
    write_mixed_catalog,
    write_profile,
)
from tests.helpers.emulator import RunningEmulator, emulator_thread

# Whole runs of the CLI against the emulator: make test runs them, test-fast does not.
pytestmark = pytest.mark.slow

FAST = ["--no-progress", "--no-report", "--rpm", "60000"]  # profiles poll quickly
QUICK_POLL_PROFILE: dict[str, Any] = {"timeouts": {"poll_initial": 0.05, "poll_max": 0.1}}


def bought(emulator: RunningEmulator) -> int:
    """Feature calls the emulator charged for (a processing record is charged once)."""
    return sum(1 for e in emulator.log if e["route"] == "features" and e["credits"])


def test_sixty_percent_processing_buys_one_edit_per_job_and_polls_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 10)
    profile = write_profile(tmp_path, **QUICK_POLL_PROFILE)
    out = tmp_path / "out"
    with emulator_thread(rate_processing=0.6, processing_seconds=0.2, seed=3) as emulator:
        args = ["run", str(manifest), "--out", str(out), "--config", str(profile), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert bought(emulator) == 10 and len(emulator.calls("features")) == 10
        assert emulator.calls("results")  # the processing ones were polled, not bought again
    assert set(states(out).values()) == {"succeeded"}


def test_one_budget_for_every_request_meets_no_429(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server allows 22 API requests in any 10 s; --rpm 120 paces uploads and calls
    together (20 in 10 s), so a catalog of distinct photos never meets a 429. Both run 4x fast
    (the server's clock, the client's --rpm), the same ratio: 27 requests in about 3.5 s."""
    # Every job its own image and mask bytes: 10 images, 7 masks, 10 calls, more than the 22
    # the window holds, so a client pacing faster than the window would meet a 429.
    manifest, _ = write_mixed_catalog(tmp_path, 10)
    out = tmp_path / "out"
    with emulator_thread(window_limit=22, window_seconds=10) as emulator:
        emulator.server.clock = lambda: time.monotonic() * 4
        args = ["run", str(manifest), "--out", str(out), "--rpm", "480", "--no-progress"]
        assert run_cli([*args, "--no-report"], emulator.env, monkeypatch) == 0
        answered = [e["status"] for e in emulator.log if e["route"] in ("assets", "features")]
    assert 429 not in answered and len(answered) == 27  # uploads and calls both counted


def test_eight_percent_html_403s_finish_with_exit_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 20)
    profile = write_profile(tmp_path, retry={"max_attempts": 8})
    out = tmp_path / "out"
    with emulator_thread(rate_403_html=0.08, seed=5) as emulator:
        args = ["run", str(manifest), "--out", str(out), "--config", str(profile), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert any(e["fault"] == "html_403" for e in emulator.log)
    assert set(states(out).values()) == {"succeeded"}


def test_kill_9_while_every_record_processes_then_resume_buys_only_what_was_in_flight(
    tmp_path: Path,
) -> None:
    manifest = write_catalog(tmp_path, 8, images=8)
    profile = write_profile(tmp_path, **QUICK_POLL_PROFILE)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--config", str(profile), *FAST]
    with emulator_thread(rate_processing=1.0, processing_seconds=3600) as emulator:
        process = spawn_cli([*args, "--concurrency", "4"], emulator.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            not (out / "ledger.jsonl").exists() or list(states(out).values()).count("submitted") < 4
        ):
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        before = bought(emulator)
        # Two hours later: every record bought before the kill has finished; new ones at once.
        emulator.server.clock = lambda: time.monotonic() + 7200
        emulator.configure(processing_seconds=0.0)
        process = spawn_cli([*args, "--concurrency", "4"], emulator.env)
        assert process.wait(60) == 0, process.stderr.read().decode()  # type: ignore[union-attr]
        after = bought(emulator)
    assert set(states(out).values()) == {"succeeded"}
    # Each job is bought once; the only ones that can be bought again are those whose POST
    # was on the wire when the process died (at most --concurrency), never a processing one.
    assert 8 <= after <= 8 + 4 and before >= 4


def test_api_down_stops_with_exit_3_and_nothing_failed_then_the_next_run_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 12)
    profile = write_profile(tmp_path, retry={"max_attempts": 2}, timeouts={"connect": 0.5})
    out = tmp_path / "out"
    base = ["run", str(manifest), "--out", str(out), "--config", str(profile), *FAST]
    down = {"ONEMIN_API_KEY": "k", "ONEMIN_API_BASE": "http://127.0.0.1:9"}
    assert run_cli([*base, "--concurrency", "2"], down, monkeypatch) == 3
    assert "failed" not in states(out).values()  # pending, not blamed on the jobs
    with emulator_thread() as emulator:
        assert run_cli(base, emulator.env, monkeypatch) == 0
    assert set(states(out).values()) == {"succeeded"} and len(states(out)) == 12


def test_the_folder_budget_holds_over_three_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 12)  # quality low, n=1: 1,000 credits a job
    out = tmp_path / "out"
    base = ["run", str(manifest), "--out", str(out), *FAST, "--max-total-credits", "5000"]
    base += ["--config", str(QUICK_POLLS)]
    with emulator_thread() as emulator:
        assert run_cli([*base, "--limit", "3"], emulator.env, monkeypatch) == 0
        assert run_cli(base, emulator.env, monkeypatch) == 3
        assert run_cli(base, emulator.env, monkeypatch) == 3
        spent = emulator.server.state.used_credit
    assert spent <= 5000 and list(states(out).values()).count("succeeded") == spent // 1000
