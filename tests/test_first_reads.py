"""A first run reads each new photo once (docs/ledger.md#stat-cache).

Preflight glances at the photo of a job no earlier run knows (its header and its last bytes,
``preflight.files.glance_facts``) and plans it unread (``models.UnreadImage``); the job's upload
reads it, once: the digest completes the content key, the full check and the report's thumbnail
come from the same bytes, and those bytes are uploaded. These tests count bytes read, not opens:
a glance opens the file too, but reads a few kilobytes of it.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image

from pipeline.credits import load_credit_table
from pipeline.errors import InputUnreadable
from pipeline.ledger import LedgerState
from pipeline.manifest import load_manifest
from pipeline.models import PlannedJob, Status, UnreadImage
from pipeline.plan.prepare import PlanOptions, prepare
from pipeline.preflight import Preflight
from pipeline.preflight import statcache as statcache_module
from pipeline.preflight.files import GLANCE_BUFFER, TRAILER, glance_facts, image_facts
from pipeline.preflight.statcache import RACY_WINDOW_NS
from pipeline.scheduler import JobRun, PhotoBytes
from pipeline.scheduler.uploads import Uploads
from tests.helpers.e2e import QUICK_POLLS, records, run_cli
from tests.helpers.emulator import emulator_thread
from tests.helpers.file_opens import reading

# What a glance reads of a photo whose header fits a block: the block, and its last bytes.
GLANCE_BYTES = GLANCE_BUFFER + TRAILER
MAX_PIXELS = 80_000_000


def noise_photo(path: Path, seed: int, fmt: str = "JPEG", orientation: int = 1) -> Path:
    """A photo whose bytes do not compress away (so a glance is a small share of them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (320 + seed % 3 * 16, 240)
    image = Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))
    options: dict[str, Any] = {"quality": 85} if fmt == "JPEG" else {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    image.save(path, fmt, **options)
    return path


def catalog(folder: Path, count: int, prompts: bool = False, fmt: str = "JPEG") -> Path:
    """A catalog of distinct photos, ``first``; the last photo turned a quarter by EXIF (a
    second planned variant) for JPEG; ``prompts``: each row its own prompt."""
    suffix = "jpg" if fmt == "JPEG" else fmt.lower()
    for index in range(count):
        turned = 6 if fmt == "JPEG" and index == count - 1 else 1
        noise_photo(folder / "img" / f"p{index}.{suffix}", index, fmt, turned)
    header = "id,image,prompt\n" if prompts else "id,image\n"
    rows = "".join(
        f"p{i},img/p{i}.{suffix}" + (f",on marble {i}\n" if prompts else "\n") for i in range(count)
    )
    (folder / "items.csv").write_text(header + rows)
    manifest = folder / "first.yaml"
    defaults = "  type: background\n  quality: low\n  size: auto\n"
    if not prompts:
        defaults += "  prompt: on marble\n"
    manifest.write_text(f"version: 1\nname: first\ndefaults:\n{defaults}items: items.csv\n")
    return manifest


def planned_jobs(manifest: Path, ledger: LedgerState, read_at_upload: bool) -> list[PlannedJob]:
    options = PlanOptions(read_at_upload=read_at_upload)
    plan = prepare(load_manifest(manifest), ledger, options, load_credit_table(), Preflight())
    assert plan.ok, plan.summary.problems
    return list(plan.jobs)


def sha256_of(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli_run(manifest: Path) -> list[str]:
    return ["run", str(manifest), "--no-progress", "--rpm", "6000", "--config", str(QUICK_POLLS)]


# -- the plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prompts", [False, True], ids=["shared-prompt", "own-prompts"])
def test_a_key_completed_at_upload_is_the_key_a_full_pass_gives(
    tmp_path: Path, prompts: bool
) -> None:
    manifest = catalog(tmp_path, 4, prompts=prompts)
    full = planned_jobs(manifest, LedgerState(), read_at_upload=False)
    with reading(tmp_path / "img") as read:
        glanced = planned_jobs(manifest, LedgerState(), read_at_upload=True)
    assert [job.job.id for job in glanced] == [job.job.id for job in full]
    for unread, whole in zip(glanced, full, strict=True):
        assert unread.unread is not None and unread.image_digest is None and unread.key == ""
        digest = sha256_of(unread.job.image.value)
        assert unread.unread.key(digest) == whole.key
        assert unread.job == whole.job and unread.image_recipe == whole.image_recipe
        photo = unread.job.image.value
        assert read.of(photo) <= GLANCE_BYTES < Path(photo).stat().st_size
    assert {job.image_recipe.token for job in full if job.image_recipe} == {"", "exif6"}


def test_a_job_an_earlier_run_knows_has_its_photo_read_by_the_plan(tmp_path: Path) -> None:
    """Its key decides whether it runs at all (done, failed, paid), so it needs the digest."""
    manifest = catalog(tmp_path, 3)
    ledger = LedgerState()
    ledger.job_for("p1", Status.FAILED, "an older key")
    jobs = {job.job.id: job for job in planned_jobs(manifest, ledger, read_at_upload=True)}
    assert jobs["p1"].unread is None
    assert jobs["p1"].image_digest == sha256_of(jobs["p1"].job.image.value)
    assert jobs["p0"].unread is not None and jobs["p2"].unread is not None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_glance_finds_what_the_full_check_finds_in_a_whole_file(tmp_path: Path, fmt: str) -> None:
    photo = noise_photo(tmp_path / f"p.{fmt.lower()}", 1, fmt)
    size = photo.stat().st_size
    with reading(tmp_path) as read:
        glanced = glance_facts(str(photo), size, MAX_PIXELS)
    assert glanced == image_facts(str(photo), photo.read_bytes(), size, MAX_PIXELS)
    assert read.of(photo) <= GLANCE_BYTES < size  # the header and the end only


def webp_photo(path: Path, mode: str, lossless: bool, orientation: int, xmp: bool) -> Path:
    """A WebP of each layout Pillow writes: simple lossy (``VP8 ``) or lossless (``VP8L``), or
    extended (``VP8X``) with alpha (``ALPH`` when lossy), EXIF or XMP at the end."""
    size = (320, 240)
    noise = random.Random(7).randbytes(size[0] * size[1] * len(mode))
    options: dict[str, Any] = {"lossless": lossless}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    if xmp:  # Pillow takes an orientation from XMP too, when EXIF has none
        options["xmp"] = b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    Image.frombytes(mode, size, noise).save(path, "WEBP", **options)
    return path


@pytest.mark.parametrize("lossless", [False, True], ids=["lossy", "lossless"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
@pytest.mark.parametrize(
    ("orientation", "xmp"), [(1, False), (6, False), (1, True)], ids=["plain", "exif6", "xmp8"]
)
def test_a_webp_glance_reads_chunk_headers_and_finds_what_pillow_finds(
    tmp_path: Path, mode: str, lossless: bool, orientation: int, xmp: bool
) -> None:
    photo = webp_photo(tmp_path / "p.webp", mode, lossless, orientation, xmp)
    size = photo.stat().st_size
    with reading(tmp_path) as read:
        glanced = glance_facts(str(photo), size, MAX_PIXELS)
    assert glanced == image_facts(str(photo), photo.read_bytes(), size, MAX_PIXELS)
    # A block where chunk headers lie: the start, past the alpha chunk, the end's metadata.
    assert read.of(photo) <= 3 * GLANCE_BUFFER < size


def test_a_webp_glance_vouches_for_no_animation_and_no_inconsistent_chunk(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 48), (index * 60, 0, 0)) for index in range(3)]
    animated = tmp_path / "animated.webp"
    frames[0].save(animated, "WEBP", save_all=True, append_images=frames[1:])
    assert glance_facts(str(animated), animated.stat().st_size, MAX_PIXELS) is None
    photo = webp_photo(tmp_path / "p.webp", "RGBA", False, 6, False)
    data = photo.read_bytes()
    assert data[12:16] == b"VP8X"
    wrong_canvas = bytearray(data)
    wrong_canvas[24] ^= 0x01  # the canvas width no longer the bitstream's
    longer_chunk = bytearray(data)
    longer_chunk[16] += 2  # the first chunk's length runs past the next chunk's start
    for broken in (wrong_canvas, longer_chunk):
        photo.write_bytes(bytes(broken))
        assert glance_facts(str(photo), len(broken), MAX_PIXELS) is None


@pytest.mark.parametrize(
    ("mode", "lossless", "orientation"),
    [("RGB", False, 1), ("RGBA", False, 6), ("RGB", True, 1), ("RGBA", True, 6)],
)
def test_a_webp_glance_never_gives_other_facts_than_the_full_check(
    tmp_path: Path, mode: str, lossless: bool, orientation: int
) -> None:
    """A byte changed anywhere, half the time in the headers: the glance may vouch for a file
    whose bitstream no longer decodes (its upload's full check finds that), but whatever it
    says of a file that decodes is what the full check says."""
    data = webp_photo(tmp_path / "p.webp", mode, lossless, orientation, False).read_bytes()
    chance = random.Random(len(data))
    vouched = 0
    for trial in range(100):
        changed = bytearray(data)
        at = chance.randrange(64 if trial % 2 else len(changed))
        changed[at] = chance.randrange(256)
        photo = tmp_path / "changed.webp"
        photo.write_bytes(bytes(changed))
        glanced = glance_facts(str(photo), len(changed), MAX_PIXELS)
        full = image_facts(str(photo), bytes(changed), len(changed), MAX_PIXELS)
        if glanced is not None and not isinstance(full, str):
            assert glanced == full, (trial, at)
            vouched += 1
    assert vouched > 0  # the comparison was made


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_glance_vouches_for_no_cut_off_file(tmp_path: Path, fmt: str) -> None:
    photo = noise_photo(tmp_path / f"p.{fmt.lower()}", 2, fmt)
    data = photo.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 200):
        photo.write_bytes(data[:cut])
        assert glance_facts(str(photo), cut, MAX_PIXELS) is None, cut
    photo.write_bytes(data + b"trailing bytes")  # the full check decides what these mean
    assert glance_facts(str(photo), len(data) + 14, MAX_PIXELS) is None


# -- the run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a_first_run_reads_each_new_photo_once_and_a_second_run_reads_and_buys_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    manifest = catalog(tmp_path, 5, fmt=fmt)
    photos = sorted((tmp_path / "img").iterdir())
    # Photos written just now are "racily clean" (docs/ledger.md#stat-cache): read as if later.
    later = lambda: time.time_ns() + 2 * RACY_WINDOW_NS  # noqa: E731
    monkeypatch.setattr(statcache_module, "CLOCK", later)
    with emulator_thread() as emulator:
        with reading(tmp_path / "img") as read:
            assert run_cli(cli_run(manifest), emulator.env, monkeypatch) == 0
        charges = len(emulator.server.state.charges)
        assert charges == len(photos)
        for photo in photos:  # the upload's read; the glance's few kB; the report reads none
            size = photo.stat().st_size
            assert size <= read.of(photo) <= size + GLANCE_BYTES, (photo.name, read.of(photo))
        out = tmp_path / "out" / "first"
        assert len(list((out / ".thumbs").iterdir())) >= len(photos)  # made from those bytes
        # The keys written are the plan's: the second run skips every job, reading nothing.
        with reading(tmp_path / "img") as again:
            assert run_cli(cli_run(manifest), emulator.env, monkeypatch) == 0
        assert len(emulator.server.state.charges) == charges
        assert sum(again.values()) == 0
        keys = {
            line["job_id"]: line["key"] for line in records(out) if line["status"] == "succeeded"
        }
        assert keys == {job.job.id: job.key for job in planned_jobs(manifest, LedgerState(), False)}
        # A known job's replaced photo: the plan reads it (its key decides), the upload again;
        # its new thumbnail comes from the plan's read, before the run starts.
        noise_photo(photos[1], 99, fmt)
        thumbs = len(list((out / ".thumbs").iterdir()))
        with reading(tmp_path / "img") as replaced:
            assert run_cli(cli_run(manifest), emulator.env, monkeypatch) == 0
        assert len(emulator.server.state.charges) == charges + 1
        assert dict(replaced) == {str(photos[1]): 2 * photos[1].stat().st_size}
        assert len(list((out / ".thumbs").iterdir())) == thumbs  # the old one pruned


def damaged_inside(photo: Path) -> None:
    """A byte of the pixel data changed: the header and the end are whole, a CRC is not."""
    data = bytearray(photo.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    photo.write_bytes(bytes(data))


def test_a_photo_damaged_inside_fails_its_job_alone_and_nothing_is_sent_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = catalog(tmp_path, 3, fmt="PNG")
    broken = tmp_path / "img" / "p1.png"
    damaged_inside(broken)
    assert glance_facts(str(broken), broken.stat().st_size, MAX_PIXELS) is not None
    with emulator_thread() as emulator:
        assert run_cli(cli_run(manifest), emulator.env, monkeypatch) == 1
        state = emulator.server.state
        assert (len(state.charges), state.uploads) == (2, 2)  # the others only
        out = tmp_path / "out" / "first"
        failed = [line for line in records(out) if line["status"] == "failed"]
        assert [line["job_id"] for line in failed] == ["p1"]
        error = failed[0]["error"]
        assert error["kind"] == "input" and str(broken) in error["message"]
        assert "damaged" in error["message"]
        # Now the ledger knows the job: the next run's preflight reads the photo and says so
        # before anything is sent.
        assert run_cli(cli_run(manifest), emulator.env, monkeypatch) == 2
        assert (len(state.charges), state.uploads) == (2, 2)


# -- the upload's read --------------------------------------------------------------------------


class FakePhotos:
    def __init__(self, answer: PhotoBytes | str) -> None:
        self.answer = answer

    async def read(self, path: str) -> PhotoBytes | str:
        return self.answer


def unread_run(tmp_path: Path) -> tuple[JobRun, str]:
    manifest = catalog(tmp_path, 1, fmt="PNG")
    planned = planned_jobs(manifest, LedgerState(), read_at_upload=True)[0]
    return JobRun(planned), sha256_of(planned.job.image.value)


def uploads_reading(answer: PhotoBytes | str) -> Uploads:
    nothing = cast(Any, None)  # reading a photo asks none of the other parts
    return Uploads(nothing, nothing, nothing, nothing, nothing, photos=FakePhotos(answer))


async def test_the_read_completes_the_key_and_keeps_the_bytes_for_the_upload(
    tmp_path: Path,
) -> None:
    run, digest = unread_run(tmp_path)
    unread = run.planned.unread
    assert isinstance(unread, UnreadImage)
    await uploads_reading(PhotoBytes(b"the bytes", digest, unread.expected)).read_photo(run)
    assert run.planned.unread is None and run.planned.image_digest == digest
    assert run.planned.key == unread.key(digest) and run.photo == b"the bytes"


@pytest.mark.parametrize(
    "answer",
    ["is damaged or truncated: broken PNG file", "changed"],
    ids=["does-not-decode", "changed-since-the-plan"],
)
async def test_a_photo_that_is_not_what_the_plan_was_made_from_is_not_sent(
    tmp_path: Path, answer: str
) -> None:
    run, digest = unread_run(tmp_path)
    unread = run.planned.unread
    assert unread is not None
    if answer == "changed":  # another size than the header preflight looked at
        fmt, width, height, orientation, sixteen = unread.expected
        read: PhotoBytes | str = PhotoBytes(
            b"x", digest, (fmt, width + 1, height, orientation, sixteen)
        )
    else:
        read = answer
    with pytest.raises(InputUnreadable) as raised:
        await uploads_reading(read).read_photo(run)
    assert run.planned.job.image.value in str(raised.value)
    assert run.planned.key == "" and run.photo is None
