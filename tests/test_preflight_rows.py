"""preflight/rows.py and preflight/spool.py: the shared-shape fast path of the one pass.

The fast path must say exactly what checking every row on its own says; these tests compare
the two on catalogs full of edge cases (the one-by-one path is the fast path turned off).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.credits import load_credit_table
from pipeline.errors import Problem
from pipeline.ledger import JobState, LedgerState
from pipeline.manifest import load_manifest, sources
from pipeline.models import PlannedJob, Status
from pipeline.plan import onepass as rows_module
from pipeline.plan import prepare as plan_module
from pipeline.plan.prepare import PlanOptions, prepare, scan
from pipeline.preflight import Notice
from tests.helpers.file_opens import recording
from tests.helpers.images import make_image, make_mask, write_manifest

HEADER = ("id", "image", "mask", "prompt", "n")
DROPPED = ("long", "sku-0", "short", "sku-7", "sku-8", "own-3", "own-5")  # rows with problems


def catalog(folder: Path, rows: Sequence[tuple[str, ...]], **header: Any) -> Path:
    make_image(folder / "img" / "a.png", (64, 64))
    make_image(folder / "img" / "b.png", (96, 64))
    make_mask(folder / "img" / "ma.png", (64, 64))
    make_mask(folder / "img" / "mb.png", (96, 64))
    Image.new("L", (64, 64), 255).save(folder / "img" / "white.png")  # a notice, once
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink)
        writer.writerow(header.pop("columns", HEADER))
        writer.writerows(rows)
    data = {"version": 1, "defaults": {"type": "inpaint", "quality": "low"}, "items": "items.csv"}
    data.update(header)
    return write_manifest(folder, data)


def edge_rows() -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for index in range(60):
        image, mask = ("img/a.png", "img/ma.png") if index % 2 else ("img/b.png", "img/mb.png")
        rows.append((f"sku-{index}", image, mask, "studio shot", ""))
    rows += [
        ("bad/id", "img/a.png", "img/ma.png", "studio shot", ""),  # the id's own problem
        ("SKU-3", "img/a.png", "img/ma.png", "studio shot", ""),  # a duplicate, case ignored
        ("gone-1", "img/none.png", "img/ma.png", "studio shot", ""),  # a missing file ...
        ("gone-2", "img/none.png", "img/ma.png", "studio shot", ""),  # ... named per row
        ("many-1", "img/a.png", "img/ma.png", "studio shot", "many"),  # manifest problem
        ("many-2/x", "img/a.png", "img/ma.png", "studio shot", "many"),  # both kinds
        ("white-1", "img/a.png", "img/white.png", "studio shot", ""),  # notice said once
        ("white-2", "img/a.png", "img/white.png", "studio shot", ""),
        ("tpl-1", "img/a.png", "img/ma.png", "shot of {id}", ""),  # a template: one by one
        ("tpl-2", "img/a.png", "img/ma.png", "shot of {id}", ""),
        (" spaced ", "img/a.png", "img/ma.png", "studio shot", ""),  # stripped: slow path
        ("", "img/b.png", "img/mb.png", "studio shot", ""),  # id from the image stem
        ("", "", "", "", ""),  # blank row: skipped
        ("short", "img/a.png"),  # fewer cells than the header
        ("long", "img/a.png", "img/ma.png", "p", "1", "extra"),  # more cells
        ("n-two", "img/a.png", "img/ma.png", "studio shot", "2"),
        ("sku-0", "img/b.png", "img/mb.png", "studio shot", ""),  # duplicate of the first
        ("x/no-prompt", "img/a.png", "img/ma.png", "", ""),  # no job: its id is not checked
        ("sku-7", "", "img/ma.png", "studio shot", ""),  # no job: not a duplicate either
        ("sku-8", "img/a.png", "img/ma.png", "studio shot", "many"),  # a duplicate with a job
        ("own-1", "img/a.png", "img/ma.png", "a chair", ""),  # prompts of their own ...
        ("own-2", "img/a.png", "img/ma.png", "a lamp, brass", ""),  # ... one shape, own keys
        ("own-3", "img/a.png", "img/ma.png", "x" * 4001, ""),  # too long: said for this row
        ("own-4", "img/a.png", "img/ma.png", " padded ", ""),  # stripped: in the key
        ("own-5", "img/a.png", "img/ma.png", "   ", ""),  # blank: not set (required)
        ("own-6", "img/a.png", "img/ma.png", "a chair", "2"),  # same prompt, another n
    ]
    return rows


def both_ways(manifest_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    fast = list(scan(load_manifest(manifest_path)))
    with monkeypatch.context() as patch:
        patch.setattr(sources, "fast_layout", lambda *args: None)
        slow = list(scan(load_manifest(manifest_path)))
    return fast, slow


def test_the_fast_path_says_what_checking_each_row_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = both_ways(catalog(tmp_path, edge_rows()), monkeypatch)
    assert fast == slow
    kinds = {type(item) for item in fast}
    assert kinds == {PlannedJob, Problem, Notice}
    missing = [p for p in fast if isinstance(p, Problem) and "does not exist" in p.message]
    assert [(p.job, p.field, p.location) for p in missing] == [
        ("gone-1", "image", "items.csv row 63"),
        ("gone-2", "image", "items.csv row 64"),
    ]


def test_the_fast_path_is_taken_for_shared_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    original = sources.build_job

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sources, "build_job", counting)
    rows = [(f"sku-{i}", "img/a.png", "img/ma.png", "p", "") for i in range(1000)]
    planned = [item for item in scan(load_manifest(catalog(tmp_path, rows)))]
    assert len(planned) == 1000 and all(isinstance(p, PlannedJob) for p in planned)
    assert len(built) == 1  # one shape: one Job built, the other 999 rows never build one
    assert [p.job.id for p in planned] == [f"sku-{i}" for i in range(1000)]  # type: ignore[union-attr]
    locations = [p.job.location for p in planned]  # type: ignore[union-attr]
    assert locations == [f"items.csv row {i + 1}" for i in range(1000)]
    assert len({p.key for p in planned}) == 1  # type: ignore[union-attr]


def test_rows_with_their_own_prompts_share_a_shape_and_keep_their_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    original = sources.build_job

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return original(*args, **kwargs)

    rows = [(f"sku-{i}", "img/a.png", "img/ma.png", f"shot {i % 7}", "") for i in range(200)]
    path = catalog(tmp_path, rows)
    fast, slow = both_ways(path, monkeypatch)
    assert fast == slow  # the keys too: a row's prompt is in its key, as ever
    assert len({p.key for p in fast}) == 7
    monkeypatch.setattr(sources, "build_job", counting)
    list(scan(load_manifest(path)))
    assert len(built) == 1


def test_a_shared_file_is_read_and_hashed_once_across_1000_rows(tmp_path: Path) -> None:
    rows = [(f"sku-{i}", "img/a.png", "img/ma.png", f"p {i % 3}", "") for i in range(1000)]
    path = catalog(tmp_path, rows)
    with recording() as opened:  # every open() in the process: the check's, the hash's
        summary = plan_module.prepare_file(path).summary
    assert summary.ok and summary.total.calls == 1000
    inputs = [tmp_path / "img" / name for name in ("a.png", "ma.png")]
    assert sorted(opened.any_of(inputs)) == sorted(str(p.resolve()) for p in inputs)


def test_a_problem_in_row_500_is_named_with_its_row_and_field(tmp_path: Path) -> None:
    rows = [(f"sku-{i}", "img/a.png", "img/ma.png", "p", "") for i in range(1000)]
    rows[499] = ("sku-499", "img/a.png", "img/ma.png", "p", "eleven")
    rows[700] = ("sku:700", "img/a.png", "img/ma.png", "p", "")
    plan = plan_module.prepare_file(catalog(tmp_path, rows))
    found = {(p.job, p.field, p.location) for p in plan.summary.problems}
    assert found == {("sku-499", "n", "items.csv row 500"), ("sku:700", "id", "items.csv row 701")}
    assert plan.summary.problem_count == 2


def test_prepare_counts_and_spools_the_same_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [r for r in edge_rows() if "/" not in r[0] and r[0] != "SKU-3" and "gone" not in r[0]]
    rows = [r for r in rows if not r[0].startswith("many") and r[0] not in DROPPED]
    rows.append(("sku-0-again", "img/b.png", "img/mb.png", "studio shot", ""))
    path = catalog(tmp_path, rows)
    first = list(scan(load_manifest(path)))
    keys = {p.job.id: p.key for p in first if isinstance(p, PlannedJob)}
    ledger = LedgerState()
    for order, job_id in enumerate(("sku-1", "sku-2", "tpl-1")):
        ledger.jobs[job_id] = JobState(job_id, Status.SUCCEEDED, keys[job_id], order)
    ledger.jobs["sku-4"] = JobState("sku-4", Status.SUCCEEDED, "another key", 9)

    def plan_of(options: PlanOptions) -> tuple[Any, list[PlannedJob]]:
        plan = prepare(load_manifest(path), ledger, options, load_credit_table())
        summary = plan.summary
        counts = {f: vars(c) for f, c in summary.counts.items()}
        view = (counts, summary.problems, summary.warnings, dict(plan.skipped), summary.uploads)
        return view, list(plan.jobs)

    for options in (PlanOptions(), PlanOptions(limit=7), PlanOptions(only=frozenset({"sku-9"}))):
        fast = plan_of(options)
        with monkeypatch.context() as patch:
            patch.setattr(sources, "fast_layout", lambda *args: None)
            slow = plan_of(options)
        assert fast == slow
        assert fast[0][1] == [] and fast[1], options


def test_a_full_shape_cache_starts_over_without_losing_a_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows_module.RowPass, "__init__", _small_cache_init(rows_module.RowPass))
    rows = [(f"sku-{i}", "img/a.png", "img/ma.png", f"prompt {i % 5}", "") for i in range(40)]
    path = catalog(tmp_path, rows)
    plan = plan_module.prepare_file(path)
    jobs = list(plan.jobs)
    assert [j.job.id for j in jobs] == [f"sku-{i}" for i in range(40)]
    assert [j.job.prompt for j in jobs] == [f"prompt {i % 5}" for i in range(40)]
    assert plan.summary.total.calls == 40 and plan.summary.total.jobs == 40


def _small_cache_init(cls: type[rows_module.RowPass]) -> Any:
    original = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.cache_size = 3

    return init


def test_a_default_template_naming_the_id_column_turns_the_fast_path_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [(f"sku-{i}", "img/a.png", "img/ma.png", "", "") for i in range(5)]
    path = catalog(
        tmp_path, rows, defaults={"type": "inpaint", "prompt": "photo of {id}", "quality": "low"}
    )
    fast, slow = both_ways(path, monkeypatch)
    assert fast == slow
    assert [p.job.prompt for p in fast] == [f"photo of sku-{i}" for i in range(5)]


def test_the_spool_gives_back_every_kind_of_record_in_order(tmp_path: Path) -> None:
    from dataclasses import replace

    from pipeline.plan import spool as spool_module

    rows = [("sku-0", "img/a.png", "img/ma.png", "p", "")]
    (template,) = [p for p in scan(load_manifest(catalog(tmp_path, rows)))]
    assert isinstance(template, PlannedJob)
    whole = replace(template, job=replace(template.job, id="whole"))
    spool = spool_module.Spool()
    expected = []
    number = spool.template(template, "items.csv row ")
    for index in range(spool_module.BATCH + 10):  # more than one batch
        if index == 100:
            spool.add(whole)
            expected.append(("whole", "p", template.key))
        if index == 200:
            spool.forget_templates()
            number = spool.template(template, "items.csv row ")
        own = index % 3 == 0
        prompt, key = (f"p{index}", f"k{index}") if own else (None, None)
        spool.add_row(number, f"sku-{index}", index + 2, prompt, key)
        expected.append((f"sku-{index}", prompt or "p", key or template.key))
    got = list(spool)
    assert [(j.job.id, j.job.prompt, j.key) for j in got] == expected
    assert got[5].job.location == "items.csv row 7"
    assert [j.job.location for j in got if j.job.id != "whole"] == [
        f"items.csv row {index + 2}" for index in range(spool_module.BATCH + 10)
    ]
    assert got[5].mask_digest == template.mask_digest
