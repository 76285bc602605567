"""pipeline.preflight: local checks on each job (fields, files, masks, size auto, folder policy)."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline import preflight as preflight_module
from pipeline.errors import Problem
from pipeline.models import Feature, InputRef, Job
from pipeline.plan.keys import Planner
from pipeline.preflight import (
    Notice,
    Preflight,
    closest_size,
    id_fingerprint,
    mask_upload_bytes,
)
from tests.helpers.file_opens import recording
from tests.helpers.images import (
    demo_inputs,
    make_alpha_mask,
    make_animated,
    make_image,
    make_mask,
    truncate,
)


def inpaint_job(folder: Path, **changes: Any) -> Job:
    image, mask = demo_inputs(folder)
    job = Job(
        id="job-1",
        feature=Feature.INPAINT,
        image=InputRef("file", str(image)),
        mask=InputRef("file", str(mask)),
        prompt="a glazed ceramic pattern",
        location="m.yaml job 1",
    )
    return replace(job, **changes)


def background_job(folder: Path, **changes: Any) -> Job:
    image, _mask = demo_inputs(folder)
    job = Job(
        id="bg-1",
        feature=Feature.BACKGROUND,
        image=InputRef("file", str(image)),
        prompt="marble table",
        location="m.yaml job 2",
    )
    return replace(job, **changes)


def file_ref(path: Path) -> InputRef:
    return InputRef("file", str(path))


def check(job: Job, base_dir: Path | None = None) -> tuple[Job | None, list[Problem], list[Notice]]:
    return Preflight().check(job, base_dir)


def only_problem(job: Job, base_dir: Path | None = None) -> Problem:
    checked, problems, _notices = check(job, base_dir)
    assert checked is None
    assert len(problems) == 1, problems
    return problems[0]


def test_a_good_job_passes_unchanged(tmp_path: Path) -> None:
    job = inpaint_job(tmp_path)
    assert check(job, tmp_path) == (job, [], [])


# --- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "reason"),
    [
        ("", "is empty"),
        ("a/b", "contains /"),
        ("a\\b", "contains \\"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("a..b", "contains '..'"),
        ("x" * 201, "at most 200"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("sku:1", "contains :"),
        ("trailing.", "ends with '.'"),
        (" padded", "space"),
        ("CON", "reserved device name"),
        ("lpt1.txt", "reserved device name"),
    ],
)
def test_unsafe_ids_are_refused(tmp_path: Path, job_id: str, reason: str) -> None:
    problem = only_problem(inpaint_job(tmp_path, id=job_id))
    assert (problem.job, problem.field) == (job_id, "id")
    assert reason in problem.message


def test_duplicate_ids_across_the_stream_ignore_case(tmp_path: Path) -> None:
    preflight = Preflight()
    job = inpaint_job(tmp_path)
    assert preflight.check(job)[1] == []
    assert preflight.duplicate_ids() == set()
    assert preflight.check(replace(job, id="JOB-1", location="rows.csv row 9"))[1] == []
    assert preflight.duplicate_ids() == {id_fingerprint("job-1")}  # found once the pass is over


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"prompt": "  "}, "prompt", "is empty"),
        ({"prompt": "x" * 4001}, "prompt", "4001 characters long; the API takes at most 4000"),
        ({"n": 0}, "n", "must be 1 to 10"),
        ({"n": 11}, "n", "must be 1 to 10"),
        ({"size": "512x512"}, "size", "'512x512' is not one of 1024x1024"),
        ({"quality": "ultra"}, "quality", "not one of low, medium, high"),
        ({"output_format": "gif"}, "output_format", "not one of png, jpeg, webp"),
        ({"output_compression": -1}, "output_compression", "must be 0 to 100"),
        ({"output_compression": 101}, "output_compression", "must be 0 to 100"),
        ({"mask": None}, "mask", "required for IMAGE_INPAINTER"),
    ],
)
def test_inpainter_field_problems(
    tmp_path: Path, changes: dict[str, Any], field: str, message: str
) -> None:
    problem = only_problem(inpaint_job(tmp_path, **changes))
    assert (problem.job, problem.field, problem.location) == ("job-1", field, "m.yaml job 1")
    assert message in problem.message


def test_prompt_of_4000_characters_is_fine(tmp_path: Path) -> None:
    assert check(inpaint_job(tmp_path, prompt="x" * 4000))[1] == []


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"background": "white"}, "background", "not one of auto, opaque, transparent"),
    ],
)
def test_background_field_problems(
    tmp_path: Path, changes: dict[str, Any], field: str, message: str
) -> None:
    problem = only_problem(background_job(tmp_path, **changes))
    assert problem.field == field
    assert message in problem.message


def test_all_problems_of_a_job_at_once(tmp_path: Path) -> None:
    job = inpaint_job(tmp_path, id="a/b", prompt="", n=20, image=file_ref(tmp_path / "none.png"))
    _, problems, _ = check(job)
    assert {p.field for p in problems} == {"id", "prompt", "n", "image"}


# --- files ----------------------------------------------------------------------------------


def _zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text_file(path: Path) -> Path:
    path.write_text("not an image at all\n")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "input.img does not exist (looked for"),
        (_folder, "is a folder"),
        (_zero_byte, "is empty (0 bytes)"),
        (_text_file, "not an image Pillow can read"),
        (lambda p: truncate(make_image(p, size=(256, 256), fmt="PNG")), "damaged or truncated"),
        (lambda p: truncate(make_image(p, size=(256, 256), fmt="JPEG")), "damaged or truncated"),
        (lambda p: truncate(make_image(p, size=(256, 256), fmt="WEBP")), "damaged or truncated"),
        (lambda p: make_image(p, fmt="GIF"), "input.img is GIF; the API takes PNG, JPEG or WebP"),
        (lambda p: make_image(p, fmt="BMP"), "is BMP; the API takes PNG, JPEG or WebP"),
        (lambda p: make_image(p, fmt="TIFF"), "is TIFF; the API takes PNG, JPEG or WebP"),
        (lambda p: make_animated(p, fmt="PNG"), "is animated"),
        (lambda p: make_animated(p, fmt="WEBP"), "is animated"),
    ],
)
def test_bad_image_files(tmp_path: Path, make: Any, message: str) -> None:
    path = make(tmp_path / "input.img")
    problem = only_problem(background_job(tmp_path, image=file_ref(path)))
    assert (problem.job, problem.field) == ("bg-1", "image")
    assert message in problem.message


def test_fifo_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    problem = only_problem(background_job(tmp_path, image=file_ref(fifo)))
    assert "not a regular file" in problem.message


def test_pixel_limit_refuses_decompression_bombs(tmp_path: Path) -> None:
    job = background_job(tmp_path)
    _, problems, _ = Preflight(max_pixels=1000).check(job)
    assert "more than 0.001 megapixels" in problems[0].message


def test_pillow_bomb_error_becomes_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own limit: error above 200
    problem = only_problem(background_job(tmp_path))
    assert "decompression bomb" in problem.message


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_images_pass(tmp_path: Path, fmt: str) -> None:
    image = make_image(tmp_path / f"photo.{fmt.lower()}", fmt=fmt)
    assert check(background_job(tmp_path, image=file_ref(image)))[1] == []


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Image.Image:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preflight_module.Image, "open", refuse)  # chmod is moot for root
    assert "permission denied" in only_problem(background_job(tmp_path)).message


# --- the folder policy ----------------------------------------------------------------------


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    image, _ = demo_inputs(tmp_path)
    link = tmp_path / "link.png"
    link.symlink_to(image)
    assert check(background_job(tmp_path, image=file_ref(link)), tmp_path)[1] == []


def test_symlink_leading_outside_the_folder_is_refused(tmp_path: Path) -> None:
    outside = make_image(tmp_path / "elsewhere" / "secret.png")
    base = tmp_path / "jobs"
    demo_inputs(base)
    link = base / "images" / "innocent.png"
    link.symlink_to(outside)
    problem = only_problem(background_job(base, image=file_ref(link)), base)
    assert "leads outside the manifest's folder through a symbolic link" in problem.message
    # Without a manifest folder (a Job made in code) there is no policy to apply.
    assert check(background_job(base, image=file_ref(link)))[1] == []


def test_paths_written_outside_the_folder_are_taken_as_written(tmp_path: Path) -> None:
    outside = make_image(tmp_path / "shared" / "photo.png")
    base = tmp_path / "jobs"
    demo_inputs(base)
    assert check(background_job(base, image=file_ref(outside)), base)[1] == []


# --- remote inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (InputRef("url", "http://"), "has no host"),
        (InputRef("url", "https:///a.png"), "has no host"),
        (InputRef("url", "https://example.com/a b.png"), "contains spaces"),
        (InputRef("url", "ftp://example.com/a.png"), "not an http(s) or object-store URL"),
        (InputRef("asset", "development/images/a.png"), None),
        (InputRef("asset", " "), "needs a path"),
    ],
)
def test_remote_inputs_are_checked_offline(
    tmp_path: Path, ref: InputRef, message: str | None
) -> None:
    _, problems, _ = check(background_job(tmp_path, image=ref))
    if message is None:
        assert problems == []
    else:
        assert [message in p.message for p in problems] == [True]


def test_size_auto_with_an_asset_falls_back_with_a_notice(tmp_path: Path) -> None:
    # A URL is fetched and measured (tests/test_inputs_remote.py); an asset cannot be seen.
    job = background_job(tmp_path, image=InputRef("asset", "development/a.png"), size="auto")
    checked, problems, notices = check(job)
    assert checked is not None and checked.size == "1024x1024"
    assert problems == [] and "auto needs a local image" in notices[0].message


# --- size auto ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((64, 64), "1024x1024"),
        ((96, 64), "1536x1024"),
        ((64, 96), "1024x1536"),
        ((100, 64), "1536x1024"),
        ((70, 64), "1024x1024"),
        ((3000, 100), "1536x1024"),
    ],
)
def test_size_auto_picks_the_closest_aspect_ratio(
    tmp_path: Path, size: tuple[int, int], expected: str
) -> None:
    assert closest_size(*size) == expected
    image = make_image(tmp_path / "a.png", size=size)
    checked, problems, _ = check(background_job(tmp_path, image=file_ref(image), size="auto"))
    assert problems == [] and checked is not None and checked.size == expected


# --- masks ----------------------------------------------------------------------------------


def test_mask_must_match_the_image_size(tmp_path: Path) -> None:
    mask = make_mask(tmp_path / "small.png", size=(32, 64))
    problem = only_problem(inpaint_job(tmp_path, mask=file_ref(mask)))
    assert problem.field == "mask"
    assert "is 32x64 but the image is 64x64" in problem.message


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: make_mask(p, fmt="GIF"), "is GIF"),
        (lambda p: truncate(make_mask(p, size=(64, 64), fmt="JPEG"), 0.3), "damaged or truncated"),
        (_text_file, "not an image"),
    ],
)
def test_bad_mask_files(tmp_path: Path, make: Any, message: str) -> None:
    mask = make(tmp_path / "mask.img")
    problem = only_problem(inpaint_job(tmp_path, mask=file_ref(mask)))
    assert problem.field == "mask" and message in problem.message


@pytest.mark.parametrize(
    ("mode", "fmt", "convert"),
    [
        ("L", "PNG", False),
        ("RGB", "PNG", False),
        ("1", "PNG", False),
        ("L", "JPEG", False),
        ("RGB", "WEBP", False),
        ("RGBA", "PNG", True),  # opaque alpha: converted by luminance
        ("P", "PNG", True),
        ("LA", "PNG", True),
    ],
)
def test_mask_modes(tmp_path: Path, mode: str, fmt: str, convert: bool) -> None:
    mask = make_mask(tmp_path / f"mask.{fmt.lower()}", mode=mode, fmt=fmt)
    preflight = Preflight()
    job = inpaint_job(tmp_path, mask=file_ref(mask))
    checked, problems, notices = preflight.check(job)
    assert problems == [] and checked is not None
    assert preflight.mask_convert(checked) is convert
    conversion_notices = [n for n in notices if "converted to grayscale" in n.message]
    assert len(conversion_notices) == int(convert)


def test_transparent_mask_follows_openai_convention(tmp_path: Path) -> None:
    mask = make_alpha_mask(tmp_path / "alpha.png", hole=(0, 0, 31, 63))  # left half transparent
    preflight = Preflight()
    checked, problems, notices = preflight.check(inpaint_job(tmp_path, mask=file_ref(mask)))
    assert problems == [] and checked is not None and preflight.mask_convert(checked)
    (notice,) = notices
    assert notice.field == "mask"
    assert "transparent = edit" in notice.message and "50% of the image" in notice.message
    converted = Image.open(io.BytesIO(mask_upload_bytes(mask)))
    assert converted.format == "PNG" and converted.mode == "L"
    assert (converted.getpixel((0, 0)), converted.getpixel((63, 0))) == (255, 0)


def test_palette_mask_with_transparency_is_converted_by_alpha(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    make_alpha_mask(path, hole=(0, 0, 63, 15))
    Image.open(path).convert("P").save(path, transparency=0)  # index 0 is the transparent one
    preflight = Preflight()
    checked, _, notices = preflight.check(inpaint_job(tmp_path, mask=file_ref(path)))
    assert checked is not None and preflight.mask_convert(checked)
    assert any("transparency" in n.message for n in notices)


@pytest.mark.parametrize(
    ("fill", "edit", "message"),
    [
        (255, 255, "all white: the whole image will be regenerated"),
        (128, 128, "mostly mid-gray (100%)"),
        (0, 255, None),
    ],
)
def test_mask_content_warnings(tmp_path: Path, fill: int, edit: int, message: str | None) -> None:
    mask = make_mask(tmp_path / "m.png", fill=fill, edit=edit)
    checked, problems, notices = check(inpaint_job(tmp_path, mask=file_ref(mask)))
    assert problems == [] and checked is not None  # warnings, not failures
    if message is None:
        assert notices == []
    else:
        assert [message in n.message for n in notices] == [True]


def test_an_all_black_mask_is_a_problem(tmp_path: Path) -> None:
    mask = make_mask(tmp_path / "m.png", fill=0, edit=0)
    checked, problems, notices = check(inpaint_job(tmp_path, mask=file_ref(mask)))
    # docs/manifest.md#mask-modifiers: it would buy an unchanged image.
    assert checked is None and notices == []
    assert [p.field for p in problems] == ["mask"] and "edits nothing" in problems[0].message


def test_file_notices_are_given_once_per_file(tmp_path: Path) -> None:
    mask = make_mask(tmp_path / "white.png", fill=255, edit=255)
    preflight = Preflight()
    first = preflight.check(inpaint_job(tmp_path, mask=file_ref(mask)))[2]
    second = preflight.check(inpaint_job(tmp_path, id="job-2", mask=file_ref(mask)))[2]
    assert len(first) == 1 and second == []


# --- caching --------------------------------------------------------------------------------


def test_each_distinct_file_is_opened_once(tmp_path: Path) -> None:
    preflight = Preflight()
    planner = Planner(digest_of=preflight.digest)
    job = inpaint_job(tmp_path)
    same_file_other_spelling = InputRef(
        "file", str(tmp_path / "images" / ".." / "images" / "item.png")
    )
    with recording() as opened:
        for index in range(200):
            image = same_file_other_spelling if index % 2 else job.image
            checked, problems, _ = preflight.check(replace(job, id=f"job-{index}", image=image))
            assert problems == [] and checked is not None
            planner.plan(checked)  # the content key's digests come from the same read
    inputs = [Path(job.image.value), Path(job.mask.value)]  # type: ignore[union-attr]
    assert sorted(opened.any_of(inputs)) == sorted(os.path.realpath(p) for p in inputs)


def test_duplicate_ids_are_exact_even_when_the_filter_collides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.preflight import fields

    monkeypatch.setattr(fields, "ID_FILTER_BITS", 8)  # every id looks like a repeat
    preflight = Preflight()
    job = inpaint_job(tmp_path)
    for job_id in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "B", "j"]:
        preflight.check(replace(job, id=job_id))
    assert preflight.duplicate_ids() == {id_fingerprint("b"), id_fingerprint("j")}
