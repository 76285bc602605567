"""Scenario 6, preflight: ``pipeline validate`` on 1,000,000 jobs over 50 distinct images.

Wall time of the whole process (interpreter start included), as a user waits for it, beside a
bare ``csv.reader`` pass over the same CSV file in the same run (a process of its own too): the
difference per row is what the pipeline adds to reading the file (issue 16: at most 8 µs a row
for rows sharing files). The CPU figures are the same difference in CPU seconds, which a busy
machine disturbs less than wall time.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Figure, ScenarioResult, median, scratch
from bench.procs import ChildResult, run_child
from bench.scenarios.catalogs import CATALOGS

TARGET_SECONDS = 10.0  # 1,000,000 rows
TARGET_US_PER_ROW = 8.0  # beyond the csv module's own parse time
TIMEOUT = 300.0
PAIRS = 50
BARE_CSV = (
    "import csv, sys\n"
    "with open(sys.argv[1], newline='', encoding='utf-8-sig') as handle:\n"
    "    rows = sum(1 for _ in csv.reader(handle)) - 1\n"
    "print(rows)\n"
)


def run(quick: bool) -> ScenarioResult:
    jobs, repeats = (100_000, 1) if quick else (1_000_000, 3)
    result = ScenarioResult("preflight", f"Preflight (pipeline validate, {jobs:,} jobs)")
    result.params = {"jobs": jobs, "distinct_images": PAIRS, "repeats": repeats}
    manifest = CATALOGS.catalog(jobs, pairs=PAIRS)
    tiny = CATALOGS.catalog(1, pairs=1)
    validate: list[ChildResult] = []
    bare: list[ChildResult] = []
    with scratch("preflight") as folder:
        start_up = [_validate(tiny, 1, folder / f"tiny{repeat}").wall for repeat in range(repeats)]
        for repeat in range(repeats):
            bare.append(bare_csv(manifest.with_suffix(".csv"), jobs, folder / f"csv{repeat}"))
            validate.append(_validate(manifest, jobs, folder / str(repeat)))
    walls = [child.wall for child in validate]
    target = ("<", TARGET_SECONDS) if jobs == 1_000_000 else None
    result.add(Figure(f"validate {jobs:,} jobs", median(walls), "s", target, walls))
    bare_walls = [child.wall for child in bare]
    result.add(Figure("bare csv.reader pass, same file", median(bare_walls), "s", None, bare_walls))
    beyond = [(v.wall - b.wall) / jobs * 1e6 for v, b in zip(validate, bare, strict=True)]
    result.add(
        Figure(
            "per row beyond csv.reader (wall)",
            median(beyond),
            "us",
            ("<=", TARGET_US_PER_ROW),
            beyond,
        )
    )
    result.add(
        Figure("start-up: validate of a 1-job catalog", median(start_up), "s", None, start_up)
    )
    alone = [
        (v.wall - b.wall - median(start_up)) / jobs * 1e6
        for v, b in zip(validate, bare, strict=True)
    ]
    result.add(
        Figure("per row beyond csv.reader, start-up excluded", median(alone), "us", None, alone)
    )
    cpu = [(v.cpu - b.cpu) / jobs * 1e6 for v, b in zip(validate, bare, strict=True)]
    result.add(Figure("per row beyond csv.reader (CPU)", median(cpu), "us", None, cpu))
    result.add(Figure("peak memory of validate", median([v.maxrss_mb for v in validate]), "MB"))
    result.notes.append(
        "per row beyond csv.reader = (validate - bare csv pass) / rows, both whole processes: "
        "it includes the pipeline's own imports and start-up, spread over the rows"
    )
    return result


def _validate(manifest: Path, jobs: int, folder: Path) -> ChildResult:
    child = run_child(["-m", "pipeline", "validate", str(manifest)], folder=folder, timeout=TIMEOUT)
    calls = "feature call " if jobs == 1 else "feature calls"
    if child.code != 0 or f"{jobs:,} {calls}" not in child.stdout:
        raise RuntimeError(f"validate exited {child.code}: {child.tail()}")
    return child


def bare_csv(path: Path, jobs: int, folder: Path) -> ChildResult:
    child = run_child(["-c", BARE_CSV, str(path)], folder=folder, timeout=TIMEOUT)
    if child.code != 0 or child.stdout.strip() != str(jobs):
        raise RuntimeError(f"the bare csv pass exited {child.code}: {child.tail()}")
    return child
