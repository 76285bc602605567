"""Scenario 5, start-up: time to the first feature call for 1,000,000 jobs, fresh and resumed.

Two figures each: from the process start (the full preflight pass included: every problem is
reported before any request) and from the scheduler start (the end of preflight), which shows
the queue filling as the plan streams. The fresh run is scenario 4's real run of the same
catalog when it ran; the resume run starts with a 1,000,000-line ledger that a third of the jobs
finished (started, submitted, succeeded lines, with the content keys the pipeline computes), so
preflight also checks the ledger and the feeder skips the finished third before the first call.

The resume runs twice: first over the ledger alone (a folder from before checkpoints: the
whole ledger is folded, and the run writes ``ledger.checkpoint``), then again, as the next night
would, from that checkpoint and the lines the first resume added. Then the nightly no-op: all
1,000,000 jobs done (a 3,000,000-line ledger), run to its exit, without and with the checkpoint.
Each figure comes with its split: reading the ledger, the preflight pass, the rest.

The first run in a folder checks every row (the full pass) and leaves the plan memo
(``plan.memo``, ``pipeline.plan.memo``); the second ("from checkpoint") finds the catalog
unchanged and plans from the memo: its "preflight pass" is the memo read, a ``stat`` per file.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from bench.common import Figure, ScenarioResult, log, scratch
from bench.emulator import EmulatorProcess
from bench.fixtures import planned_jobs, write_done_ledger
from bench.procs import ChildResult, Interrupt, probe_args, run_child
from bench.scenarios import memory
from bench.scenarios.catalogs import CATALOGS, PAIRS
from bench.scenarios.preflight import TARGET_US_PER_ROW, bare_csv
from pipeline.plan.memo import MEMO_NAME as MEMO

TITLE = "Start-up (time to the first feature call, 1,000,000 jobs)"
FIRST_CALL_TARGET = 10.0  # issue 16: a fresh 1,000,000-job run calls within 10 s
RESUME_TARGET = 5.0  # ... and a resume over a 1,000,000-line ledger within 5 s
RESUME_MEMORY_TARGET_MB = 150.0  # issue 24: a resume over a 1,000,000-job folder
NO_OP_TARGET_MB = 150.0  # issue 24: the no-op nightly re-run of 1,000,000 jobs
TIMEOUT = 600.0
CUT_AFTER_FIRST_CALL = 2.0


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("startup", TITLE)
    jobs = 100_000 if quick else 1_000_000
    result.params = {"jobs": jobs, "ledger_lines": jobs}
    manifest = CATALOGS.catalog(jobs)
    start_load = _load()
    with scratch("startup") as folder:
        fresh = memory.REAL_RUNS.get(jobs) or _run(folder / "fresh", manifest)
        _report(result, fresh, "fresh", FIRST_CALL_TARGET)
        csv_pass = bare_csv(manifest.with_suffix(".csv"), jobs, folder / "csv")
        _per_row(result, fresh, csv_pass, jobs)
        resumed = _resume(folder / "resume", manifest, jobs, result)
        _report(result, resumed, "resume", RESUME_TARGET)
        checkpoint = folder / "resume" / "out" / "ledger.checkpoint"
        result.details["checkpoint_bytes_after_first_resume"] = _size(checkpoint)
        result.details["plan_memo_bytes_after_first_resume"] = _size(checkpoint.with_name(MEMO))
        again = _run(folder / "resume", manifest)
        _report(result, again, "resume from checkpoint", RESUME_TARGET)
        _no_op(result, folder / "no-op", manifest, jobs)
    result.notes.append(
        "the second resume and the second no-op plan from the memo the first one left (the "
        "catalog is unchanged): their preflight figure is the memo read, a stat per file"
    )
    result.notes.append(
        f"load average (1, 5, 15 min) at the start {start_load}, at the end {_load()}, on "
        f"{os.cpu_count()} CPUs: wall figures grow with it"
    )
    result.notes.append(
        "the full preflight pass comes first by design (docs/manifest.md#preflight: problems "
        "before any request), "
        "so the first call waits for the pass over every row; 'from scheduler start' is the "
        "streaming part"
    )
    return result


def _run(folder: Path, manifest: Path, sends: bool = True) -> ChildResult:
    """The run, cut a little after its first feature call (``sends``), else to its exit."""
    args = probe_args(
        "run",
        str(manifest),
        "--out",
        str(folder / "out"),
        "--concurrency",
        str(memory.CONCURRENCY),
        "--rpm",
        "1000000",
        "--no-progress",
        "--no-report",
    )
    with EmulatorProcess() as emulator:
        child = run_child(
            args,
            folder=folder,
            env=emulator.env,
            timeout=TIMEOUT,
            interrupt=Interrupt(CUT_AFTER_FIRST_CALL, "first_feature") if sends else None,
        )
    if sends and "first_feature" not in child.events:
        raise RuntimeError(f"no feature call was sent (exit {child.code}): {child.tail()}")
    return child


def _resume(folder: Path, manifest: Path, jobs: int, result: ScenarioResult) -> ChildResult:
    out = folder / "out"
    out.mkdir(parents=True)
    started = time.monotonic()
    done = write_done_ledger(out / "ledger.jsonl", planned_jobs(manifest, PAIRS), lines=jobs)
    seconds = time.monotonic() - started
    log(f"  ledger of {jobs:,} lines ({done:,} jobs done) written in {seconds:.1f}s")
    child = _run(folder, manifest)
    first = _first_new_job(out / "ledger.jsonl", jobs)
    if first != f"sku-{done:07d}":
        raise RuntimeError(f"the resumed run started with {first}, not the first unfinished job")
    result.details["resume"] = {"jobs_done_in_ledger": done, "first_job_run": first}
    return child


def _no_op(result: ScenarioResult, folder: Path, manifest: Path, jobs: int) -> None:
    """The nightly run with every job done: nothing to send; to its exit, twice."""
    out = folder / "out"
    out.mkdir(parents=True)
    started = time.monotonic()
    done = write_done_ledger(out / "ledger.jsonl", planned_jobs(manifest, PAIRS), lines=3 * jobs)
    log(f"  ledger of {3 * jobs:,} lines ({done:,} jobs done) in {time.monotonic() - started:.0f}s")
    for kind in ("no-op, every job done", "no-op from checkpoint"):
        child = _run(folder, manifest, sends=False)
        if child.code != 0:
            raise RuntimeError(f"the no-op run exited {child.code}: {child.tail()}")
        ledger = _between(child, "ledger_read_start", "ledger_read_end")
        preflight = _between(child, "preflight_start", "preflight_end")
        note = f"reading the ledger {_fmt(ledger)} s, preflight {_fmt(preflight)} s"
        result.add(Figure(f"{kind}: process start to exit", child.wall, "s", note=note))
        peak = Figure(f"{kind}: peak RSS", child.maxrss_mb, "MB", ("<=", NO_OP_TARGET_MB))
        result.add(peak)
        result.add(Figure(f"{kind}: reading the ledger", ledger, "s"))


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def _first_new_job(ledger: Path, old_lines: int) -> str | None:
    """The job of the first line the resumed run appended."""
    with ledger.open("rb") as handle:
        for number, line in enumerate(handle):
            if number >= old_lines and b'"status":"started"' in line:
                return line.split(b'"job_id":"', 1)[1].split(b'"', 1)[0].decode()
    return None


def _report(result: ScenarioResult, child: ChildResult, kind: str, target: float) -> None:
    first = child.event_time("first_feature")
    scheduler = child.event_time("scheduler_start")
    preflight = _between(child, "preflight_start", "preflight_end")
    result.add(Figure(f"{kind}: process start to first feature call", first, "s", ("<", target)))
    streaming = None if first is None or scheduler is None else first - scheduler
    result.add(
        Figure(f"{kind}: scheduler start to first feature call", streaming, "s", ("<", target))
    )
    result.add(Figure(f"{kind}: full preflight pass", preflight, "s"))
    note = f"cut {CUT_AFTER_FIRST_CALL:g} s after the first call; the ledger's fold is held"
    target = RESUME_MEMORY_TARGET_MB if kind.startswith("resume") else memory.TARGET_MB[1_000_000]
    peak = Figure(f"{kind}: peak RSS", child.maxrss_mb, "MB", ("<=", target))
    result.add(replace(peak, note=note) if kind.startswith("resume") else peak)
    if kind.startswith("resume"):
        ledger = _between(child, "ledger_read_start", "ledger_read_end")
        result.add(Figure(f"{kind}: reading the ledger", ledger, "s"))


def _per_row(result: ScenarioResult, child: ChildResult, csv_pass: ChildResult, jobs: int) -> None:
    """The fresh run's preflight pass per row, beyond a bare csv.reader pass of the same file."""
    preflight = _between(child, "preflight_start", "preflight_end")
    result.add(Figure("bare csv.reader pass, same file", csv_pass.wall, "s"))
    beyond = None if preflight is None else (preflight - csv_pass.wall) / jobs * 1e6
    result.add(
        Figure(
            "fresh: preflight per row beyond csv.reader", beyond, "us", ("<=", TARGET_US_PER_ROW)
        )
    )


def _between(child: ChildResult, first: str, last: str) -> float | None:
    a, b = child.events.get(first), child.events.get(last)
    return None if a is None or b is None else b["t"] - a["t"]
