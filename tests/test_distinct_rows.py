"""Rows of distinct photos share a shape (``preflight.rows.ImageShape``): each row's image is
checked on its own, and the pass must say exactly what checking every row alone says (the
one-by-one path is the fast path turned off), plan the same jobs and spool the same ones."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.credits import load_credit_table
from pipeline.ledger import JobState, LedgerState
from pipeline.manifest import load_manifest, sources
from pipeline.models import PlannedJob, Status
from pipeline.plan import onepass as rows_module
from pipeline.plan import prepare as plan_module
from pipeline.plan.prepare import PlanOptions, prepare, scan
from pipeline.preflight import files as files_module
from tests.helpers.images import make_image, truncate, write_manifest


def photos(folder: Path) -> None:
    """Photos of three shapes, one turned by EXIF, one too large to send as it is, one broken,
    one reached through a link out of the folder."""
    for index in range(12):
        size = ((64, 64), (96, 64), (64, 96))[index % 3]
        make_image(folder / "img" / f"p{index}.jpg", size, fmt="JPEG", color=(index * 20, 9, 9))
    turned = Image.new("RGB", (80, 40), (1, 2, 3))
    exif = turned.getexif()
    exif[0x0112] = 6  # a quarter turn
    turned.save(folder / "img" / "turned.jpg", exif=exif)
    make_image(folder / "img" / "huge.png", (2100, 300))
    truncate(make_image(folder / "img" / "broken.png", (64, 64)), 0.4)
    outside = make_image(folder.parent / "elsewhere" / "out.png", (64, 64))
    (folder / "img" / "link.png").symlink_to(outside)


def rows() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for index in range(12):
        found.append((f"sku-{index}", f"img/p{index}.jpg", "on marble", ""))
    found += [
        ("turned", "img/turned.jpg", "on marble", ""),
        ("huge", "img/huge.png", "on marble", ""),
        ("broken", "img/broken.png", "on marble", ""),
        ("gone", "img/none.jpg", "on marble", ""),
        ("linked", "img/link.png", "on marble", ""),
        ("again", "img/p0.jpg", "on marble", ""),  # a photo used twice: its notice once
        ("bad/id", "img/p1.jpg", "on marble", ""),
        ("SKU-2", "img/p2.jpg", "on marble", ""),  # a duplicate, letter case ignored
        ("own-prompt", "img/p3.jpg", "a lamp, brass", ""),
        ("long", "img/p4.jpg", "x" * 4001, ""),
        ("blank", "img/p5.jpg", "   ", ""),
        ("fine-q", "img/p6.jpg", "on marble", "high"),
        ("bad-q", "img/p7.jpg", "on marble", "extreme"),  # a field problem of the shape
        ("url", "https://h.example/p q.jpg", "on marble", ""),  # not lifted; refused unfetched
        ("asset", "asset:photos/p.jpg", "on marble", ""),
        ("nul", "img/p\x008.jpg", "on marble", ""),
        ("tpl", "img/{id}.jpg", "on marble", ""),  # a template: one by one
        ("spaced", " img/p9.jpg", "on marble", ""),
        ("", "img/p10.jpg", "on marble", ""),  # the id from the image's stem
        ("dot", "./img/../img/p11.jpg", "on marble", ""),
    ]
    return found


def catalog(folder: Path, defaults: dict[str, Any] | None = None) -> Path:
    photos(folder)
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink)
        writer.writerow(("id", "image", "prompt", "quality"))
        writer.writerows(rows())
    data = {
        "version": 1,
        "name": "distinct",
        "defaults": defaults or {"type": "background", "size": "auto"},
        "items": "items.csv",
    }
    return write_manifest(folder, data)


@pytest.fixture(autouse=True)
def small_large_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file notice (\"is N MB\") for the larger photos, to check notices are said once."""
    monkeypatch.setattr(files_module, "LARGE_FILE_BYTES", 1500)


def both_ways(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    fast = list(scan(load_manifest(manifest)))
    with monkeypatch.context() as patch:
        patch.setattr(sources, "fast_layout", lambda *args: None)
        slow = list(scan(load_manifest(manifest)))
    return fast, slow


def test_rows_of_distinct_photos_say_what_each_row_alone_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = both_ways(catalog(tmp_path / "c"), monkeypatch)
    assert fast == slow
    planned = [item for item in fast if isinstance(item, PlannedJob)]
    sizes = {p.job.id: p.job.size for p in planned}
    assert (sizes["sku-0"], sizes["sku-1"], sizes["sku-2"]) == (
        "1024x1024",
        "1536x1024",
        "1024x1536",
    )
    assert sizes["turned"] == "1024x1536"  # measured upright
    by_id = {p.job.id: p for p in planned}
    assert by_id["huge"].image_recipe is not None and by_id["huge"].image_recipe.size is not None
    assert len({by_id[f"sku-{index}"].key for index in range(12)}) == 12  # each photo its key
    assert by_id["again"].key == by_id["sku-0"].key  # the same photo, prompt and parameters
    messages = " ".join(str(item) for item in fast if not isinstance(item, PlannedJob))
    for expected in ("does not exist", "symbolic link", "damaged", "NUL byte", "'extreme'"):
        assert expected in messages


@pytest.mark.parametrize(
    "defaults",
    [
        {"type": "background", "size": "1024x1024"},
        {"type": "background", "size": "auto", "background": "transparent"},
        {"type": "background", "size": "auto", "prompt": "photo {image}"},  # reads the image
        {"type": "inpaint", "mask": "box:0,0,1,0.5"},  # the mask is drawn on it: not lifted
        {"type": "inpaint", "mask": "box:0,0,1,0.5", "size": "auto"},
    ],
)
def test_other_shapes_of_catalogs_say_the_same_both_ways(
    tmp_path: Path, defaults: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = both_ways(catalog(tmp_path / "c", defaults), monkeypatch)
    assert fast == slow
    assert any(isinstance(item, PlannedJob) for item in fast)


def test_distinct_photos_are_built_once_and_planned_once_per_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    for index in range(300):
        make_image(folder / "img" / f"p{index}.png", (64, 64), color=(index % 250, 1, 2))
    lines = "".join(f"sku-{index},img/p{index}.png\n" for index in range(300))
    (folder / "items.csv").write_text("id,image\n" + lines)
    defaults = {"type": "background", "prompt": "on marble", "size": "auto"}
    manifest = write_manifest(folder, {"version": 1, "defaults": defaults, "items": "items.csv"})
    built: list[int] = []
    planned: list[int] = []
    original_build, original_plan = sources.build_job, plan_module.plan_job

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return original_build(*args, **kwargs)

    def counting_plan(*args: Any) -> Any:
        plan = original_plan(*args)

        def counted(job: Any, digest: Any = None) -> Any:
            planned.append(1)
            return plan(job, digest)

        return counted

    monkeypatch.setattr(sources, "build_job", counting_build)
    monkeypatch.setattr(plan_module, "plan_job", counting_plan)
    jobs = [item for item in scan(load_manifest(manifest)) if isinstance(item, PlannedJob)]
    assert [job.job.id for job in jobs] == [f"sku-{index}" for index in range(300)]
    assert len(built) == 1 and len(planned) == 1  # one shape, one variant (all 64x64)
    assert jobs[7].job.image.value == str(folder / "img" / "p7.png")
    assert jobs[7].image_digest != jobs[8].image_digest


def test_the_plan_and_the_spool_are_the_same_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = catalog(tmp_path / "c")
    first = [item for item in scan(load_manifest(path)) if isinstance(item, PlannedJob)]
    ledger = LedgerState()
    for order, planned in enumerate(first[:5]):
        ledger.jobs[planned.job.id] = JobState(planned.job.id, Status.SUCCEEDED, planned.key, order)
    ledger.jobs[first[6].job.id] = JobState(first[6].job.id, Status.SUCCEEDED, "older", 9)

    def plan_of(options: PlanOptions) -> tuple[Any, list[PlannedJob]]:
        plan = prepare(load_manifest(path), ledger, options, load_credit_table())
        summary = plan.summary
        counts = {f: vars(c) for f, c in summary.counts.items()}
        view = (counts, summary.problems, summary.warnings, dict(plan.skipped), summary.uploads)
        return view, list(plan.jobs) if plan.ok else []

    for options in (PlanOptions(), PlanOptions(limit=3), PlanOptions(only=frozenset({"sku-9"}))):
        fast = plan_of(options)
        with monkeypatch.context() as patch:
            patch.setattr(sources, "fast_layout", lambda *args: None)
            slow = plan_of(options)
        assert fast == slow


def test_a_clean_catalog_of_distinct_photos_spools_each_with_its_own_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    for index in range(30):
        size = (64, 64) if index % 2 else (96, 64)
        make_image(folder / "img" / f"p{index}.png", size, color=(index * 8, 1, 2))
    lines = "".join(f"sku-{index},img/p{index}.png,shot {index % 4}\n" for index in range(30))
    (folder / "items.csv").write_text("id,image,prompt\n" + lines)
    defaults = {"type": "background", "size": "auto"}
    manifest = write_manifest(folder, {"version": 1, "defaults": defaults, "items": "items.csv"})
    monkeypatch.setattr(rows_module.RowPass, "cache_size", 1)  # the cache starts over often
    fast = plan_module.prepare_file(manifest)
    with monkeypatch.context() as patch:
        patch.setattr(sources, "fast_layout", lambda *args: None)
        slow = plan_module.prepare_file(manifest)
    fast_jobs, slow_jobs = list(fast.jobs), list(slow.jobs)
    assert fast_jobs == slow_jobs and len(fast_jobs) == 30
    assert fast.summary.total.calls == slow.summary.total.calls == 30
    assert [os.path.basename(j.job.image.value) for j in fast_jobs] == [
        f"p{index}.png" for index in range(30)
    ]


def test_a_box_mask_is_drawn_once_per_image_size_not_once_per_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.preflight import core as core_module

    folder = tmp_path / "c"
    for index in range(40):
        size = (64, 64) if index % 2 else (96, 64)
        make_image(folder / "img" / f"p{index}.png", size, color=(index * 6, 1, 2))
    lines = "".join(f"sku-{index},img/p{index}.png\n" for index in range(40))
    (folder / "items.csv").write_text("id,image\n" + lines)
    defaults = {"type": "inpaint", "prompt": "a lamp", "mask": "box:0,0.5,1,1", "mask_feather": 4}
    manifest = write_manifest(folder, {"version": 1, "defaults": defaults, "items": "items.csv"})
    drawn: list[tuple[int, int]] = []
    original = core_module.render_mask

    def counting(recipe: Any, image: Any, *args: Any) -> Any:
        drawn.append((image.width, image.height))
        return original(recipe, image, *args)

    monkeypatch.setattr(core_module, "render_mask", counting)
    jobs = [item for item in scan(load_manifest(manifest)) if isinstance(item, PlannedJob)]
    assert len(jobs) == 40 and sorted(drawn) == [(64, 64), (96, 64)]
    assert len({job.key for job in jobs}) == 40  # each photo its own key all the same
    assert {job.mask_digest for job in jobs} == {jobs[0].mask_digest, jobs[1].mask_digest}
