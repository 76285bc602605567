"""The plan memo (``pipeline.plan.memo``): a pass over an unchanged catalog reads the memo the
last clean pass kept instead of checking every row, and plans exactly what the full pass plans
(summary, skipped jobs, the jobs to run, the done jobs told to ``on_done``); anything changed or
in doubt takes the full pass (an edited or new row, a deleted, broken or resized photo,
``--rehash``, a damaged or truncated memo), except a row's own photo replaced or touched,
which is checked again alone.

The stat cache's clock runs ten seconds ahead of the files' times (a nightly run comes hours
after the photos were written), so no file is racily clean.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.credits import load_credit_table
from pipeline.ledger import FoldedJob, JobState, LedgerState
from pipeline.manifest import load_manifest
from pipeline.models import PlannedJob, Status
from pipeline.plan import memo as memo_module
from pipeline.plan import prepare as prepare_module
from pipeline.plan.memo import MEMO_NAME, MemoPlace
from pipeline.plan.prepare import CheckedPlan, PlanOptions, prepare
from pipeline.preflight import Preflight
from pipeline.preflight import files as files_module
from pipeline.preflight import statcache as statcache_module
from pipeline.preflight.statcache import StatCache
from tests.helpers.e2e import QUICK_POLLS, run_cli, write_catalog
from tests.helpers.emulator import emulator_thread
from tests.helpers.images import make_image, write_manifest

LATER_NS = 10 * 1_000_000_000
FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


@pytest.fixture(autouse=True)
def later_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache_module, "CLOCK", lambda: time.time_ns() + LATER_NS)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which way each plan went: "full" (a ``RowPass``) or "memo" (a memo read to its end)."""
    seen: list[str] = []
    row_pass = prepare_module.RowPass
    from_memo = prepare_module._plan_from_memo

    def counting_pass(*args: Any, **kwargs: Any) -> Any:
        seen.append("full")
        return row_pass(*args, **kwargs)

    def counting_memo(*args: Any, **kwargs: Any) -> Any:
        plan, started = from_memo(*args, **kwargs)
        if plan is not None:
            seen.append("memo")
        return plan, started

    monkeypatch.setattr(prepare_module, "RowPass", counting_pass)
    monkeypatch.setattr(prepare_module, "_plan_from_memo", counting_memo)
    return seen


@dataclass
class Outcome:
    """What a plan says, in comparable form."""

    plan: CheckedPlan
    jobs: list[PlannedJob]
    done: list[tuple[str, str]] = field(default_factory=list)  # (id, key) told to on_done
    asked: int = 0  # times the options were made


def plan_of(
    manifest: Path,
    state: Path,
    ledger: LedgerState | None = None,
    memo: bool = True,
    rehash: bool = False,
    **options: Any,
) -> Outcome:
    outcome = Outcome(CheckedPlan(None), [])  # type: ignore[arg-type]

    def on_done(state: FoldedJob, planned: PlannedJob) -> None:
        outcome.done.append((state.job_id, state.key))

    def options_now() -> PlanOptions:
        outcome.asked += 1
        outcome.done.clear()
        return PlanOptions(on_done=on_done, **options)

    place = MemoPlace(state, read=not rehash) if memo else None
    with StatCache.open(state, rehash) as cache:
        outcome.plan = prepare(
            load_manifest(manifest),
            ledger or LedgerState(),
            options_now(),
            load_credit_table(),
            Preflight(stat_cache=cache),
            place,
            options_now,
        )
        outcome.jobs = list(outcome.plan.jobs)
    return outcome


def assert_same(memo: Outcome, full: Outcome) -> None:
    assert memo.plan.summary == full.plan.summary
    assert memo.plan.skipped == full.plan.skipped
    assert memo.jobs == full.jobs
    assert memo.done == full.done


def catalog(folder: Path, count: int = 12, shared: bool = False) -> Path:
    """Rows of distinct photos (``shared``: rows over three photos); a third of them with a
    prompt of their own."""
    for index in range(count if not shared else 3):
        make_image(folder / "img" / f"p{index}.png", (64, 48), color=(index * 19, 1, 2))
    write_rows(folder, [row(index, shared) for index in range(count)])
    defaults = {"type": "background", "size": "auto", "prompt": "on marble"}
    return write_manifest(folder, {"name": "nightly", "defaults": defaults, "items": "items.csv"})


def row(index: int, shared: bool = False) -> list[str]:
    photo = f"img/p{index % 3 if shared else index}.png"
    return [f"sku-{index}", photo, f"shot {index}" if index % 3 == 0 else ""]


def write_rows(folder: Path, rows: list[list[str]]) -> None:
    with (folder / "items.csv").open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(("id", "image", "prompt"))
        writer.writerows(rows)


def half_done(outcome: Outcome) -> LedgerState:
    """A ledger where every other job of the plan succeeded (and one failed)."""
    ledger = LedgerState()
    for order, planned in enumerate(outcome.jobs):
        if order % 2 == 0:
            ledger.jobs[planned.job.id] = JobState(
                planned.job.id, Status.SUCCEEDED, planned.key, order
            )
        elif order == 1:
            ledger.jobs[planned.job.id] = JobState(planned.job.id, Status.FAILED, planned.key, 1)
    return ledger


@pytest.mark.parametrize("shared", [False, True])
def test_an_unchanged_catalog_is_planned_from_the_memo_as_the_full_pass_plans_it(
    tmp_path: Path, passes: list[str], shared: bool
) -> None:
    manifest = catalog(tmp_path / "c", shared=shared)
    state = tmp_path / "state"
    first = plan_of(manifest, state)
    assert (state / MEMO_NAME).exists()
    ledger = half_done(first)
    for options in ({}, {"limit": 2}, {"only": frozenset({"sku-3", "sku-4", "nope"})}):
        passes.clear()
        memo = plan_of(manifest, state, ledger, **options)
        full = plan_of(manifest, state, ledger, memo=False, **options)
        assert passes == ["memo", "full"]
        assert_same(memo, full)
        assert memo.asked == 1
    assert memo.done and memo.done == full.done
    assert not plan_of(manifest, state, ledger, only=frozenset({"nope"})).plan.ok


def test_a_jobs_list_is_memoised_too(tmp_path: Path, passes: list[str]) -> None:
    folder = tmp_path / "c"
    make_image(folder / "a.png")
    make_image(folder / "m.png", mode="L", color=255, background=0)
    jobs = [
        {"id": "one", "image": "a.png", "prompt": "on marble"},
        {"id": "two", "type": "inpaint", "image": "a.png", "mask": "m.png", "prompt": "a cat"},
    ]
    manifest = write_manifest(folder, {"defaults": {"type": "background"}, "jobs": jobs})
    state = tmp_path / "state"
    plan_of(manifest, state)
    passes.clear()
    assert_same(plan_of(manifest, state), plan_of(manifest, state, memo=False))
    assert passes == ["memo", "full"]
    (folder / "m.png").touch()  # the mask's signature moved: the full pass
    time.sleep(0.01)
    passes.clear()
    plan_of(manifest, state)
    assert passes == ["full"]


def replace_keeping_size_and_mtime(photo: Path, donor: Path) -> None:
    old = photo.stat()
    data = donor.read_bytes()[: old.st_size].ljust(old.st_size, b"\0")
    fresh = photo.with_suffix(".new")
    fresh.write_bytes(data)
    os.replace(fresh, photo)
    os.utime(photo, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert photo.stat().st_size == old.st_size and photo.stat().st_mtime_ns == old.st_mtime_ns


@pytest.fixture
def rechecked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The photos the memo's reader checked again (``PhotoRecheck``), by name."""
    seen: list[str] = []
    original = memo_module.PhotoRecheck.__call__

    def counting(self: Any, shape: Any, record: tuple[Any, ...]) -> Any:
        seen.append(Path(record[5]).name)
        return original(self, shape, record)

    monkeypatch.setattr(memo_module.PhotoRecheck, "__call__", counting)
    return seen


@pytest.mark.parametrize("shared", [False, True])
def test_a_photo_replaced_with_the_same_size_and_mtime_is_checked_again_alone(
    tmp_path: Path, passes: list[str], rechecked: list[str], shared: bool
) -> None:
    folder = tmp_path / "c"
    manifest = catalog(folder, shared=shared)
    state = tmp_path / "state"
    ledger = half_done(plan_of(manifest, state))
    replace_keeping_size_and_mtime(folder / "img" / "p1.png", folder / "img" / "p2.png")
    passes.clear()
    after = plan_of(manifest, state, ledger)
    full = plan_of(manifest, state, ledger, memo=False)
    assert_same(after, full)
    # sku-4 (even: done before) reads p1 when shared: new bytes, so it runs again.
    assert "sku-4" in {planned.job.id for planned in after.jobs} or not shared
    assert passes == ["memo", "full"] and after.asked == 1
    assert rechecked == ["p1.png"] * (4 if shared else 1)  # each row naming it
    passes.clear()
    again = plan_of(manifest, state, ledger)  # the memo was patched: nothing checked again
    assert passes == ["memo"] and len(rechecked) == (4 if shared else 1)
    assert_same(again, full)


def test_rows_sharing_an_image_and_a_mask_take_the_full_pass_when_one_changes(
    tmp_path: Path, passes: list[str]
) -> None:
    """Rows of a shared shape (an inpaint job: image and mask): a file they share is checked
    by its signature once; if it moved, the full pass."""
    folder = tmp_path / "c"
    make_image(folder / "a.png")
    make_image(folder / "m.png", mode="L", color=255, background=0)
    with (folder / "items.csv").open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(("id", "image", "mask", "prompt"))
        writer.writerows([f"sku-{n}", "a.png", "m.png", f"cat {n % 2}"] for n in range(9))
    defaults = {"type": "inpaint"}
    manifest = write_manifest(folder, {"defaults": defaults, "items": "items.csv"})
    state = tmp_path / "state"
    ledger = half_done(plan_of(manifest, state))
    passes.clear()
    assert_same(plan_of(manifest, state, ledger), plan_of(manifest, state, ledger, memo=False))
    assert passes == ["memo", "full"]
    later = (folder / "m.png").stat().st_mtime_ns + 5_000_000_000
    os.utime(folder / "m.png", ns=(later, later))
    passes.clear()
    after = plan_of(manifest, state, ledger)
    assert passes == ["full"] and after.asked == 2
    assert_same(after, plan_of(manifest, state, ledger, memo=False))


def test_a_touched_photo_keeps_its_key_and_a_changed_one_runs_alone(
    tmp_path: Path, passes: list[str], rechecked: list[str]
) -> None:
    folder = tmp_path / "c"
    manifest = catalog(folder)
    state = tmp_path / "state"
    first = plan_of(manifest, state)
    ledger = LedgerState()
    for order, planned in enumerate(first.jobs):
        ledger.jobs[planned.job.id] = JobState(planned.job.id, Status.SUCCEEDED, planned.key, order)
    photo = folder / "img" / "p5.png"
    later = photo.stat().st_mtime_ns + 5_000_000_000
    os.utime(photo, ns=(later, later))
    fresh = make_image(folder / "new.png", (64, 48), color=(250, 250, 1))
    os.replace(fresh, folder / "img" / "p8.png")
    passes.clear()
    after = plan_of(manifest, state, ledger)
    assert passes == ["memo"] and sorted(rechecked) == ["p5.png", "p8.png"]
    assert [planned.job.id for planned in after.jobs] == ["sku-8"]
    assert_same(after, plan_of(manifest, state, ledger, memo=False))


@pytest.mark.parametrize("how", ["other-size", "broken", "deleted", "large"])
def test_a_photo_the_memo_cannot_vouch_for_takes_the_full_pass(
    tmp_path: Path, passes: list[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    folder = tmp_path / "c"
    manifest = catalog(folder)
    state = tmp_path / "state"
    ledger = half_done(plan_of(manifest, state))
    photo = folder / "img" / "p4.png"
    if how == "other-size":  # size: auto resolves to another size: another variant
        os.replace(make_image(folder / "tall.png", (48, 96), color=(3, 3, 200)), photo)
    elif how == "broken":
        photo.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif how == "deleted":
        photo.unlink()
    else:  # a notice ("is N MB"), said with the photo's first job
        monkeypatch.setattr(files_module, "LARGE_FILE_BYTES", 10)
        os.replace(make_image(folder / "new.png", (64, 48), color=(1, 99, 1)), photo)
    passes.clear()
    after = plan_of(manifest, state, ledger)
    assert passes == ["full"] and after.asked == 2
    full = plan_of(manifest, state, ledger, memo=False)
    assert after.plan.summary == full.plan.summary
    if how in ("other-size", "large"):
        assert_same(after, full)
    else:
        assert [problem.job for problem in after.plan.summary.problems] == ["sku-4"]
        assert not (state / MEMO_NAME).exists()


def test_an_edited_row_and_a_new_row_take_the_full_pass(tmp_path: Path, passes: list[str]) -> None:
    folder = tmp_path / "c"
    manifest = catalog(folder)
    state = tmp_path / "state"
    ledger = half_done(plan_of(manifest, state))
    rows = [row(index) for index in range(12)]
    rows[2][2] = "edited prompt"
    write_rows(folder, rows)
    passes.clear()
    edited = plan_of(manifest, state, ledger)
    assert passes == ["full"] and edited.asked == 1  # another digest: no memo read at all
    assert_same(edited, plan_of(manifest, state, ledger, memo=False))
    make_image(folder / "img" / "p12.png", (64, 48), color=(5, 200, 9))
    write_rows(folder, [*rows, row(12)])
    passes.clear()
    grown = plan_of(manifest, state, ledger)
    assert passes == ["full"]
    assert_same(grown, plan_of(manifest, state, ledger, memo=False))
    assert grown.plan.total == 13


def test_rehash_takes_the_full_pass_and_writes_a_new_memo(
    tmp_path: Path, passes: list[str]
) -> None:
    manifest = catalog(tmp_path / "c")
    state = tmp_path / "state"
    plan_of(manifest, state)
    before = (state / MEMO_NAME).stat()
    passes.clear()
    rehashed = plan_of(manifest, state, rehash=True)
    assert passes == ["full"]
    assert (state / MEMO_NAME).stat().st_ino != before.st_ino
    passes.clear()
    assert_same(plan_of(manifest, state), rehashed)
    assert passes == ["memo"]


@pytest.mark.parametrize("damage", ["flipped", "truncated", "emptied", "foreign"])
def test_a_damaged_memo_takes_the_full_pass(
    tmp_path: Path, passes: list[str], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setattr(memo_module, "BATCH", 5)  # several batches
    manifest = catalog(tmp_path / "c")
    state = tmp_path / "state"
    ledger = half_done(plan_of(manifest, state))
    path = state / MEMO_NAME
    data = bytearray(path.read_bytes())
    if damage == "flipped":
        data[len(data) * 2 // 3] ^= 0x41
    elif damage == "truncated":
        del data[len(data) - 40 :]
    elif damage == "emptied":
        data.clear()
    else:
        data = bytearray(b"not a memo at all")
    path.write_bytes(bytes(data))
    passes.clear()
    after = plan_of(manifest, state, ledger)
    assert passes == ["full"]
    assert_same(after, plan_of(manifest, state, ledger, memo=False))
    passes.clear()
    plan_of(manifest, state, ledger)
    assert passes == ["memo"]  # rewritten whole


def test_a_pass_with_warnings_keeps_no_memo(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    make_image(folder / "a.png")
    jobs = [{"id": "one", "image": "asset:uploads/a.png", "size": "auto", "prompt": "x"}]
    manifest = write_manifest(folder, {"defaults": {"type": "background"}, "jobs": jobs})
    state = tmp_path / "state"
    outcome = plan_of(manifest, state)
    assert outcome.plan.ok and outcome.plan.summary.warning_count == 1
    assert not (state / MEMO_NAME).exists()


def test_the_memo_cache_starts_over_like_the_pass(
    tmp_path: Path, passes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass's shape cache starting over (every few rows) is replayed as it happened."""
    original = prepare_module.RowPass

    def small(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        made.cache_size = 2
        return made

    monkeypatch.setattr(prepare_module, "RowPass", small)
    manifest = catalog(tmp_path / "c", count=30, shared=True)
    state = tmp_path / "state"
    ledger = half_done(plan_of(manifest, state))
    memo, full = plan_of(manifest, state, ledger), plan_of(manifest, state, ledger, memo=False)
    assert_same(memo, full)
    assert len(full.jobs) == 14


def test_a_run_whose_memo_goes_stale_part_way_refetches_a_lost_output_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the CLI: the plan starts over with fresh options (a fresh ``DoneJobs``), so a
    done job told to the first attempt is not re-fetched twice."""
    manifest = write_catalog(tmp_path, 6)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), *FAST]
    with emulator_thread() as emulator:
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert (out / MEMO_NAME).exists()
        outputs = sorted((out / "sku-0000").iterdir())
        for output in outputs:
            output.unlink()
        later = (tmp_path / "img" / "m1.png").stat().st_mtime_ns + 5_000_000_000
        os.utime(tmp_path / "img" / "m1.png", ns=(later, later))  # sku-0001's mask: stale
        capsys.readouterr()
        fetched = len(emulator.log)
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert "re-fetched free from their stored results: 1 jobs" in capsys.readouterr().out
        assert sorted((out / "sku-0000").iterdir()) == outputs
        assert len(emulator.calls("features")) == 6
        assert len(emulator.log) - fetched <= 3  # the record, its result: once


def test_a_killed_pass_leaves_one_temporary_at_most(tmp_path: Path) -> None:
    """The memo is written under one fixed temporary name, a killed run's replaced."""
    manifest = catalog(tmp_path / "c")
    state = tmp_path / "state"
    state.mkdir()
    leftover = state / f".{MEMO_NAME}.tmp"
    leftover.write_bytes(b"a killed run's half memo")
    plan_of(manifest, state)
    assert sorted(path.name for path in state.iterdir() if "memo" in path.name) == [MEMO_NAME]
