"""inputs.upload with preflight: EXIF upright, max_input_side, content type from bytes, 16-bit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from pipeline.images.upload import Recipe, prepare_upload, recipe_for_file
from pipeline.models import Feature, InputRef, Job
from pipeline.preflight import Preflight

ORIENTATION = 0x0112


def _rotated_photo(path: Path, stored: tuple[int, int] = (1200, 800)) -> Path:
    image = Image.new("RGB", stored, (200, 30, 30))
    image.paste((20, 20, 200), (0, 0, stored[0] // 2, stored[1]))  # left half blue, as stored
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    image.save(path, format="JPEG", exif=exif.tobytes())
    return path


def _mask(path: Path, size: tuple[int, int]) -> Path:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0], size[1] // 2))
    mask.save(path)
    return path


def _job(image: Path, mask: Path | None = None, size: str = "auto") -> Job:
    return Job(
        id="j",
        feature=Feature.INPAINT if mask else Feature.BACKGROUND,
        image=InputRef("file", str(image)),
        mask=InputRef("file", str(mask)) if mask else None,
        prompt="p",
        size=size,
        location="m.yaml job 1",
    )


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_an_exif_rotated_photo_is_portrait_everywhere(tmp_path: Path) -> None:
    photo = _rotated_photo(tmp_path / "phone.jpg")
    mask = _mask(tmp_path / "mask.png", (800, 1200))  # painted on the photo as displayed
    preflight = Preflight()
    job, problems, _ = preflight.check(_job(photo, mask))
    assert problems == []
    assert job is not None and job.size == "1024x1536"  # portrait, not landscape
    recipe = preflight.upload_recipe(job, "image")
    assert recipe == Recipe(orientation=6)
    upload = prepare_upload(photo, recipe)
    assert _decoded(upload.data).size == (800, 1200)
    assert upload.content_type == "image/jpeg"
    assert preflight.upload_recipe(job, "mask").identity  # the mask is already upright


def test_a_mask_of_the_stored_orientation_is_refused(tmp_path: Path) -> None:
    photo = _rotated_photo(tmp_path / "phone.jpg")
    mask = _mask(tmp_path / "mask.png", (1200, 800))
    _, problems, _ = Preflight().check(_job(photo, mask, "1024x1024"))
    assert [p.field for p in problems] == ["mask"]
    assert "image is 800x1200" in problems[0].message


def test_a_huge_image_is_scaled_to_max_input_side_and_its_mask_with_it(tmp_path: Path) -> None:
    # Four times the allowed side, as 8000x6000 is for the default 2048 (decoding a real 8000x6000
    # costs seconds; the default on an 8000 px photo is the next test's).
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 1500), (10, 120, 10)).save(big, compress_level=1)
    mask = _mask(tmp_path / "big-mask.png", (2000, 1500))
    preflight = Preflight(max_input_side=500)
    job, problems, _ = preflight.check(_job(big, mask))
    assert problems == [] and job is not None
    image_recipe = preflight.upload_recipe(job, "image")
    mask_recipe = preflight.upload_recipe(job, "mask")
    assert image_recipe.size == mask_recipe.size == (500, 375)
    assert _decoded(prepare_upload(big, image_recipe).data).size == (500, 375)
    assert _decoded(prepare_upload(mask, mask_recipe).data).size == (500, 375)
    assert image_recipe.token == "fit500x375"


@pytest.mark.slow  # decodes and scales a 64-megapixel image: seconds
def test_a_square_8000_image_is_accepted_and_scaled(tmp_path: Path) -> None:
    big = tmp_path / "square.jpg"
    Image.new("RGB", (8000, 8000), (90, 90, 90)).save(big, quality=30)
    recipe = recipe_for_file(big)
    assert recipe.size == (2048, 2048)
    assert _decoded(prepare_upload(big, recipe).data).size == (2048, 2048)


def test_a_png_named_jpg_is_sent_as_png(tmp_path: Path) -> None:
    wrong = tmp_path / "product.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(wrong, format="PNG")
    upload = prepare_upload(wrong, recipe_for_file(wrong))
    assert upload.content_type == "image/png"
    assert upload.filename == "product.png"
    assert upload.data == wrong.read_bytes()  # nothing to do: the bytes go as they are


def test_a_16_bit_gray_image_becomes_8_bit_with_its_range_kept(tmp_path: Path) -> None:
    deep = tmp_path / "deep.png"
    Image.new("I;16", (32, 32), 40_000).save(deep)
    recipe = recipe_for_file(deep)
    assert recipe.to_8bit
    result = _decoded(prepare_upload(deep, recipe).data)
    assert result.mode == "L"
    assert result.getpixel((0, 0)) == 40_000 // 256  # scaled, not clipped to 255


def test_small_upright_8_bit_images_need_no_recipe(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (300, 200)).save(plain)
    assert recipe_for_file(plain).identity
    assert recipe_for_file(plain).token == ""
