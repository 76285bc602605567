"""The nightly re-run's fast path (``preflight.quick``, ``RowPass._quick_row``): a row whose own
photo the stat cache knows unchanged costs a stat and a lookup, and the pass says exactly what
a pass without the cache says; anything that changed (the photo, its row, the manifest) or
that the fast path does not take (a link, a notice, a broken or missing file) gets the full
check.

The state folder's clock runs ten seconds ahead of the files' times (as a nightly run comes
hours after the photos were written), so entries are not racily clean.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.credits import load_credit_table
from pipeline.ledger import JobState, LedgerState
from pipeline.manifest import load_manifest
from pipeline.models import Feature, InputRef, Job, PlannedJob, Status
from pipeline.plan.keys import ImageKeys, key_document, key_of
from pipeline.plan.prepare import PlanOptions, prepare, scan
from pipeline.preflight import Preflight
from pipeline.preflight import core as core_module
from pipeline.preflight import files as files_module
from pipeline.preflight import statcache as statcache_module
from pipeline.preflight.statcache import StatCache
from tests.helpers.images import make_image, write_manifest
from tests.test_distinct_rows import catalog

LATER_NS = 10 * 1_000_000_000


@pytest.fixture(autouse=True)
def later_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache_module, "CLOCK", lambda: time.time_ns() + LATER_NS)


@pytest.fixture(autouse=True)
def small_large_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file notice ("is N MB") for the larger photos: the fast path must leave them alone."""
    monkeypatch.setattr(files_module, "LARGE_FILE_BYTES", 1500)


@contextmanager
def full_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The image paths the full check (``check_local_image``) looked at, in order."""
    seen: list[str] = []
    original = core_module.Preflight.check_local_image

    def counting(self: Preflight, ref: Any, base: str, glance: bool = False) -> Any:
        seen.append(os.path.basename(ref.value))
        return original(self, ref, base, glance)

    with monkeypatch.context() as patch:
        patch.setattr(core_module.Preflight, "check_local_image", counting)
        yield seen


def cached_pass(manifest: Path, state: Path, rehash: bool = False) -> list[Any]:
    with StatCache.open(state, rehash) as cache:
        return list(scan(load_manifest(manifest), Preflight(stat_cache=cache)))


def uncached_pass(manifest: Path) -> list[Any]:
    return list(scan(load_manifest(manifest)))


def planned(items: list[Any]) -> dict[str, PlannedJob]:
    return {item.job.id: item for item in items if isinstance(item, PlannedJob)}


def simple_catalog(folder: Path, count: int = 20, prompt_column: bool = False) -> Path:
    for index in range(count):
        make_image(folder / "img" / f"p{index}.png", (64, 64), color=(index * 9, 1, 2))
    with (folder / "items.csv").open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(("id", "image", "prompt") if prompt_column else ("id", "image"))
        for index in range(count):
            row = [f"sku-{index}", f"img/p{index}.png"]
            writer.writerow([*row, f"shot {index % 3}"] if prompt_column else row)
    defaults: dict[str, Any] = {"type": "background", "size": "auto"}
    if not prompt_column:
        defaults["prompt"] = "on marble"
    return write_manifest(folder, {"version": 1, "defaults": defaults, "items": "items.csv"})


def test_a_second_pass_over_the_cache_says_what_a_pass_without_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = catalog(tmp_path / "c")
    state = tmp_path / "state"
    first = cached_pass(manifest, state)
    with full_checks(monkeypatch) as looked_at:
        second = cached_pass(manifest, state)
    assert second == first == uncached_pass(manifest)
    # Every clean photo without a notice took the fast path; the others the full check.
    notices = {item.job for item in second if type(item).__name__ == "Notice"}
    assert notices  # the larger photos have one, said once
    assert "huge.png" in looked_at and "broken.png" in looked_at and "link.png" in looked_at
    assert "none.jpg" in looked_at  # a missing photo
    # Rows of these photos are clean (p1, p4, p5 and p7 have a bad id, prompt or quality);
    # those without a notice (not "larger" than 1,500 bytes) need no full check.
    clean = [f"p{index}.jpg" for index in (0, 2, 3, 6, 8, 9, 10, 11)]
    small = {name for name in clean if (tmp_path / "c" / "img" / name).stat().st_size <= 1500}
    assert small and not small & set(looked_at)


def test_an_unchanged_catalog_is_planned_the_same_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = simple_catalog(tmp_path / "c", prompt_column=True)
    state = tmp_path / "state"
    first = planned(cached_pass(manifest, state))
    with full_checks(monkeypatch) as looked_at:
        second = planned(cached_pass(manifest, state))
    assert looked_at == []  # every row from a stat and a lookup
    assert second == first == planned(uncached_pass(manifest))
    assert len({job.key for job in second.values()}) == 20


@pytest.mark.parametrize("how", ["same-mtime", "new-mtime", "new-ctime"])
def test_a_replaced_photo_of_the_same_size_is_read_and_keyed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    before = planned(cached_pass(manifest, state))
    photo = folder / "img" / "p3.png"
    old = photo.stat()
    if how == "new-ctime":  # the same inode, its bytes rewritten, the mtime put back
        data = bytearray(photo.read_bytes())
        replacement = folder / "img" / "p4.png"
        photo.write_bytes(replacement.read_bytes()[: len(data)].ljust(len(data), b"\0"))
    else:  # new bytes renamed over it (a new inode), as an editor saves
        fresh = make_image(folder / "new.png", (64, 64), color=(250, 250, 1))
        os.replace(fresh, photo)
    if how != "new-mtime":
        os.utime(photo, ns=(old.st_atime_ns, old.st_mtime_ns))
    with full_checks(monkeypatch) as looked_at:
        after = planned(cached_pass(manifest, state))
    assert "p3.png" in looked_at and "p2.png" not in looked_at
    fresh_pass = uncached_pass(manifest)
    assert after == planned(fresh_pass)
    if "sku-3" in after:
        assert after["sku-3"].key != before["sku-3"].key
    assert after["sku-2"].key == before["sku-2"].key


def test_a_touched_photo_is_read_again_and_keeps_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    before = planned(cached_pass(manifest, state))
    photo = folder / "img" / "p5.png"
    later = photo.stat().st_mtime_ns + 5_000_000_000
    os.utime(photo, ns=(later, later))
    with full_checks(monkeypatch) as looked_at:
        after = planned(cached_pass(manifest, state))
    assert looked_at == ["p5.png"]
    assert after == before


def test_a_changed_prompt_a_new_row_and_a_deleted_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder, prompt_column=True)
    state = tmp_path / "state"
    before = planned(cached_pass(manifest, state))
    make_image(folder / "img" / "extra.png", (96, 64), color=(3, 3, 3))
    (folder / "img" / "p7.png").unlink()
    text = (folder / "items.csv").read_text()
    text = text.replace("sku-1,img/p1.png,shot 1", "sku-1,img/p1.png,shot in a kitchen")
    (folder / "items.csv").write_text(text + "sku-new,img/extra.png,shot 0\n")
    items = cached_pass(manifest, state)
    after = planned(items)
    assert items == uncached_pass(manifest)
    assert after["sku-1"].key != before["sku-1"].key
    assert after["sku-1"].job.prompt == "shot in a kitchen"
    assert after["sku-new"].job.size == "1536x1024"
    assert "sku-7" not in after
    assert any("does not exist" in str(item) and "sku-7" in str(item) for item in items)
    unchanged = [job_id for job_id in before if job_id not in ("sku-1", "sku-7")]
    assert all(after[job_id].key == before[job_id].key for job_id in unchanged)


def test_an_edited_manifest_keys_every_row_again(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    before = planned(cached_pass(manifest, state))
    text = manifest.read_text()
    manifest.write_text(text.replace("on marble", "on slate"))
    items = cached_pass(manifest, state)
    after = planned(items)
    assert items == uncached_pass(manifest)
    assert all(after[job_id].key != before[job_id].key for job_id in before)
    assert {job.job.prompt for job in after.values()} == {"on slate"}


def test_rehash_reads_every_photo_and_keeps_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    before = planned(cached_pass(manifest, state))
    with full_checks(monkeypatch) as looked_at:
        after = planned(cached_pass(manifest, state, rehash=True))
    assert len(looked_at) == 20
    assert after == before


def test_a_folder_linked_out_of_the_manifest_folder_is_refused_though_the_cache_knows_it(
    tmp_path: Path,
) -> None:
    """The stat cache knows the photos (written as outside the folder, which is allowed);
    then the catalog names them through a link inside it: the folder policy still refuses."""
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    moved = tmp_path / "elsewhere"
    os.replace(folder / "img", moved)
    items_file = folder / "items.csv"
    written_inside = items_file.read_text()
    items_file.write_text(written_inside.replace("img/", "../elsewhere/"))
    assert len(planned(cached_pass(manifest, state))) == 20  # outside, as written: taken
    (folder / "img").symlink_to(moved)
    items_file.write_text(written_inside)
    items = cached_pass(manifest, state)
    assert items == uncached_pass(manifest)
    assert not planned(items)
    assert sum("symbolic link" in str(item) for item in items) == 20


def test_a_photo_turned_into_a_link_takes_the_full_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    cached_pass(manifest, state)
    photo = folder / "img" / "p2.png"
    os.replace(photo, folder / "img" / "real-p2.png")
    photo.symlink_to(folder / "img" / "real-p2.png")
    with full_checks(monkeypatch) as looked_at:
        items = cached_pass(manifest, state)
    assert looked_at == ["p2.png"]
    assert items == uncached_pass(manifest)
    assert "sku-2" in planned(items)


def test_the_no_op_plan_from_the_cache_runs_nothing_and_a_change_runs_only_it(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "c"
    manifest = simple_catalog(folder)
    state = tmp_path / "state"
    done = planned(cached_pass(manifest, state))
    ledger = LedgerState()
    for order, job in enumerate(done.values()):
        ledger.jobs[job.job.id] = JobState(job.job.id, Status.SUCCEEDED, job.key, order)
    fresh = make_image(folder / "new.png", (64, 64), color=(1, 250, 1))
    os.replace(fresh, folder / "img" / "p9.png")

    with StatCache.open(state) as cache:
        plan = prepare(
            load_manifest(manifest),
            ledger,
            PlanOptions(),
            load_credit_table(),
            Preflight(stat_cache=cache),
        )
        jobs = list(plan.jobs)
    assert plan.ok
    assert [job.job.id for job in jobs] == ["sku-9"]
    assert sum(plan.skipped.values()) == 19


@pytest.mark.parametrize(
    "prompt",
    [
        "on marble",
        'a "quoted" prompt with "sha256:' + "*" * 64 + '" in it',  # the splitter's own marker
        "ünïcödé \\ backslash \n newline",
    ],
)
def test_image_keys_are_the_keys_of_the_documents(prompt: str) -> None:
    job = Job("a", Feature.BACKGROUND, InputRef("file", "/p.png"), prompt)
    document = key_document(job, "sha256:" + "0" * 64, None, recipes={"image_recipe": "r6"})
    keys = ImageKeys(document)
    for digest in (hashlib.sha256(str(n).encode()).hexdigest() for n in range(5)):
        assert keys.key(digest) == key_of({**document, "image": f"sha256:{digest}"})
