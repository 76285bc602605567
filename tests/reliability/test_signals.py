"""SIGINT and SIGTERM: the first settles the jobs in flight and exits 130 well within the
request timeout, wasting no paid edit; a second exits at once and still leaves a ledger whose
every line parses. Either way the same command then finishes the catalog.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.e2e import (
    CliResult,
    Expected,
    assert_ledger_parses,
    assert_no_partial_final_files,
    finish,
    run_inprocess,
    spawn_module,
    states,
    write_profile,
)
from tests.helpers.e2e import (
    write_mixed_catalog as write_catalog,
)
from tests.helpers.emulator import RunningEmulator
from tests.reliability.figures import tally
from tests.reliability.harness import (
    QUIET,
    assert_outputs_whole,
    emulator,
    paid_feature_calls,
)

JOBS = 12
CONCURRENCY = 3
FEATURE_TIMEOUT = 4.0
LATENCY = 0.5  # each feature call is open this long: a signal always finds some in flight


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    args: list[str]
    expected: dict[str, Expected]


def _start(tmp_path: Path, emu: RunningEmulator) -> Run:
    manifest, expected = write_catalog(tmp_path, JOBS)
    profile = write_profile(tmp_path, feature=FEATURE_TIMEOUT)
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--config", str(profile)]
    args += [*QUIET, "--concurrency", str(CONCURRENCY)]
    return Run(spawn_module("pipeline", args, emu.env), args, expected)


def _wait_for_calls_in_flight(emu: RunningEmulator, process: subprocess.Popen[bytes]) -> None:
    """Until a feature call has *just* begun, after the first edit is done: mid-run, with about
    LATENCY of settling ahead. (A second signal that only arrives once the run has finished
    and Python is shutting down kills it by that signal: see the closing report.)"""
    state = emu.server.state
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not emu.calls("features"):
        time.sleep(0.005)
    begun = state.feature_calls
    while time.monotonic() < deadline and process.poll() is None:
        if state.feature_calls > begun:
            return
        time.sleep(0.002)
    raise AssertionError("the run never had feature calls in flight")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_settles_in_flight_work_and_exits_130(
    signum: signal.Signals,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    with emulator(latency=LATENCY) as emu:
        run = _start(tmp_path, emu)
        process = run.process
        _wait_for_calls_in_flight(emu, process)
        sent = time.monotonic()
        process.send_signal(signum)
        stopped = finish(process, timeout=FEATURE_TIMEOUT * 3)
        took = time.monotonic() - sent
        assert stopped.code == 130, stopped.streams
        # Settling waits for the open calls (LATENCY), never for a whole request timeout.
        assert took < FEATURE_TIMEOUT, took
        _assert_clean_stop(stopped, out, signum.name)
        assert "failed" not in states(out).values()  # cut short is not failed
        # Settled: no edit was left paid but unstored (a job stopped before its feature call
        # spent nothing and stays `started`, resumable).
        assert "submitted" not in states(out).values()
        assert len(states(out)) < JOBS  # it really stopped early
        _resume(run, emu, out, monkeypatch, capsys)
        # The calls in flight were answered and recorded: nothing paid was thrown away.
        assert paid_feature_calls(emu.log) == JOBS
    tally(f"crash/point/{signum.name} (settle)")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_exits_at_once_with_a_valid_ledger(
    signum: signal.Signals,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    with emulator(latency=LATENCY) as emu:
        run = _start(tmp_path, emu)
        process = run.process
        _wait_for_calls_in_flight(emu, process)
        process.send_signal(signum)
        time.sleep(0.05)  # let the first one be handled
        sent = time.monotonic()
        process.send_signal(signum)
        stopped = finish(process, timeout=10)
        took = time.monotonic() - sent
        assert stopped.code == 130, stopped.streams
        assert took < LATENCY, f"the second {signum.name} waited {took:.2f} s"
        _assert_clean_stop(stopped, out, signum.name)
        _resume(run, emu, out, monkeypatch, capsys)
        # Calls abandoned in flight may be paid again: at most one per worker.
        assert JOBS <= paid_feature_calls(emu.log) <= JOBS + CONCURRENCY
    tally(f"crash/point/{signum.name} twice (at once)")


def _assert_clean_stop(result: CliResult, out: Path, name: str) -> None:
    assert "Traceback" not in result.streams, result.streams
    assert f"{name}: finishing the jobs in flight" in result.stderr
    assert_ledger_parses(out)  # every line whole, no torn tail even on the hard exit
    assert_no_partial_final_files(out)


def _resume(
    run: Run,
    emu: RunningEmulator,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu.configure(latency=0.0)  # the resume needs no wide windows
    result = run_inprocess(run.args, emu.env, monkeypatch, capsys)
    assert result.code == 0, result.streams
    assert_outputs_whole(out, run.expected)
