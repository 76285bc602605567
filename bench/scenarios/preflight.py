"""Scenario 6, preflight: ``pipeline validate`` on 100,000 jobs over 50 distinct images.

Wall time of the whole process (interpreter start included), as a user waits for it.
"""

from __future__ import annotations

from bench.common import Figure, ScenarioResult, median, scratch
from bench.procs import run_child
from bench.scenarios.catalogs import CATALOGS

TITLE = "Preflight (pipeline validate, 100,000 jobs over 50 distinct images)"
TARGET_SECONDS = 10.0
TIMEOUT = 120.0


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("preflight", TITLE)
    jobs, repeats = (10_000, 1) if quick else (100_000, 3)
    result.params = {"jobs": jobs, "distinct_images": 50, "repeats": repeats}
    manifest = CATALOGS.catalog(jobs, pairs=50)
    seconds = []
    with scratch("preflight") as folder:
        for repeat in range(repeats):
            child = run_child(
                ["-m", "pipeline", "validate", str(manifest)],
                folder=folder / str(repeat),
                timeout=TIMEOUT,
            )
            if child.code != 0 or f"{jobs:,} feature calls" not in child.stdout:
                raise RuntimeError(f"validate exited {child.code}: {child.tail()}")
            seconds.append(child.wall)
    result.add(
        Figure(f"validate {jobs:,} jobs", median(seconds), "s", ("<", TARGET_SECONDS), seconds)
    )
    per_job = [s / jobs * 1e6 for s in seconds]
    result.add(Figure("per job", median(per_job), "us", None, per_job))
    return result
