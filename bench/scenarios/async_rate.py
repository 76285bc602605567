"""Scenario: records still processing, with ``--async`` (issue 11, 16).

The emulator answers every feature call ``PROCESSING`` (the body says ``"async": true``) and
finishes each record 20 s later; the client runs with ``--async --concurrency 8 --rpm 150``.
Two figures, from the ledger and the emulator's request log, over the steady part of the run
(from the first finished job to the last):

- edits a minute over ``--rpm``: the issue's figure (target 0.95);
- API-host requests a minute over ``--rpm``: how much of the one budget the run uses (every
  upload, feature call and poll counts, SPEC 1a).

Each edit costs at least two API requests (the call and one poll), so edits a minute can reach
at most half of ``--rpm``; and a worker stays with its record while it polls, so 8 records are
outstanding at most: about 8 edits per 20 s. Both bounds are printed beside the figures.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.common import Figure, ScenarioResult, log, scratch
from bench.emulator import EmulatorProcess
from bench.procs import probe_args, run_child
from bench.scenarios.catalogs import CATALOGS
from bench.scenarios.throughput import job_times

TITLE = "Records still processing, --async (20 s per record, c=8, --rpm 150)"
PROCESSING = 20.0
CONCURRENCY = 8
RPM = 150.0


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("async_rate", TITLE)
    jobs = CONCURRENCY * (1 if quick else 3)
    result.params = {"processing_s": PROCESSING, "concurrency": CONCURRENCY, "rpm": RPM}
    with scratch("async") as folder:
        log_path = folder / "requests.jsonl"
        flags = ["--processing-seconds", str(PROCESSING)]
        with EmulatorProcess(*flags, request_log=log_path) as emulator:
            out = folder / "out"
            args = ["run", str(CATALOGS.catalog(jobs)), "--out", str(out), "--async"]
            args += ["--concurrency", str(CONCURRENCY), "--rpm", str(RPM)]
            args += ["--no-progress", "--no-report"]
            timeout = jobs / CONCURRENCY * (PROCESSING + 15) + 120
            child = run_child(probe_args(*args), folder=folder, env=emulator.env, timeout=timeout)
        if child.code != 0:
            raise RuntimeError(f"run exited {child.code}: {child.tail()}")
        _figures(result, out / "ledger.jsonl", log_path, jobs)
    return result


def _figures(result: ScenarioResult, ledger: Path, request_log: Path, jobs: int) -> None:
    times = job_times(ledger)
    if len(times) != jobs:
        raise RuntimeError(f"{len(times)} of {jobs} jobs succeeded")
    ends = sorted(end for _, end in times.values())
    start = min(begin for begin, _ in times.values())
    minutes = (ends[-1] - start) / 60
    requests = [
        entry
        for entry in map(orjson.loads, request_log.read_bytes().splitlines())
        if entry.get("route") in ("assets", "features", "results")
    ]
    edits_per_minute = jobs / minutes
    requests_per_minute = len(requests) / minutes
    bound = CONCURRENCY / (PROCESSING / 60)
    log(f"  {jobs} edits in {minutes * 60:.1f} s: {edits_per_minute:.1f} edits/min")
    result.add(
        Figure(
            "edits a minute / --rpm",
            edits_per_minute / RPM,
            "",
            (">=", 0.95),
            [edits_per_minute / RPM],
            f"{edits_per_minute:.1f} edits/min; bounds: rpm/2 = {RPM / 2:.0f}, "
            f"concurrency/processing = {bound:.0f} edits/min",
        )
    )
    result.add(
        Figure(
            "API-host requests a minute / --rpm",
            requests_per_minute / RPM,
            "",
            None,
            [requests_per_minute / RPM],
            f"{len(requests)} requests (uploads, feature calls, polls)",
        )
    )
