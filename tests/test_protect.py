"""protect: outside the mask the delivered image is the (fitted) source; inside, the result."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps

from pipeline.images.masks import MaskRecipe, ShapeSource, render_mask
from pipeline.images.protect import encode, fit_to, protect, protect_file
from pipeline.images.provenance import read_provenance
from tests.helpers.images import band_extrema, pixel

SOURCE_SIZE = (1200, 900)  # 4:3 into a square result: the cover-crop cuts the sides
RESULT_SIZE = (1024, 1024)
EDIT_RIGHT = 0.7  # the mask edits x < 0.7 * width of the source


def source_image() -> Image.Image:
    image = Image.linear_gradient("L").resize(SOURCE_SIZE).convert("RGB")
    ImageDraw.Draw(image).ellipse((700, 200, 1100, 700), fill=(30, 140, 200))
    return image


def drifting_result(source: Image.Image, mask: Image.Image) -> Image.Image:
    """What the model does: repaints the mask, and drifts a little everywhere else."""
    fitted = fit_to(source, RESULT_SIZE, "RGB")
    drifted = ImageChops.add(fitted, Image.new("RGB", RESULT_SIZE, (6, 4, 9)))
    painted = Image.new("RGB", RESULT_SIZE, (220, 30, 30))
    return Image.composite(painted, drifted, fit_to(mask, RESULT_SIZE, "L"))


def edge_in_result() -> float:
    """Where the source's x = 0.7 * width lands in the result (scale, then center crop)."""
    scale = max(RESULT_SIZE[0] / SOURCE_SIZE[0], RESULT_SIZE[1] / SOURCE_SIZE[1])
    cut = (SOURCE_SIZE[0] * scale - RESULT_SIZE[0]) / 2
    return EDIT_RIGHT * SOURCE_SIZE[0] * scale - cut


def the_mask(feather: int) -> Image.Image:
    recipe = MaskRecipe(ShapeSource("box", (0, 0, EDIT_RIGHT, 1), True), feather=feather)
    return render_mask(recipe, SOURCE_SIZE).mask


def max_difference(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> int:
    extrema = band_extrema(ImageChops.difference(a.crop(box), b.crop(box)))
    return max(high for _low, high in extrema)


@pytest.mark.parametrize("feather", [0, 12])
def test_outside_the_band_is_the_source_inside_the_result(feather: int) -> None:
    source, mask = source_image(), the_mask(feather)
    result = drifting_result(source, mask)
    protected = protect(result, source, mask)
    assert (protected.mode, protected.size) == ("RGB", RESULT_SIZE)
    fitted_source = ImageOps.fit(source, RESULT_SIZE, method=Image.Resampling.BILINEAR)
    scale = RESULT_SIZE[1] / SOURCE_SIZE[1]
    band = int((feather / 2 + 2) * scale) + 2  # the feather's reach, scaled, plus resampling
    edge = round(edge_in_result())
    kept = (edge + band, 0, RESULT_SIZE[0], RESULT_SIZE[1])
    edited = (0, 0, edge - band, RESULT_SIZE[1])
    assert max_difference(result, fitted_source, kept) >= 4  # there was drift to correct
    assert max_difference(protected, fitted_source, kept) <= 1
    assert max_difference(protected, result, edited) == 0
    if feather:
        row = [pixel(protected, (x, 512))[1] for x in range(edge - band, edge + band)]
        assert len(set(row)) > 3  # blended across the band, not a hard step


def test_rgba_result_composites_alpha_too() -> None:
    source = Image.new("RGBA", (200, 100), (0, 200, 0, 128))
    mask = render_mask(MaskRecipe(ShapeSource("box", (0, 0, 0.5, 1), True)), source.size).mask
    result = Image.new("RGBA", (300, 150), (250, 0, 0, 255))
    protected = protect(result, source, mask)
    assert protected.mode == "RGBA"
    assert protected.getpixel((10, 75)) == (250, 0, 0, 255)
    kept = pixel(protected, (290, 75))  # bilinear scaling may round a level off
    assert all(abs(a - b) <= 1 for a, b in zip(kept, (0, 200, 0, 128), strict=True))


def test_rgb_source_into_rgba_result_is_opaque_where_kept() -> None:
    source = Image.new("RGB", (100, 100), (1, 2, 3))
    mask = Image.new("L", (100, 100), 0)
    protected = protect(Image.new("RGBA", (64, 64), (9, 9, 9, 0)), source, mask)
    assert protected.getpixel((30, 30)) == (1, 2, 3, 255)


@pytest.mark.parametrize(("fmt", "pil"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_protect_file_encodes_once_with_provenance(tmp_path: Path, fmt: str, pil: str) -> None:
    source, mask = source_image(), the_mask(0)
    raw_path = tmp_path / "sku" / ".raw" / f"0.{fmt}"
    raw_path.parent.mkdir(parents=True)
    raw_bytes = encode(drifting_result(source, mask), fmt, 90)
    raw_path.write_bytes(raw_bytes)
    source_path = tmp_path / "source.png"
    source.save(source_path)
    out_path = tmp_path / "sku" / f"0.{fmt}"
    written = protect_file(
        raw_path, source_path, mask, out_path, fmt, 90, creator_tool="onemin-pipeline test"
    )
    assert out_path.read_bytes() == written and raw_path.read_bytes() == raw_bytes
    assert not list(out_path.parent.glob(".*.tmp"))
    provenance = read_provenance(written)
    assert provenance is not None and provenance["creator_tool"] == "onemin-pipeline test"
    delivered = Image.open(io.BytesIO(written))
    assert (delivered.format, delivered.size) == (pil, RESULT_SIZE)
    if fmt == "png":  # lossless: exactly the composite of the decoded raw image
        with Image.open(raw_path) as raw:
            expected = protect(raw.convert("RGB"), source, mask)
        assert delivered.convert("RGB").tobytes() == expected.tobytes()


def test_png_compression_follows_output_compression() -> None:
    image = Image.effect_noise((128, 128), 30).convert("RGB")
    fast, small = encode(image, "png", 100), encode(image, "png", 0)
    assert len(small) <= len(fast)
    assert Image.open(io.BytesIO(fast)).tobytes() == image.tobytes()
