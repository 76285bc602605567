"""The report's source thumbnails from the bytes already read (``runner.thumbnails``): by
preflight, or by the upload of a first run's new photo (``runner.photos``), so no photo is read
again for its thumbnail, and the thumbnail is the one the report would have made (same name,
same bytes)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.models import Feature, InputRef, Job
from pipeline.preflight import Preflight
from pipeline.preflight import statcache as statcache_module
from pipeline.preflight.statcache import StatCache
from pipeline.review.thumbs import Input, Thumbnailer, stat_file
from pipeline.runner import thumbnails as thumbnails_module
from pipeline.runner.thumbnails import SourceThumbnails
from tests.helpers.e2e import QUICK_POLLS, run_cli
from tests.helpers.emulator import emulator_thread
from tests.helpers.file_opens import reading
from tests.helpers.images import make_image
from tests.test_statcache import background_catalog

LATER_NS = 10 * 1_000_000_000


@pytest.fixture(autouse=True)
def later_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache_module, "CLOCK", lambda: time.time_ns() + LATER_NS)


def report_thumbnail(path: Path, out: Path) -> tuple[str, bytes]:
    """The plain thumbnail the report makes of ``path`` in ``out``: its name and bytes."""
    out.mkdir()
    thumbs = Thumbnailer(out)
    name, _masked = thumbs.request(Input("file", path.name, str(path), stat_file(str(path))))
    thumbs.run()
    return name, (out / ".thumbs" / name).read_bytes()


def test_the_thumbnail_from_the_bytes_read_is_the_one_the_report_makes(tmp_path: Path) -> None:
    photo = make_image(tmp_path / "p.jpg", (640, 480), fmt="JPEG", color=(200, 30, 30))
    state = tmp_path / "state"
    with SourceThumbnails(state) as thumbnails:
        thumbnails(str(photo), photo.read_bytes())
    assert thumbnails.made == 1
    name, expected = report_thumbnail(photo, tmp_path / "elsewhere")
    assert (state / ".thumbs" / name).read_bytes() == expected
    report = Thumbnailer(state)  # the report in the run's folder finds it made
    report.request(Input("file", photo.name, str(photo), stat_file(str(photo))))
    assert report.tasks == {}


def test_a_photo_changed_since_its_read_or_too_large_gets_no_thumbnail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = make_image(tmp_path / "p.png", (64, 64))
    large = make_image(tmp_path / "large.png", (64, 64))
    monkeypatch.setattr(thumbnails_module, "LARGEST", large.stat().st_size - 1)
    with SourceThumbnails(tmp_path / "state") as thumbnails:
        thumbnails(str(photo), photo.read_bytes() + b"more bytes than the file has now")
        thumbnails(str(large), large.read_bytes())
        thumbnails(str(tmp_path / "gone.png"), photo.read_bytes())
    assert thumbnails.made == 0


def _noting(told: list[tuple[str, int]]) -> Callable[[str, bytes], None]:
    return lambda path, data: told.append((path, len(data)))


def test_preflight_hands_each_photo_it_reads_to_the_listener_once(tmp_path: Path) -> None:
    photos = [
        make_image(tmp_path / f"p{index}.png", (64, 64), color=(index, 2, 3)) for index in range(3)
    ]
    jobs = [
        Job(f"j{index}", Feature.BACKGROUND, InputRef("file", str(photo)), "on marble")
        for index, photo in enumerate([*photos, photos[0]])
    ]
    for expected in ([str(p) for p in photos], []):  # then unchanged: nothing read, nothing told
        told: list[tuple[str, int]] = []
        with StatCache.open(tmp_path / "state") as cache:
            preflight = Preflight(stat_cache=cache, on_image_read=_noting(told))
            for job in jobs:
                assert preflight.check(job)[1] == []
        assert [path for path, _size in told] == expected
        assert all(size == Path(path).stat().st_size for path, size in told)
    assert Preflight().reader.take_image_bytes(str(photos[0])) is None  # nobody listens: none kept


def test_a_first_run_with_its_report_reads_each_photo_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, photos = background_catalog(tmp_path, 4)
    run = ["run", str(manifest), "--no-progress", "--rpm", "6000", "--config", str(QUICK_POLLS)]
    with emulator_thread() as emulator, reading(tmp_path / "img") as read:
        assert run_cli(run, emulator.env, monkeypatch) == 0
    for photo in photos:  # preflight's glance at its header, then its upload's one read
        size = photo.stat().st_size
        assert size <= read.of(photo) <= size + io.DEFAULT_BUFFER_SIZE, read
    thumbs = {path.name for path in (tmp_path / "out" / "nightly" / ".thumbs").iterdir()}
    assert len(thumbs) >= len(photos)
