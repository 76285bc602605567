"""Mask recipes: parsing, rendering (exact pixels), modifiers, keys, stats, preview files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from pipeline.images import masks
from pipeline.images.masks import (
    AlphaSource,
    FileSource,
    MaskError,
    MaskRecipe,
    ShapeSource,
    mask_png_bytes,
    mask_stats,
    parse_mask_spec,
    recipe_token,
    render_mask,
    write_mask_preview,
)
from tests.helpers.images import level, pixel


def shape(text: str) -> ShapeSource:
    parsed = parse_mask_spec(text)
    assert isinstance(parsed, ShapeSource), parsed
    return parsed


def white_count(image: Image.Image) -> int:
    return image.histogram()[255]


# --- parsing -------------------------------------------------------------------------------


def test_string_forms_parse_tolerantly() -> None:
    assert parse_mask_spec("alpha") == AlphaSource()
    assert parse_mask_spec(" ALPHA ") == AlphaSource()
    assert parse_mask_spec("box:0,0.7,1,1") == ShapeSource("box", (0, 0.7, 1, 1), True)
    assert parse_mask_spec(" Ellipse : 0.3, 0.2 ,0.7,0.6 ") == ShapeSource(
        "ellipse", (0.3, 0.2, 0.7, 0.6), True
    )
    assert parse_mask_spec("box:10,20,300,400") == ShapeSource("box", (10, 20, 300, 400), False)
    assert parse_mask_spec("masks/{stem}.png") == FileSource("masks/{stem}.png")
    assert parse_mask_spec("./alpha") == FileSource("./alpha")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("box:1,2,3", "box: needs 4 numbers x0,y0,x1,y1"),
        ("box:", "box: needs 4 numbers x0,y0,x1,y1"),
        ("ellipse:a,b,c,d", "ellipse: needs 4 numbers x0,y0,x1,y1"),
        ("box:0.5,0,0.2,1", "x0 must be < x1"),
        ("box:0,0.9,1,0.1", "y0 must be < y1"),
        ("box:0,0.5,1.2,1", "fractions must be within 0..1"),
        ("box:-0.1,0,1,1", "x0 must not be negative"),
        ("box:0,0,nan,1", "x1 is not a number"),
        ("   ", "is empty"),
    ],
)
def test_bad_specs_name_what_is_wrong(text: str, expected: str) -> None:
    message = parse_mask_spec(text)
    assert isinstance(message, str)
    assert expected in message


def test_modifier_validation() -> None:
    assert masks.modifier_problem("mask_grow", 8) is None
    assert masks.modifier_problem("mask_grow", -4) is None
    assert "whole number" in str(masks.modifier_problem("mask_grow", 2.5))
    assert "whole number" in str(masks.modifier_problem("mask_feather", True))
    assert "within 0..512" in str(masks.modifier_problem("mask_feather", -1))
    assert "within" in str(masks.modifier_problem("mask_grow", 10_000))


# --- rendering -----------------------------------------------------------------------------


def test_box_in_fractions_is_exact() -> None:
    rendered = render_mask(MaskRecipe(shape("box:0,0.7,1,1")), (200, 100))
    mask = rendered.mask
    assert (mask.mode, mask.size, rendered.notes) == ("L", (200, 100), ())
    assert mask.getpixel((0, 69)) == 0
    assert mask.getpixel((0, 70)) == 255
    assert mask.getpixel((199, 99)) == 255
    assert white_count(mask) == 200 * 30
    assert mask.getbbox() == (0, 70, 200, 100)


def test_box_in_pixels_end_exclusive() -> None:
    mask = render_mask(MaskRecipe(shape("box:10,20,30,60")), (64, 64)).mask
    assert mask.getbbox() == (10, 20, 30, 60)
    assert white_count(mask) == 20 * 40


def test_pixel_box_beyond_the_image_is_an_error() -> None:
    with pytest.raises(MaskError, match="beyond the image"):
        render_mask(MaskRecipe(shape("box:0,0,100,10")), (64, 64))


def test_ellipse_area_and_pixels() -> None:
    mask = render_mask(MaskRecipe(shape("ellipse:0.25,0.25,0.75,0.75")), (400, 400)).mask
    assert mask.getpixel((200, 200)) == 255  # center
    assert mask.getpixel((101, 101)) == 0  # bounding box corner: outside the ellipse
    assert mask.getpixel((100, 200)) == 255 and mask.getpixel((98, 200)) == 0
    expected = math.pi * 100 * 100
    assert abs(white_count(mask) - expected) < 0.02 * expected
    assert set(mask.get_flattened_data()) <= {0, 255}


def test_alpha_is_transparent_equals_edit() -> None:
    image = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    ImageDraw.Draw(image).rectangle((8, 8, 15, 15), fill=(0, 0, 0, 0))
    image.putpixel((0, 0), (1, 2, 3, 100))
    mask = render_mask(MaskRecipe(AlphaSource()), image.size, source_image=image).mask
    assert mask.getpixel((8, 8)) == 255 and mask.getpixel((15, 15)) == 255
    assert mask.getpixel((16, 16)) == 0
    assert mask.getpixel((0, 0)) == 155
    assert white_count(mask) == 64


@pytest.mark.parametrize("image", [Image.new("RGB", (8, 8)), Image.new("RGBA", (8, 8), "red")])
def test_alpha_without_transparency_is_a_clear_error(image: Image.Image) -> None:
    with pytest.raises(MaskError, match="has no transparency"):
        render_mask(MaskRecipe(AlphaSource()), image.size, source_image=image)


def test_file_mask_same_aspect_is_scaled_with_a_note() -> None:
    small = Image.new("L", (50, 25), 0)
    small.paste(255, (25, 0, 50, 25))  # right half
    rendered = render_mask(MaskRecipe(FileSource("m.png")), (200, 100), mask_file_image=small)
    assert rendered.mask.size == (200, 100)
    assert rendered.notes == ("scaled from 50x25 to 200x100",)
    assert rendered.mask.getpixel((10, 50)) == 0 and rendered.mask.getpixel((190, 50)) == 255


def test_file_mask_within_one_percent_passes_other_aspect_fails() -> None:
    near = Image.new("L", (101, 50), 255)  # 2.02 vs 2.0: within 1 %
    rendered = render_mask(MaskRecipe(FileSource("m")), (200, 100), mask_file_image=near)
    assert rendered.mask.size == (200, 100)
    with pytest.raises(MaskError, match="aspect ratio"):
        render_mask(
            MaskRecipe(FileSource("m")), (200, 100), mask_file_image=Image.new("L", (50, 50))
        )


def test_file_mask_with_transparency_follows_openai_rule() -> None:
    rgba = Image.new("RGBA", (16, 16), (255, 255, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 8, 16))
    mask = render_mask(MaskRecipe(FileSource("m")), (16, 16), mask_file_image=rgba).mask
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((15, 0)) == 0


def test_invert() -> None:
    mask = render_mask(MaskRecipe(shape("box:0,0,0.5,1"), invert=True), (10, 10)).mask
    assert mask.getbbox() == (5, 0, 10, 10)


def test_grow_dilates_by_exact_pixels() -> None:
    mask = render_mask(MaskRecipe(shape("box:20,20,40,40"), grow=5), (64, 64)).mask
    assert mask.getbbox() == (15, 15, 45, 45)
    assert white_count(mask) == 30 * 30


def test_negative_grow_shrinks() -> None:
    mask = render_mask(MaskRecipe(shape("box:20,20,40,40"), grow=-3), (64, 64)).mask
    assert mask.getbbox() == (23, 23, 37, 37)


@pytest.mark.parametrize("radius", [1, 2, 3, 6, 7])
def test_grow_equals_pillow_max_filter(radius: int) -> None:
    image = Image.effect_noise((60, 50), 90).point(lambda v: 255 if v > 200 else v // 3)
    grown = masks.grow_mask(image, radius)
    reference = image.filter(ImageFilter.MaxFilter(2 * radius + 1))
    assert ImageChops.difference(grown, reference).getbbox() is None  # borders too


def test_feather_is_linear_and_stays_within_its_band() -> None:
    feather = 8
    mask = render_mask(MaskRecipe(shape("box:0,0,50,100"), feather=feather), (100, 100)).mask
    reach = masks.feather_reach(feather)
    row = [level(mask, (x, 50)) for x in range(100)]
    assert all(v == 255 for v in row[: 50 - reach])
    assert all(v == 0 for v in row[50 + reach :])
    band = row[50 - reach : 50 + reach]
    assert band == sorted(band, reverse=True) and 0 < band[reach] < 255


def test_order_is_invert_grow_feather() -> None:
    recipe = MaskRecipe(shape("box:0,0,50,100"), invert=True, grow=10, feather=4)
    mask = render_mask(recipe, (100, 100)).mask
    assert mask.getpixel((45, 50)) == 255  # the inverted edit area (x >= 50) grew by 10
    assert mask.getpixel((35, 50)) == 0


def test_rendering_is_deterministic() -> None:
    recipe = MaskRecipe(shape("ellipse:0.1,0.2,0.9,0.8"), grow=3, feather=6)
    first = mask_png_bytes(render_mask(recipe, (300, 200)).mask)
    assert first == mask_png_bytes(render_mask(recipe, (300, 200)).mask)
    decoded = Image.open(io.BytesIO(first))
    assert decoded.format == "PNG" and decoded.mode == "L"


# --- keys and stats ------------------------------------------------------------------------


def test_recipe_token_changes_with_recipe_and_digests() -> None:
    base = MaskRecipe(shape("box:0,0.7,1,1"))
    token = recipe_token(base, "sha256:aa")
    assert token == recipe_token(MaskRecipe(shape(" box: 0, 0.70, 1, 1")), "sha256:aa")
    assert token != recipe_token(base, "sha256:bb")
    assert token != recipe_token(MaskRecipe(base.source, feather=2), "sha256:aa")
    file_recipe = MaskRecipe(FileSource("a.png"))
    assert recipe_token(file_recipe, "i", "f1") == recipe_token(
        MaskRecipe(FileSource("b.png")), "i", "f1"
    )
    assert recipe_token(file_recipe, "i", "f1") != recipe_token(file_recipe, "i", "f2")
    with pytest.raises(ValueError, match="file_digest"):
        recipe_token(file_recipe, "i")


def test_generated_flag() -> None:
    assert MaskRecipe(AlphaSource()).generated
    assert not MaskRecipe(FileSource("m.png")).generated
    assert MaskRecipe(FileSource("m.png"), invert=True).generated


def test_stats_black_is_an_error_white_and_gray_warn() -> None:
    black = mask_stats(render_mask(MaskRecipe(shape("box:0,0,1,1"), invert=True), (20, 20)).mask)
    assert black.all_black and "edits nothing" in str(black.error()) and black.warnings() == []
    white = mask_stats(Image.new("L", (20, 20), 255))
    assert white.error() is None and "all white" in white.warnings()[0] and white.coverage == 1
    gray = mask_stats(Image.new("L", (20, 20), 128))
    assert gray.error() is None and "mid-gray" in gray.warnings()[0]
    tiny = Image.new("L", (2000, 2000), 0)
    tiny.putpixel((5, 5), 255)  # one pixel still edits: never averaged away
    assert mask_stats(tiny).error() is None
    half = mask_stats(render_mask(MaskRecipe(shape("box:0,0,0.5,1")), (20, 20)).mask)
    assert half.coverage == pytest.approx(0.5) and half.warnings() == []


# --- preview -------------------------------------------------------------------------------


def test_write_mask_preview(tmp_path: Path) -> None:
    source = Image.new("RGB", (40, 20), (0, 0, 255))
    mask = render_mask(MaskRecipe(shape("box:0,0,0.5,1")), source.size).mask
    mask_path, overlay_path = write_mask_preview(tmp_path / "m", "sku-1", source, mask)
    assert mask_path.name == "sku-1.mask.png" and overlay_path.name == "sku-1.overlay.png"
    assert Image.open(mask_path).tobytes() == mask.tobytes()
    overlay = Image.open(overlay_path).convert("RGB")
    assert overlay.getpixel((30, 10)) == (0, 0, 255)  # kept: untouched
    assert pixel(overlay, (5, 10))[0] > 100  # edited: tinted
    assert not list((tmp_path / "m").glob(".*tmp"))
    with pytest.raises(ValueError, match="file name"):
        write_mask_preview(tmp_path, "../x", source, mask)
