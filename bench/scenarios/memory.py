"""Scenario 4, memory: peak RSS of the pipeline process for 100,000 and 1,000,000 jobs.

Catalogs are CSV items files cycling over a handful of small images. Each size is run with
``--dry-run`` (the full preflight pass, nothing sent) and for real against a zero-latency
emulator, cut off with SIGINT a while after the scheduler started (the pipeline then settles
the jobs in flight and exits 130). Peak RSS comes from ``wait4`` (the kernel's own high-water
mark); the probe's reading at the scheduler start gives the peak of the preflight pass alone.
The 1,000,000-job real run is kept for scenario 5 (its time to the first feature call).
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Figure, ScenarioResult, log, median, scratch
from bench.emulator import EmulatorProcess
from bench.procs import ChildResult, Interrupt, probe_args, run_child
from bench.scenarios.catalogs import CATALOGS

TITLE = "Memory (peak RSS, CSV catalogs over a handful of small images)"
TARGET_MB = {100_000: 120.0, 1_000_000: 120.0}  # issue 16: 1,000,000 jobs within 120 MB
CONCURRENCY = 16
TIMEOUT = 600.0
FULL_RUN_JOBS = 20_000  # a whole run (about a minute here), report included
# Real runs kept for scenario 5, by job count.
REAL_RUNS: dict[int, ChildResult] = {}


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("memory", TITLE)
    sizes = (20_000, 100_000) if quick else (100_000, 1_000_000)
    cut = 3.0 if quick else 20.0
    result.params = {"jobs": list(sizes), "cut_after_scheduler_start_s": cut}
    result.notes.append(
        f"real runs are cut off with SIGINT {cut:g} s after the scheduler starts (preflight "
        "included before it), against a zero-latency emulator, --concurrency "
        f"{CONCURRENCY} --rpm 1000000; peak RSS from wait4"
    )
    peaks: dict[tuple[str, int], float] = {}
    with scratch("memory") as folder:
        for jobs in sizes:
            manifest = CATALOGS.catalog(jobs)
            target = ("<=", TARGET_MB.get(jobs, TARGET_MB[100_000]))
            dry = _dry_runs(folder, manifest, jobs, repeats=1 if quick or jobs > 100_000 else 3)
            peaks["dry", jobs] = median(dry)
            result.add(Figure(f"dry run, {jobs:,} jobs", median(dry), "MB", target, dry))
            real = _real_run(folder, manifest, jobs, cut)
            REAL_RUNS[jobs] = real
            peaks["real", jobs] = real.maxrss_mb
            done = _succeeded(folder / f"real-{jobs}" / "out")
            result.details[f"real_{jobs}"] = {
                "jobs_done_before_cut": done,
                "preflight_peak_mb": _preflight_peak(real),
                "exit": real.code,
            }
            note = f"{done:,} jobs done when cut; preflight alone peaked at "
            note += f"{_preflight_peak(real):.0f} MB"
            result.add(Figure(f"real run, {jobs:,} jobs", real.maxrss_mb, "MB", target, note=note))
        _full_run(result, folder, 2_000 if quick else FULL_RUN_JOBS)
    small, big = sizes
    for kind in ("dry", "real"):
        growth = peaks[kind, big] - peaks[kind, small]
        per_job = growth * 1024 * 1024 / (big - small)
        result.add(
            Figure(
                f"{kind} run growth from {small:,} to {big:,} jobs",
                per_job,
                "bytes/job",
                note=f"{growth:.0f} MB",
            )
        )
    return result


def _dry_runs(folder: Path, manifest: Path, jobs: int, repeats: int) -> list[float]:
    peaks = []
    for repeat in range(repeats):
        run_folder = folder / f"dry-{jobs}-{repeat}"
        args = probe_args("run", str(manifest), "--out", str(run_folder / "out"), "--dry-run")
        child = run_child(args, folder=run_folder, timeout=TIMEOUT)
        if child.code != 0:
            raise RuntimeError(f"dry run exited {child.code}: {child.tail()}")
        log(f"  dry run of {jobs:,} jobs: {child.maxrss_mb:.0f} MB, {child.wall:.1f}s")
        peaks.append(child.maxrss_mb)
    return peaks


def _real_run(folder: Path, manifest: Path, jobs: int, cut: float) -> ChildResult:
    run_folder = folder / f"real-{jobs}"
    args = probe_args(
        "run",
        str(manifest),
        "--out",
        str(run_folder / "out"),
        "--concurrency",
        str(CONCURRENCY),
        "--rpm",
        "1000000",
        "--no-progress",
        "--no-report",
    )
    with EmulatorProcess() as emulator:
        child = run_child(
            args,
            folder=run_folder,
            env=emulator.env,
            timeout=TIMEOUT,
            interrupt=Interrupt(cut, "scheduler_start"),
        )
    if child.code != 130 or "first_feature" not in child.events:
        raise RuntimeError(f"real run exited {child.code} (expected 130): {child.tail()}")
    log(f"  real run of {jobs:,} jobs: {child.maxrss_mb:.0f} MB, {child.wall:.1f}s")
    return child


def _full_run(result: ScenarioResult, folder: Path, jobs: int) -> None:
    """A run to its end with the defaults (report on): what grows over a whole run shows here,
    not in the first seconds the cut runs see."""
    run_folder = folder / f"full-{jobs}"
    out = run_folder / "out"
    args = probe_args(
        "run", str(CATALOGS.catalog(jobs)), "--out", str(out), "--concurrency",
        str(CONCURRENCY), "--rpm", "1000000", "--no-progress",
    )  # fmt: skip
    with EmulatorProcess() as emulator:
        child = run_child(args, folder=run_folder, env=emulator.env, timeout=TIMEOUT)
    if child.code != 0 or _succeeded(out) != jobs:
        raise RuntimeError(f"full run exited {child.code}: {child.tail()}")
    log(f"  full run of {jobs:,} jobs: {child.maxrss_mb:.0f} MB, {child.wall:.1f}s")
    note = f"every job done and report.html written, {child.wall:.0f} s"
    name = f"real run to the end, {jobs:,} jobs, report on"
    result.add(Figure(name, child.maxrss_mb, "MB", ("<=", TARGET_MB[100_000]), note=note))


def _preflight_peak(child: ChildResult) -> float:
    event = child.events.get("scheduler_start")
    return event["maxrss_kb"] / 1024 if event else float("nan")


def _succeeded(out: Path) -> int:
    """Jobs whose latest ledger line is ``succeeded`` (one such line per job in a fresh run)."""
    ledger = out / "ledger.jsonl"
    return ledger.read_bytes().count(b'"status":"succeeded"') if ledger.exists() else 0
