"""Child processes, measured from outside: CPU and peak memory from ``wait4``, probe events.

Every child is bounded in time: past its timeout it gets SIGINT (the pipeline settles and exits
130), and SIGKILL if it still has not gone after a grace period.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import PYTHON, REPO
from bench.probe import EVENTS_ENV

POLL_SECONDS = 0.05
KILL_GRACE = 30.0


@dataclass(frozen=True)
class Interrupt:
    """Send SIGINT ``after`` seconds past the probe event ``event`` (or past the start)."""

    after: float
    event: str | None = None


@dataclass
class ChildResult:
    code: int
    started: float  # wall clock just before the spawn
    wall: float
    cpu: float  # user + system seconds of the whole process
    maxrss_mb: float
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    interrupted: bool = False

    def event_time(self, name: str) -> float | None:
        """Seconds from the spawn to the probe event, or None if it never happened."""
        event = self.events.get(name)
        return None if event is None else event["t"] - self.started

    def cpu_between(self, first: str, last: str) -> float | None:
        a, b = self.events.get(first), self.events.get(last)
        return None if a is None or b is None else b["cpu"] - a["cpu"]

    def tail(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-1500:]


def run_child(
    args: list[str],
    *,
    folder: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    interrupt: Interrupt | None = None,
) -> ChildResult:
    """Run ``python ARGS`` (e.g. ``-m bench.probe run ...``) in the repository, measured.

    Output goes to files in ``folder`` (never a pipe that could fill); probe events to
    ``folder/events.jsonl``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    events_path = folder / "events.jsonl"
    events_path.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {}), EVENTS_ENV: str(events_path), "PYTHONUNBUFFERED": "1"}
    with (folder / "stdout.txt").open("wb") as out, (folder / "stderr.txt").open("wb") as err:
        started = time.time()
        process = subprocess.Popen([PYTHON, *args], cwd=REPO, env=full_env, stdout=out, stderr=err)
        code, usage, interrupted = _wait(process, events_path, started, timeout, interrupt)
    wall = time.time() - started
    events = read_events(events_path)
    return ChildResult(
        code=code,
        started=started,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_mb=_peak_mb(events, usage.ru_maxrss),
        events=events,
        stdout=(folder / "stdout.txt").read_text("utf-8", "replace"),
        stderr=(folder / "stderr.txt").read_text("utf-8", "replace"),
        interrupted=interrupted,
    )


_NO_USAGE = resource.struct_rusage((0.0, 0.0, *([0] * 14)))


def _peak_mb(events: dict[str, dict[str, Any]], wait4_kb: int) -> float:
    """The child's peak memory from its own last readings (``readings.peak_rss_kb``); wait4's
    figure only for a child without the probe, and it includes the runner's own size."""
    readings = [event["maxrss_kb"] for event in events.values() if "maxrss_kb" in event]
    return (max(readings) if readings else wait4_kb) / 1024


def _wait(
    process: subprocess.Popen[bytes],
    events_path: Path,
    started: float,
    timeout: float,
    interrupt: Interrupt | None,
) -> tuple[int, Any, bool]:
    """Reap the child with ``wait4`` (its rusage), interrupting it when due."""
    sent_int_at: float | None = None
    while True:
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:
            # Popen.send_signal and kill poll first: a child that ended just then was reaped
            # by them (its rusage is lost; the code is Popen's).
            return process.returncode or 0, _NO_USAGE, sent_int_at is not None
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it
            return process.returncode, usage, sent_int_at is not None
        now = time.time()
        due = _interrupt_due(interrupt, events_path, started, now) or now - started > timeout
        if sent_int_at is None and due:
            process.send_signal(signal.SIGINT)
            sent_int_at = now
        elif sent_int_at is not None and now - sent_int_at > KILL_GRACE:
            process.kill()
        time.sleep(POLL_SECONDS)


def _interrupt_due(
    interrupt: Interrupt | None, events_path: Path, started: float, now: float
) -> bool:
    if interrupt is None:
        return False
    if interrupt.event is None:
        return now - started >= interrupt.after
    event = read_events(events_path).get(interrupt.event)
    return event is not None and now - event["t"] >= interrupt.after


def read_events(path: Path) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return events
    for line in raw.splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # being written
        events.setdefault(event["event"], event)
    return events


def probe_args(*pipeline_args: str) -> list[str]:
    """The child command line for ``pipeline ARGS`` run under the probe."""
    return ["-m", "bench.probe", *pipeline_args]
