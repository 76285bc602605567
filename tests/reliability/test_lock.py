"""Two runs on one OUT: the second refuses cleanly; a lock left by a killed run is taken over."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.e2e import (
    Expected,
    run_inprocess,
    spawn_module,
    states,
    write_profile,
)
from tests.helpers.e2e import (
    write_mixed_catalog as write_catalog,
)
from tests.reliability.figures import tally
from tests.reliability.harness import (
    QUIET,
    assert_outputs_whole,
    emulator,
)

JOBS = 6


def _args(tmp_path: Path) -> tuple[list[str], Path, dict[str, Expected]]:
    manifest, expected = write_catalog(tmp_path, JOBS)
    out = tmp_path / "out"
    profile = write_profile(tmp_path)
    args = ["run", str(manifest), "--out", str(out), "--config", str(profile), *QUIET]
    return [*args, "--concurrency", "1"], out, expected


def test_a_second_run_refuses_then_takes_over_the_lock_of_a_killed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, out, expected = _args(tmp_path)
    with emulator(latency=1.5) as emu:
        first = spawn_module("pipeline", args, emu.env)
        # Mid-feature-call (one worker, 1.5 s latency): the first run sends nothing else for a
        # while, so any new request in the log would be the second run's.
        state = emu.server.state
        _wait_until(lambda: state.feature_calls > len(emu.calls("features", None)))
        sent_before = len(emu.log)

        second = run_inprocess(args, emu.env, monkeypatch, capsys)
        assert second.code == 75  # EX_TEMPFAIL: try later (2 is for broken manifests)
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"in use by another run (pid {first.pid})" in lines[0]
        assert "another --out" in lines[0]  # says what to do about it
        assert len(emu.log) == sent_before  # the second run sent nothing

        first.kill()  # kill -9: the lock file stays behind, naming a dead pid
        first.wait(10)
        assert (out / ".lock").read_text().strip() == str(first.pid)
        emu.configure(latency=0.0)
        third = run_inprocess(args, emu.env, monkeypatch, capsys)
        assert third.code == 0, third.streams
    assert set(states(out).values()) == {"succeeded"}
    assert_outputs_whole(out, expected)
    assert (out / ".lock").read_text().strip() == str(os.getpid())
    tally("crash/point/killed while holding the lock")


def test_a_stale_lock_file_with_garbage_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, out, expected = _args(tmp_path)
    out.mkdir()
    (out / ".lock").write_bytes(b"\x00\xffnot a pid\n" * 100)
    with emulator() as emu:
        result = run_inprocess(args, emu.env, monkeypatch, capsys)
    assert result.code == 0, result.streams
    assert_outputs_whole(out, expected)
    tally("hostile/fixed/stale lock file with garbage")


def _wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")
