"""Scenario: the resume's state at 333,333 and 1,000,000 done jobs, and what its checkpoint costs.

Figures, for ledgers of done jobs as a run writes them (started, submitted, succeeded; sha256
content keys, uuid records, outputs where the store puts them):

- bytes per done job the resume holds: the former form (a ``JobState`` object per job in a
  dict, as resume kept them before the compact fold, reproduced with ``DetailedLedger`` and the
  resume's decoding) beside the compact columns, as RSS growth over the read in a child process
  of its own (each form measured alone);
- the full fold's time (a folder without a checkpoint), the time to read the state from its
  checkpoint, the checkpoint's size and the time to write it (fsync included);
- the event-loop pause a mid-run checkpoint costs (the copy of the columns; the file is written
  by a thread), at 1,000,000 jobs.

``python -m bench.scenarios.resume measure FORM LEDGER`` is the child: it prints one JSON line.
"""

from __future__ import annotations

import gc
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import Figure, ScenarioResult, log, scratch
from bench.procs import run_child
from pipeline.ledger.checkpoint import checkpoint_path, snapshot, write_checkpoint
from pipeline.ledger.fold import (
    Cursor,
    Damage,
    DetailedLedger,
    apply,
    collector_paused,
    records_from,
)
from pipeline.ledger.reader import read_state

TITLE = "Resume state (bytes per done job, before and after; checkpoint costs)"
BYTES_TARGET = 100.0  # issue 24: a done job costs the resume at most about 100 bytes
SIZES = (333_333, 1_000_000)
TIMEOUT = 900.0


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("resume", TITLE)
    sizes = (50_000, 150_000) if quick else SIZES
    result.params = {"done_jobs": list(sizes)}
    with scratch("resume") as folder:
        for jobs in sizes:
            ledger = folder / f"ledger-{jobs}.jsonl"
            started = time.monotonic()
            write_ledger(ledger, jobs)
            log(f"  ledger of {jobs:,} done jobs in {time.monotonic() - started:.0f}s")
            former = _measure(folder, "former", ledger)
            compact = _measure(folder, "compact", ledger)
            label = f"{jobs:,} done jobs"
            _figures(result, label, former, compact)
            ledger.unlink()
            checkpoint_path(ledger).unlink(missing_ok=True)
    return result


def _figures(
    result: ScenarioResult, label: str, former: dict[str, Any], compact: dict[str, Any]
) -> None:
    former_note = f"{former['rss_mb']:.0f} MB"
    result.add(
        Figure(f"former fold (a JobState per job), {label}", former["bytes_per_job"],
               "bytes/job", note=former_note)
    )  # fmt: skip
    columns = f"its columns alone: {compact['columns_per_job']:.0f} bytes/job"
    result.add(
        Figure(f"compact fold, {label}", compact["bytes_per_job"], "bytes/job",
               ("<=", BYTES_TARGET), note=f"{compact['rss_mb']:.0f} MB; {columns}")
    )  # fmt: skip
    speed = (
        f"{compact['fold_us_per_line']:.1f} us a line; the former fold: {former['fold_s']:.1f} s"
    )
    result.add(Figure(f"full fold of the ledger, {label}", compact["fold_s"], "s", note=speed))
    result.add(Figure(f"state from its checkpoint, {label}", compact["load_s"], "s"))
    size = f"{compact['checkpoint_mb']:.0f} MB file"
    result.add(Figure(f"checkpoint written (fsync included), {label}", compact["write_s"], "s",
                      note=size))  # fmt: skip
    pause = "the columns copied; a thread writes the file"
    result.add(Figure(f"event-loop pause of a mid-run checkpoint, {label}", compact["copy_s"],
                      "s", note=pause))  # fmt: skip


def _measure(folder: Path, form: str, ledger: Path) -> dict[str, Any]:
    child = run_child(
        ["-m", "bench.scenarios.resume", "measure", form, str(ledger)],
        folder=folder / f"child-{form}",
        timeout=TIMEOUT,
    )
    if child.code != 0:
        raise RuntimeError(f"measuring {form} failed: {child.tail()}")
    figures: dict[str, Any] = orjson.loads(child.stdout.strip().splitlines()[-1])
    return figures


# -- the ledger -----------------------------------------------------------------------------------


def write_ledger(path: Path, jobs: int) -> None:
    """``jobs`` done jobs as a run writes them, streamed to ``path``."""
    with path.open("wb") as sink:
        for number in range(jobs):
            sink.write(_job_lines(number))


def _job_lines(number: int) -> bytes:
    job_id = f"sku-{number:07d}"
    key = hashlib.sha256(job_id.encode()).hexdigest()
    uuid = f"{number:08x}-0000-4000-8000-{number:012x}"
    second, millis = divmod(number, 1000)
    ts = f"2026-12-0{1 + second // 86400}T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:"
    ts += f"{second % 60:02d}.{millis:03d}Z"
    result = f"development/images/2026_12_01_{number}_inpainted.png"
    common = {"ts": ts, "job_id": job_id, "key": key}
    lines = (
        {**common, "status": "started", "job": {"feature": "IMAGE_INPAINTER", "image": "/p.png"}},
        {**common, "status": "submitted", "attempt": 1, "credits": 1000, "uuid": uuid,
         "result_paths": [result], "temporary_url": f"https://s3.example/{result}?sig=x"},
        {**common, "status": "succeeded", "outputs": [f"{job_id}/0.png"], "attempts": 1,
         "credits": 1000, "uuid": uuid, "timings": {"feature": 2.0, "total": 2.1}},
    )  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


# -- the child ------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(form: str, ledger: Path) -> dict[str, Any]:
    gc.collect()
    before = _rss_mb()
    started = time.perf_counter()
    if form == "former":
        state: Any = DetailedLedger()
        with collector_paused():
            for _, record in records_from(ledger, Damage(), Cursor()):
                apply(state, record)  # the resume's decoding, into a JobState per job
        jobs = len(state.jobs)
    else:
        state = read_state(ledger, use_checkpoint=False)
        jobs = len(state.table)
    fold_s = time.perf_counter() - started
    gc.collect()
    held = _rss_mb() - before
    figures: dict[str, Any] = {
        "jobs": jobs,
        "rss_mb": held,
        "bytes_per_job": held * 1024 * 1024 / jobs,
        "fold_s": fold_s,
        "fold_us_per_line": fold_s / (3 * jobs) * 1e6,
    }
    if form == "compact":
        figures.update(_checkpoint_costs(state, ledger, jobs))
    return figures


def _checkpoint_costs(state: Any, ledger: Path, jobs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"columns_per_job": state.table.memory() / jobs}
    started = time.perf_counter()
    snap = snapshot(state, ledger, copy=True)
    figures["copy_s"] = time.perf_counter() - started
    del snap
    started = time.perf_counter()
    path = write_checkpoint(state, ledger)
    figures["write_s"] = time.perf_counter() - started
    figures["checkpoint_mb"] = path.stat().st_size / 1e6 if path else None
    del state
    gc.collect()
    started = time.perf_counter()
    loaded = read_state(ledger)
    figures["load_s"] = time.perf_counter() - started
    if loaded.checkpoint_note != "used" or len(loaded.table) != jobs:
        raise RuntimeError(f"the checkpoint was not used: {loaded.checkpoint_note}")
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "measure":
        print(orjson.dumps(measure(sys.argv[2], Path(sys.argv[3]))).decode())
    else:
        raise SystemExit("usage: python -m bench.scenarios.resume measure former|compact LEDGER")
