"""Crash and resume: SIGKILL anywhere, then the same command again finishes the job, and
nothing is lost, half-written or bought twice beyond what was in flight.

Two kinds of trial over the same checks:

- exact points (``crashing_cli``): before an upload, mid-upload, mid-feature-call, between a
  paid answer and its ledger line, mid-download, between two renames, mid ledger line;
- seeded random delays: ``kill -9`` from outside at a moment drawn from ``random.Random(seed)``,
  with emulator latency widening the windows, classified afterwards by what was in flight.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

import pipeline.store.verify
from tests.helpers.e2e import (
    assert_ledger_parses,
    assert_no_partial_final_files,
    finish,
    records,
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

JOBS = 6
CONCURRENCY = 3
# Latency keeps requests open long enough for a kill to land inside them.
LATENCY = {"latency": 0.08, "asset_latency": 0.04}

EXACT_POINTS = [
    ("before-upload", 1),
    ("before-upload", 5),
    ("mid-upload", 2),
    ("mid-feature-call", 1),
    ("mid-feature-call", 4),
    ("after-feature-answer", 1),
    ("after-feature-answer", 3),
    ("mid-download", 1),
    ("mid-download", 6),
    ("mid-rename", 2),
    ("mid-rename", 5),
    ("mid-ledger-line", 4),
    ("mid-ledger-line", 15),
]
RANDOM_TRIALS = 12
SEED = 20250601


class Trial:
    """One catalog, one emulator, one crashed run, one resume; then every check."""

    def __init__(self, folder: Path, emu: RunningEmulator, jobs: int = JOBS) -> None:
        self.manifest, self.expected = write_catalog(folder, jobs, n=2)
        self.out = folder / "out"
        self.emu = emu
        profile = write_profile(folder)
        self.args = ["run", str(self.manifest), "--out", str(self.out), "--config", str(profile)]
        self.args += [*QUIET, "--concurrency", str(CONCURRENCY)]

    def after_crash(self) -> tuple[set[str], int]:
        """State right after the kill: the ledger is readable and no final file is partial."""
        if not (self.out / "ledger.jsonl").exists():
            return set(), 0
        assert_ledger_parses(self.out, allow_torn_tail=True)
        assert_no_partial_final_files(self.out)
        done = {job for job, state in states(self.out).items() if state == "succeeded"}
        return done, len((self.out / "ledger.jsonl").read_bytes().splitlines())

    def resume_and_check(
        self,
        done_before: set[str],
        lines_before: int,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.emu.configure(latency=0.0, asset_latency=0.0)  # only the kill needs open requests
        result = run_inprocess(self.args, self.emu.env, monkeypatch, capsys)
        assert result.code == 0, result.streams
        assert set(states(self.out).values()) == {"succeeded"}
        assert_outputs_whole(self.out, self.expected)
        assert not list(self.out.glob("*/.part-*"))
        resumed = records(self.out)[lines_before:]
        sent_again = {line["job_id"] for line in resumed if line["status"] == "started"}
        assert not sent_again & done_before, "a job recorded as succeeded was sent again"
        # An edit is paid twice only if its call was in flight at the kill: at most one per worker.
        jobs = len(self.expected)
        paid = paid_feature_calls(self.emu.log)
        assert jobs <= paid <= jobs + CONCURRENCY, paid
        tally("crash/extra feature calls paid", paid - jobs)
        tally("crash/jobs verified after resume", jobs)


@pytest.mark.parametrize(("point", "count"), EXACT_POINTS)
def test_kill_at_an_exact_point_then_resume(
    point: str,
    count: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with emulator(**LATENCY) as emu:
        trial = Trial(tmp_path, emu)
        crashing = [point, str(count), *trial.args]
        crashed = finish(spawn_module("tests.reliability.crashing_cli", crashing, emu.env), 60)
        assert crashed.code == -9, f"{point} #{count} was never reached: {crashed.streams}"
        tally(f"crash/point/{point}")
        done, lines = trial.after_crash()
        trial.resume_and_check(done, lines, monkeypatch, capsys)


def test_kill_9_at_seeded_random_moments_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    for number in range(RANDOM_TRIALS):
        # The CLI needs ~0.45 s to import; the run itself about a second under this latency.
        delay = rng.uniform(0.45, 1.4)
        with emulator(**LATENCY, seed=number) as emu:
            trial = Trial(tmp_path / f"trial-{number}", emu)
            process = spawn_module("pipeline", trial.args, trial.emu.env)
            time.sleep(delay)
            in_flight = _in_flight(emu)
            process.kill()
            process.wait(10)
            tally(f"crash/random/{_label(in_flight, process.returncode)}")
            done, lines = trial.after_crash()
            trial.resume_and_check(done, lines, monkeypatch, capsys)


def _in_flight(emu: RunningEmulator) -> dict[str, int]:
    """Requests the emulator has begun but not yet logged, by route, at this moment."""
    state = emu.server.state
    logged = {route: len(emu.calls(route, status=None)) for route in ("assets", "features")}
    downloads = len(emu.calls("asset", None)) + len(emu.calls("temporary", None))
    return {
        "upload": state.uploads - logged["assets"],
        "feature": state.feature_calls - logged["features"],
        "download": state.downloads - downloads,
    }


def _label(in_flight: dict[str, int], code: int | None) -> str:
    if code == 0:
        return "after the run ended"
    busy = [name for name, count in in_flight.items() if count > 0]
    return "mid-" + "+".join(busy) if busy else "between requests"


@pytest.mark.timeout(30)
def test_a_bug_in_a_worker_ends_the_run_instead_of_hanging_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception nobody expected (here from the image check) must surface: a dead worker
    once left the feeder blocked on a full queue forever. The ledger stays resumable."""

    def broken(*_args: Any) -> str:
        raise RuntimeError("a bug")

    with emulator() as emu:
        # More jobs than the queue and the workers hold together, or the feeder never blocks.
        trial = Trial(tmp_path, emu, jobs=CONCURRENCY * 4)
        monkeypatch.setattr(pipeline.store.verify.ResultStream, "verdict", broken)
        with pytest.raises(RuntimeError, match="a bug"):
            run_inprocess(trial.args, emu.env, monkeypatch, capsys)
        monkeypatch.undo()
        done, lines = trial.after_crash()
        trial.resume_and_check(done, lines, monkeypatch, capsys)
    tally("crash/point/unexpected error in a worker")
