"""Inputs are read once: the stat cache (``preflight.statcache``) and the reader over it.

What proves a file was not opened: an audit hook (``tests.helpers.file_opens``) sees every
``open()`` the interpreter makes, whoever makes it; reading permissions would prove nothing (the
tests run as root, and a chmod changes the ctime the cache is keyed by anyway). Times are moved with
``os.utime`` (explicit nanoseconds) and files replaced by rename, never by sleeping; the
wall clock the cache stamps entries with is injected (``CLOCK``): a file written a moment ago
is racily clean (see the module), so the tests read it "ten seconds later".
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipeline.models import Feature, InputRef, Job
from pipeline.plan.keys import Planner
from pipeline.preflight import ImageFacts, Preflight
from pipeline.preflight import statcache as statcache_module
from pipeline.preflight.reader import InputReader, read_whole
from pipeline.preflight.statcache import (
    CACHE_NAME,
    RACY_WINDOW_NS,
    Signature,
    StatCache,
)
from tests.helpers.e2e import QUICK_POLLS, run_cli
from tests.helpers.emulator import emulator_thread
from tests.helpers.file_opens import recording
from tests.helpers.images import make_image, make_mask

LATER_NS = 10 * 1_000_000_000  # the cache's clock runs this far ahead of the files' times
OLD_NS = 1_600_000_000 * 1_000_000_000  # an mtime in 2020
FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


@pytest.fixture(autouse=True)
def later_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by a test are read as if a nightly run came ten seconds later."""
    monkeypatch.setattr(statcache_module, "CLOCK", lambda: time.time_ns() + LATER_NS)


class CountingRead:
    """The reader's opener, counting reads per path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, real: str) -> bytes:
        self.paths.append(real)
        return read_whole(real)


def reader_in(
    state: Path, read: Callable[[str], bytes] | None = None, rehash: bool = False
) -> InputReader:
    return InputReader(StatCache.open(state, rehash), read=read or read_whole)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return make_image(tmp_path / "photos" / "chair.jpg", size=(80, 60), fmt="JPEG")


def one_pass(state: Path, *paths: Path, rehash: bool = False) -> tuple[list[str], list[object]]:
    """A pass over ``paths`` as preflight makes it (facts, then digest); the files read."""
    counting = CountingRead()
    reader = reader_in(state, counting, rehash)
    found: list[object] = []
    for path in paths:
        real = os.path.realpath(path)
        found.append(reader.image(real))
        found.append(reader.digest(real))
    reader.cache.close()
    return counting.paths, found


# --- the reader and the cache --------------------------------------------------------------


def test_a_new_file_is_read_once_for_its_facts_and_its_digest(tmp_path: Path, photo: Path) -> None:
    with recording() as opened:
        read, (facts, digest) = one_pass(tmp_path / "state", photo)
    assert read == [str(photo)]
    assert opened.count_of(photo) == 1  # one open in the whole process: hash and checks share it
    assert isinstance(facts, ImageFacts) and (facts.width, facts.height) == (80, 60)
    assert digest == Planner().digest(photo)  # the same digest hashing the file alone gives


def test_an_unchanged_file_is_not_opened_on_the_next_pass(tmp_path: Path, photo: Path) -> None:
    state = tmp_path / "state"
    _, first = one_pass(state, photo)
    with recording() as opened:
        read, again = one_pass(state, photo)
    assert read == [] and opened.count_of(photo) == 0
    assert again == first  # the facts and digest are the ones read the first time


def test_a_file_replaced_with_the_same_size_and_mtime_is_noticed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    photo = tagged_png(tmp_path / "photos" / "chair.png", "first")
    _, (_, digest) = one_pass(state, photo)
    other = tagged_png(tmp_path / "photos" / "other.png", "other")  # the same length
    before = photo.stat()
    os.replace(other, photo)  # replaced by rename: another inode, another ctime
    after = photo.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    read, (_, new_digest) = one_pass(state, photo)
    assert read == [str(photo)]
    assert new_digest != digest


def tagged_png(path: Path, tag: str) -> Path:
    """A PNG whose size is the same for every tag of the same length; mtime in 2020."""
    info = PngInfo()
    info.add_text("tag", tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (90, 90, 90)).save(path, pnginfo=info)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def test_a_touched_but_unchanged_file_is_read_again_with_the_same_digest(
    tmp_path: Path, photo: Path
) -> None:
    state = tmp_path / "state"
    _, first = one_pass(state, photo)
    os.utime(photo, ns=(OLD_NS, OLD_NS + 7))
    read, again = one_pass(state, photo)
    assert read == [str(photo)] and again == first
    read, _ = one_pass(state, photo)
    assert read == []  # and trusted from then on


def test_a_deleted_file_is_a_problem_as_before(tmp_path: Path, photo: Path) -> None:
    state = tmp_path / "state"
    one_pass(state, photo)
    photo.unlink()
    reader = reader_in(state)
    assert reader.image(str(photo)) == f"does not exist (looked for {photo})"
    with pytest.raises(OSError):
        reader.digest(str(photo))


def test_rehash_reads_every_file_again_and_refreshes_the_cache(tmp_path: Path, photo: Path) -> None:
    state = tmp_path / "state"
    second = make_image(tmp_path / "photos" / "lamp.png", size=(40, 40))
    one_pass(state, photo, second)
    with StatCache.open(state, rehash=True) as forgetting:
        reader = InputReader(forgetting)
        assert isinstance(reader.image(str(photo)), ImageFacts)
        assert forgetting.hits == 0  # nothing is taken from the cache ...
    read, _ = one_pass(state, photo, second, rehash=True)
    assert sorted(read) == sorted([str(photo), str(second)])  # ... every file is read
    with StatCache.open(state) as refreshed:
        reader = InputReader(refreshed)
        assert isinstance(reader.image(str(second)), ImageFacts)
        assert refreshed.hits == 1  # and the cache is whole again
    read, _ = one_pass(state, photo, second)
    assert read == []


def test_a_file_modified_in_the_instant_it_was_read_is_read_again(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    changed = photo.stat().st_ctime_ns
    # The first read happens within the racy window after the file's last change (git's
    # "racily clean" entry): the same signature later proves nothing.
    monkeypatch.setattr(statcache_module, "CLOCK", lambda: changed + RACY_WINDOW_NS // 2)
    one_pass(state, photo)
    read, _ = one_pass(state, photo)
    assert read == [str(photo)]
    monkeypatch.setattr(statcache_module, "CLOCK", lambda: changed + 2 * RACY_WINDOW_NS)
    one_pass(state, photo)  # read once more, well after the change: now it is trusted
    read, _ = one_pass(state, photo)
    assert read == []


def test_the_racy_rule_looks_at_mtime_and_ctime() -> None:
    signature = Signature(1, 2, 3, mtime_ns=10 * RACY_WINDOW_NS, ctime_ns=20 * RACY_WINDOW_NS)
    assert signature.racy(20 * RACY_WINDOW_NS + 1)  # ctime just before the read
    assert not signature.racy(21 * RACY_WINDOW_NS + 1)


def test_mask_facts_and_notes_survive_the_cache(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mask = make_mask(tmp_path / "m.png", (64, 64), (0, 0, 64, 64), mode="LA")  # all white
    first = reader_in(state)
    facts = first.mask(str(mask))
    first.cache.close()
    counting = CountingRead()
    again = reader_in(state, counting).mask(str(mask))
    assert counting.paths == []
    assert again == facts and isinstance(again, ImageFacts) and again.notes and again.convert_mask


def test_a_file_used_as_image_then_as_mask_keeps_both_facts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = str(make_image(tmp_path / "both.png", size=(32, 32), mode="L"))
    reader = reader_in(state)
    reader.image(path)
    reader.mask(path)
    reader.cache.close()
    counting = CountingRead()
    later = reader_in(state, counting)
    assert isinstance(later.image(path), ImageFacts) and isinstance(later.mask(path), ImageFacts)
    assert counting.paths == []


def test_a_broken_file_is_not_read_again_while_unchanged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    first = reader_in(state)
    problem = first.image(str(broken))
    first.cache.close()
    assert isinstance(problem, str)
    counting = CountingRead()
    assert reader_in(state, counting).image(str(broken)) == problem
    assert counting.paths == []


def test_other_limits_make_the_facts_of_the_cache_moot(tmp_path: Path, photo: Path) -> None:
    state = tmp_path / "state"
    one_pass(state, photo)
    counting = CountingRead()
    strict = InputReader(StatCache.open(state), max_pixels=100, read=counting)
    assert "megapixels" in str(strict.image(str(photo)))
    assert counting.paths == [str(photo)]


# --- a cache that cannot serve is never a traceback -----------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a database at all" * 100, id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(None, id="foreign-sqlite"),
        pytest.param(b"SQLite format 3\x00" + b"\xff" * 4000, id="damaged-header"),
    ],
)
def test_a_corrupt_or_foreign_file_is_ignored_and_rebuilt(
    tmp_path: Path, photo: Path, content: bytes | None
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if content is None:
        with sqlite3.connect(state / CACHE_NAME) as other:
            other.execute("CREATE TABLE files (path TEXT, note TEXT)")  # someone else's
            other.execute("INSERT INTO files VALUES ('x', 'y')")
        other.close()
    else:
        (state / CACHE_NAME).write_bytes(content)
    warnings: list[str] = []
    cache = StatCache.open(state, warn=warnings.append)
    assert cache.kept and warnings == []
    reader = InputReader(cache)
    reader.image(str(photo))
    cache.close()
    read, _ = one_pass(state, photo)
    assert read == []  # rebuilt, and it serves


class Malformed:
    """A connection whose database turned out damaged in the middle of a pass."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real, self.calls = real, 0

    def execute(self, *args: object) -> sqlite3.Cursor:
        self.calls += 1
        raise sqlite3.DatabaseError("database disk image is malformed")

    def cursor(self) -> Malformed:
        return self

    def close(self) -> None:
        self.real.close()


def test_a_database_that_breaks_in_use_is_dropped_and_said_once(
    tmp_path: Path, photo: Path
) -> None:
    state = tmp_path / "state"
    one_pass(state, photo)
    opened = StatCache.open(state)
    assert opened.path is not None
    malformed = Malformed(sqlite3.connect(opened.path))
    warnings: list[str] = []
    cache = StatCache(malformed, opened.path, warn=warnings.append)  # type: ignore[arg-type]
    opened.close()
    reader = InputReader(cache)
    assert isinstance(reader.image(str(photo)), ImageFacts)  # read from the file: it goes on
    assert isinstance(reader.image(str(tmp_path / "missing.png")), str)
    cache.close()
    assert malformed.calls == 1  # dropped at the first failure
    assert len(warnings) == 1 and "rebuilt next time" in warnings[0]
    assert not (state / CACHE_NAME).exists()
    one_pass(state, photo)
    read, _ = one_pass(state, photo)
    assert read == []  # the next runs have a working cache again


def test_a_cache_another_process_is_writing_is_shared_not_broken(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statcache_module, "BUSY_TIMEOUT_MS", 0)  # do not wait for the lock
    state = tmp_path / "state"
    StatCache.open(state).close()
    other = sqlite3.connect(state / CACHE_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a run beside this validate, mid-batch
    warnings: list[str] = []
    cache = StatCache.open(state, warn=warnings.append)
    assert isinstance(InputReader(cache).image(str(photo)), ImageFacts)
    cache.close()  # its batch cannot be written now: skipped, not an error
    other.execute("ROLLBACK")
    other.close()
    assert warnings == [] and (state / CACHE_NAME).exists()
    read, _ = one_pass(state, photo)
    assert read == [str(photo)]  # read again, and kept this time
    read, _ = one_pass(state, photo)
    assert read == []


def test_an_unusable_state_folder_leaves_the_cache_unkept_and_says_so(
    tmp_path: Path, photo: Path
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the folder should be")  # root can write anywhere else
    warnings: list[str] = []
    cache = StatCache.open(blocker, warn=warnings.append)
    assert not cache.kept and len(warnings) == 1
    assert "cannot keep the input cache" in warnings[0]
    assert isinstance(InputReader(cache).image(str(photo)), ImageFacts)
    cache.close()


# --- the commands ---------------------------------------------------------------------------


def background_catalog(folder: Path, count: int) -> tuple[Path, list[Path]]:
    photos = [
        make_image(folder / "img" / f"p{i}.jpg", size=(64, 48), fmt="JPEG", color=(i * 30, 90, 9))
        for i in range(count)
    ]
    lines = "".join(f"p{i},img/p{i}.jpg\n" for i in range(count))
    (folder / "items.csv").write_text("id,image\n" + lines)
    manifest = folder / "catalog.yaml"
    manifest.write_text(
        "version: 1\nname: nightly\ndefaults:\n  type: background\n  prompt: on marble\n"
        "  quality: low\nitems: items.csv\n"
    )
    return manifest, photos


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[tuple[Path, list[Path]]]:
    yield background_catalog(tmp_path, 4)


def test_validate_twice_opens_no_photo_the_second_time(
    tmp_path: Path,
    catalog: tuple[Path, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, photos = catalog
    with recording() as opened:
        assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 0
    assert sorted(opened.any_of(photos)) == sorted(str(p) for p in photos)  # each once
    assert (tmp_path / "out" / "nightly" / CACHE_NAME).is_file()  # where the run will look
    with recording() as opened:
        assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 0
    assert opened.any_of(photos) == []
    with recording() as opened:
        assert run_cli(["validate", str(manifest), "--rehash"], {}, monkeypatch) == 0
    assert sorted(opened.any_of(photos)) == sorted(str(p) for p in photos)
    assert "note:" not in capsys.readouterr().err


def test_validate_with_an_unusable_state_folder_still_validates(
    tmp_path: Path,
    catalog: tuple[Path, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, _ = catalog
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    assert run_cli(["validate", str(manifest), "--state", str(blocker)], {}, monkeypatch) == 0
    err = capsys.readouterr().err
    assert err.count("note: cannot keep the input cache") == 1 and "Traceback" not in err


@pytest.mark.slow  # three whole runs
def test_a_nightly_run_reads_only_what_changed_and_buys_only_that(
    tmp_path: Path,
    catalog: tuple[Path, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest, photos = catalog
    with emulator_thread() as emulator:
        run = ["run", str(manifest), *FAST]
        assert run_cli(run, emulator.env, monkeypatch) == 0
        bought = len(emulator.calls("features"))
        assert bought == len(photos)
        # Nothing changed: nothing opened, nothing bought.
        with recording() as opened:
            assert run_cli(run, emulator.env, monkeypatch) == 0
        assert opened.any_of(photos) == [] and len(emulator.calls("features")) == bought
        # Touched (same bytes): read again, the same digest, the same key: nothing bought.
        os.utime(photos[1], ns=(OLD_NS, OLD_NS))
        with recording() as opened:
            assert run_cli(run, emulator.env, monkeypatch) == 0
        assert opened.any_of(photos) == [str(photos[1])]
        assert len(emulator.calls("features")) == bought
        # Replaced in place (new bytes): read, and that job alone runs again.
        make_image(photos[2], size=(64, 48), fmt="JPEG", color=(250, 250, 0))
        with recording() as opened:
            assert run_cli(run, emulator.env, monkeypatch) == 0
        assert str(photos[2]) in opened.any_of(photos)
        assert set(opened.any_of(photos)) == {str(photos[2])}
        assert len(emulator.calls("features")) == bought + 1
        # --rehash: every photo read again (and the cache rebuilt); still nothing bought.
        with recording() as opened:
            assert run_cli([*run, "--rehash"], emulator.env, monkeypatch) == 0
        assert sorted(set(opened.any_of(photos))) == sorted(str(p) for p in photos)
        assert len(emulator.calls("features")) == bought + 1


def test_a_run_whose_photo_was_deleted_names_it_and_sends_nothing(
    tmp_path: Path,
    catalog: tuple[Path, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, photos = catalog
    assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 0
    photos[3].unlink()
    with emulator_thread() as emulator:
        assert run_cli(["run", str(manifest), *FAST], emulator.env, monkeypatch) == 2
        assert emulator.calls("features") == []
    err = capsys.readouterr().err
    assert "job 'p3' (items.csv row 4)" in err and "image: img/p3.jpg does not exist" in err


def test_the_digest_is_the_same_with_and_without_the_cache(tmp_path: Path, photo: Path) -> None:
    job = Job("a", Feature.BACKGROUND, InputRef("file", str(photo)), "on marble")
    keys = []
    for _ in range(2):
        with StatCache.open(tmp_path / "state") as cache:
            preflight = Preflight(stat_cache=cache)
            checked, problems, _ = preflight.check(job)
            assert checked is not None and problems == []
            keys.append(Planner(digest_of=preflight.digest).plan(checked).key)
    assert keys[0] == keys[1] == Planner().plan(job).key
