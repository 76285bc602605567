"""The refetch scan: which done jobs' outputs are gone, asked of every done job on every run.
Its quick look at a compact job of one output must find what the general question finds."""

from __future__ import annotations

import threading
from array import array
from pathlib import Path

from pipeline.ledger import JobRef, LedgerState, Status
from pipeline.models import Feature, InputRef, Job, PlannedJob
from pipeline.scheduler.refetch import DoneJobs, _beyond_single_outputs
from pipeline.store.missing import OutputLook, files_under, outputs_missing

OUTPUTS = {
    "one-kept": ("one-kept/0.png",),
    "one-gone": ("one-gone/0.png",),
    "jpeg-gone": ("jpeg-gone/0.jpg",),
    "two-kept": ("two-kept/0.png", "two-kept/1.png"),
    "two-half": ("two-half/0.png", "two-half/1.png"),
    "own-name-kept": ("elsewhere/kept.png",),
    "own-name-gone": ("elsewhere/gone.png",),
    "none": (),
}
PRESENT = {"one-kept/0.png", "two-kept/0.png", "two-kept/1.png", "two-half/0.png"}
PRESENT |= {"elsewhere/kept.png"}


def test_the_quick_look_finds_what_the_general_question_finds(tmp_path: Path) -> None:
    table = LedgerState().table
    done = DoneJobs()
    for job_id, outputs in OUTPUTS.items():
        number = table.add(job_id, Status.SUCCEEDED)
        table.set_outputs(number, outputs)
        planned = PlannedJob(Job(job_id, Feature.INPAINT, InputRef("file", "x"), "p"), "k")
        done(JobRef(table, number), planned)
    for relative in PRESENT:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"png")

    def gone(outputs: tuple[str, ...]) -> bool:
        return outputs_missing(tmp_path, outputs)

    general = sorted(state.job_id for state, _ in done.missing(OutputLook(gone)))
    quick = sorted(state.job_id for state, _ in done.missing(files_under(tmp_path)))
    assert general == quick == ["jpeg-gone", "one-gone", "own-name-gone", "two-half"]


def test_a_cold_cache_is_looked_at_by_many_threads_and_finds_the_same_jobs_in_order(
    tmp_path: Path,
) -> None:
    """A batch that looks slow (the clock says 1 ms a look) hands the rest to threads."""
    table = LedgerState().table
    numbers = array("I")
    for index in range(50):
        job_id = f"j{index:02d}"
        number = table.add(job_id, Status.SUCCEEDED)
        table.set_outputs(number, (f"{job_id}/0.png",))
        numbers.append(number)
        if index % 3:  # every third job's output is gone
            (tmp_path / job_id).mkdir()
            (tmp_path / job_id / "0.png").write_bytes(b"png")
    ticks = iter(range(1_000_000))

    def slow_clock() -> float:
        return next(ticks) * 1e-3 * 4  # 4 ms a batch of 4: cold

    warm = _beyond_single_outputs(table, numbers, tmp_path, batch=4)
    threads_before = threading.active_count()
    cold = _beyond_single_outputs(table, numbers, tmp_path, clock=slow_clock, batch=4)
    assert cold == warm == [numbers[index] for index in range(0, 50, 3)]
    assert threading.active_count() == threads_before  # the lookers are gone
