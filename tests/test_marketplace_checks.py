"""Marketplace checks on generated images: each channel's verdict, with its code and reason.

Products are drawn on block boundaries (multiples of 8 px), so the box measured on a reduced
copy is the drawn box exactly and a fill can be asserted to the percent.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import msgspec
import pytest
from PIL import Image, ImageCms, ImageDraw, PngImagePlugin

from pipeline.errors import ImageCheckError
from pipeline.images import (
    Channel,
    Code,
    Failure,
    ImageChecks,
    ImageFacts,
    checks_from_facts,
    marketplace_checks,
)
from pipeline.images.icc import profile_description
from pipeline.images.provenance import add_provenance, xmp_packet

WHITE = (255, 255, 255)
RED = (200, 40, 30)
SQUARE = (1024, 1024)
FULL_BOX = (64, 64, 960, 960)  # 896 px of 1024: fills 87 %
TOOL = "test"

Box = tuple[int, int, int, int]
Colour = tuple[int, ...]


def shot(
    size: tuple[int, int] = SQUARE,
    *,
    ground: Colour = WHITE,
    box: Box | None = FULL_BOX,
    fmt: str = "PNG",
    mode: str = "RGB",
    product: Colour = RED,
    provenance: bool = True,
    **save: object,
) -> bytes:
    """A product shot: a filled box (right/bottom exclusive) on a plain ground, encoded."""
    grey = mode == "L"
    image = Image.new(mode, size, ground[0] if grey else ground)
    if box is not None:
        left, top, right, bottom = box
        fill = product[0] if grey else product
        ImageDraw.Draw(image).rectangle((left, top, right - 1, bottom - 1), fill=fill)
    return encode(image, fmt, provenance=provenance, **save)


def encode(image: Image.Image, fmt: str, *, provenance: bool = True, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    data = buffer.getvalue()
    return add_provenance(data, creator_tool=TOOL) if provenance else data


def icc_named(name: str) -> bytes:
    """A minimal ICC v4 profile whose only tag is its description (an ``mluc``)."""
    text = name.encode("utf-16-be")
    tag = (
        b"mluc" + bytes(4) + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(text), 28)
    )
    tag += text
    table = struct.pack(">I", 1) + struct.pack(">4sII", b"desc", 144, len(tag))
    header = bytearray(128)
    header[16:20] = b"RGB "
    header[36:40] = b"acsp"
    profile = bytes(header) + table + tag
    return struct.pack(">I", len(profile)) + profile[4:]


def assert_only(checks: ImageChecks, channel: Channel, *failures: Failure) -> None:
    """``channel`` fails with exactly ``failures``; every other channel passes."""
    assert checks.failures(channel) == failures
    assert checks.passes(channel) is (not failures)
    for other in Channel:
        if other is not channel:
            assert checks.passes(other), (other, checks.failures(other))


# -- Amazon: border, fill, size -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_product_on_pure_white_passes_every_channel(fmt: str) -> None:
    checks = marketplace_checks(shot(fmt=fmt, quality=90))

    assert checks.verdicts() == {Channel.AMAZON: True, Channel.GOOGLE: True, Channel.SHOPIFY: True}
    facts = checks.facts
    assert (facts.width, facts.height, facts.format) == (1024, 1024, fmt.lower())
    assert facts.border_min == 255 and facts.border_alpha_min == 255
    assert facts.provenance == "compositeWithTrainedAlgorithmicMedia"
    assert facts.fill is not None and 0.87 <= facts.fill <= 0.92  # JPEG's fringe: a block or two


def test_png_product_box_and_fill_are_measured_exactly_on_block_boundaries() -> None:
    facts = marketplace_checks(shot()).facts

    assert facts.product == FULL_BOX
    assert facts.fill == 0.875


@pytest.mark.parametrize("ground", [254, 247])
def test_off_white_border_fails_amazon_naming_its_minimum(ground: int) -> None:
    checks = marketplace_checks(shot(ground=(ground, ground, ground)))

    expected = Failure(Code.BORDER_NOT_WHITE, f"border not pure white (min {ground})")
    assert_only(checks, Channel.AMAZON, expected)
    assert checks.facts.border_min == ground


def test_one_off_white_channel_is_enough_to_fail() -> None:
    checks = marketplace_checks(shot(ground=(255, 254, 255)))

    assert checks.codes(Channel.AMAZON) == (Code.BORDER_NOT_WHITE,)


def test_off_white_jpeg_border_fails() -> None:
    checks = marketplace_checks(shot(ground=(240, 240, 240), fmt="JPEG", quality=90))

    assert checks.codes(Channel.AMAZON) == (Code.BORDER_NOT_WHITE,)
    assert checks.facts.border_min is not None and 238 <= checks.facts.border_min <= 242


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_thin_grey_line_along_the_edge_fails_the_border(fmt: str) -> None:
    image = Image.new("RGB", SQUARE, WHITE)
    ImageDraw.Draw(image).rectangle((64, 64, 959, 959), fill=RED)
    ImageDraw.Draw(image).rectangle((0, 1021, 1023, 1023), fill=(120, 120, 120))  # 3 px

    checks = marketplace_checks(encode(image, fmt, quality=90))

    assert checks.codes(Channel.AMAZON) == (Code.BORDER_NOT_WHITE,)


def test_small_product_fails_the_fill() -> None:
    checks = marketplace_checks(shot(box=(192, 192, 832, 832)))  # 640 px of 1024

    expected = Failure(Code.FILL_LOW, "product fills 62 % of the longer side (at least 85 %)")
    assert_only(checks, Channel.AMAZON, expected)
    assert checks.facts.fill == 0.625


def test_fill_is_the_products_longer_extent_over_the_images_longer_side() -> None:
    tall = marketplace_checks(shot((1536, 1024), box=(640, 32, 960, 992)))  # 960 px high
    wide = marketplace_checks(shot((1536, 1024), box=(64, 256, 1472, 768)))  # 1408 px wide

    assert tall.codes(Channel.AMAZON) == (Code.FILL_LOW,)
    assert tall.facts.fill == round(960 / 1536, 3)
    assert wide.passes(Channel.AMAZON)
    assert wide.facts.fill == round(1408 / 1536, 3)


def test_900_px_image_fails_amazon_on_its_size_only() -> None:
    checks = marketplace_checks(shot((900, 900), box=(48, 48, 848, 848)))

    expected = Failure(Code.TOO_SMALL, "longer side 900 px (at least 1000)")
    assert_only(checks, Channel.AMAZON, expected)


def test_all_white_image_has_no_product() -> None:
    checks = marketplace_checks(shot(box=None))

    expected = Failure(Code.NO_PRODUCT, "no product: the image is all white")
    assert_only(checks, Channel.AMAZON, expected)
    assert checks.facts.fill == 0.0 and checks.facts.product is None


def test_transparent_border_fails_and_the_product_is_measured_on_white() -> None:
    checks = marketplace_checks(shot(mode="RGBA", ground=(0, 0, 0, 0), product=(*RED, 255)))

    expected = Failure(Code.BORDER_TRANSPARENT, "border transparent (alpha min 0)")
    assert_only(checks, Channel.AMAZON, expected)
    assert checks.facts.border_min == 255  # transparent laid on white
    assert checks.facts.product == FULL_BOX


def test_opaque_rgba_png_is_judged_like_rgb() -> None:
    checks = marketplace_checks(shot(mode="RGBA", ground=(*WHITE, 255), product=(*RED, 255)))

    assert checks.passes(Channel.AMAZON)
    assert checks.facts.product == FULL_BOX


# -- Amazon: format and colour --------------------------------------------------------------


def test_webp_fails_amazon_on_its_format_and_its_pixels_are_not_decoded() -> None:
    checks = marketplace_checks(shot(fmt="WEBP"))

    expected = Failure(Code.FORMAT, "WEBP file (needs JPEG or PNG)")
    assert_only(checks, Channel.AMAZON, expected)
    assert checks.facts.border_min is None and checks.facts.fill is None


def test_cmyk_jpeg_fails_amazon_on_colour() -> None:
    image = Image.new("CMYK", SQUARE, (0, 0, 0, 0))  # no ink: white
    ImageDraw.Draw(image).rectangle((64, 64, 959, 959), fill=(0, 200, 200, 30))

    checks = marketplace_checks(encode(image, "JPEG", quality=90))

    assert checks.facts.mode == "CMYK"
    assert_only(checks, Channel.AMAZON, Failure(Code.COLOUR, "CMYK colour (needs sRGB)"))


def test_srgb_profile_passes_and_a_foreign_profile_fails() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    tagged = marketplace_checks(shot(icc_profile=srgb))
    foreign = marketplace_checks(shot(icc_profile=icc_named("Display P3")))

    assert tagged.passes(Channel.AMAZON) and "sRGB" in tagged.facts.icc
    expected = Failure(Code.COLOUR, "ICC profile 'Display P3' is not sRGB")
    assert_only(foreign, Channel.AMAZON, expected)


def test_grayscale_on_white_passes() -> None:
    checks = marketplace_checks(shot(mode="L", product=(90,)))

    assert checks.facts.mode == "L"
    assert checks.verdicts() == {Channel.AMAZON: True, Channel.GOOGLE: True, Channel.SHOPIFY: True}


def test_profile_description_reads_v2_desc_and_v4_mluc() -> None:
    srgb_v4 = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    v2 = bytearray(icc_named("x"))
    ascii_tag = b"desc" + bytes(4) + struct.pack(">I", 12) + b"Adobe RGB\x00\x00\x00"
    v2[128:] = struct.pack(">I", 1) + struct.pack(">4sII", b"desc", 144, len(ascii_tag))
    v2 += ascii_tag

    assert profile_description(icc_named("Display P3")) == "Display P3"
    assert profile_description(srgb_v4) == "sRGB built-in"
    assert profile_description(bytes(v2)) == "Adobe RGB"
    assert profile_description(b"\x00" * 40) is None  # truncated: no tag table


# -- Google and Shopify ---------------------------------------------------------------------


def test_png_without_provenance_fails_google() -> None:
    checks = marketplace_checks(shot(provenance=False))

    reason = "AI provenance not kept (no IPTC DigitalSourceType in the XMP)"
    assert_only(checks, Channel.GOOGLE, Failure(Code.NO_PROVENANCE, reason))
    assert checks.facts.provenance == ""


@pytest.mark.parametrize(
    ("source_type", "passes"), [("trainedAlgorithmicMedia", True), ("digitalCapture", False)]
)
def test_google_wants_a_trained_models_source_type(source_type: str, passes: bool) -> None:
    packet = xmp_packet(TOOL).decode().replace("compositeWithTrainedAlgorithmicMedia", source_type)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)

    checks = marketplace_checks(shot(provenance=False, pnginfo=info))

    assert checks.facts.provenance == source_type
    assert checks.passes(Channel.GOOGLE) is passes
    if not passes:
        reason = "provenance says 'digitalCapture', not a trained model's edit"
        assert checks.google == (Failure(Code.NO_PROVENANCE, reason),)


def test_image_under_500_px_fails_google_and_amazon() -> None:
    checks = marketplace_checks(shot((480, 640), box=(0, 32, 480, 608)))

    assert checks.google == (Failure(Code.TOO_SMALL, "480x640 px (at least 500x500)"),)
    assert Code.TOO_SMALL in checks.codes(Channel.AMAZON)
    assert checks.passes(Channel.SHOPIFY)


def test_image_over_the_shopify_size_fails_shopify() -> None:
    checks = marketplace_checks(shot((5200, 600), box=(24, 24, 5176, 576)))

    assert_only(checks, Channel.SHOPIFY, Failure(Code.TOO_LARGE, "5200x600 px (at most 5000x5000)"))


def facts(**changes: object) -> ImageFacts:
    base = ImageFacts(
        width=1024,
        height=1024,
        file_bytes=1_000_000,
        format="png",
        mode="RGB",
        provenance="compositeWithTrainedAlgorithmicMedia",
        border_min=255,
        border_alpha_min=255,
        fill=0.9,
        product=(51, 51, 973, 973),
    )
    return msgspec.structs.replace(base, **changes)


@pytest.mark.parametrize(
    ("file_bytes", "google", "shopify"),
    [
        (16_000_000, (), ()),
        (16_000_001, ("16.1 MB (at most 16 MB)",), ()),
        (20_000_001, ("20.1 MB (at most 16 MB)",), ("20.1 MB (at most 20 MB)",)),
    ],
)
def test_file_size_limits(
    file_bytes: int, google: tuple[str, ...], shopify: tuple[str, ...]
) -> None:
    checks = checks_from_facts(facts(file_bytes=file_bytes))

    assert checks.google == tuple(Failure(Code.FILE_TOO_LARGE, reason) for reason in google)
    assert checks.shopify == tuple(Failure(Code.FILE_TOO_LARGE, reason) for reason in shopify)
    assert checks.passes(Channel.AMAZON)


def test_fill_just_under_the_rule_reads_as_the_percent_below_it() -> None:
    checks = checks_from_facts(facts(fill=0.849))

    assert checks.amazon == (
        Failure(Code.FILL_LOW, "product fills 84 % of the longer side (at least 85 %)"),
    )
    assert checks_from_facts(facts(fill=0.85)).passes(Channel.AMAZON)


def test_deep_modes_fail_colour() -> None:
    checks = checks_from_facts(facts(mode="I;16"))

    assert checks.amazon == (Failure(Code.COLOUR, "I;16 pixels (needs 8-bit sRGB)"),)


# -- the result: stored, read back, judged again --------------------------------------------


def test_checks_round_trip_through_json_compactly() -> None:
    checks = marketplace_checks(shot(ground=(247, 247, 247), box=(192, 192, 832, 832)))

    line = checks.to_json()

    assert ImageChecks.from_json(line) == checks
    assert ImageChecks.from_json(line.decode()) == checks
    assert len(line) < 450
    assert b'["border_not_white","border not pure white (min 247)"]' in line


def test_checks_embed_in_a_ledger_record() -> None:
    class Line(msgspec.Struct, frozen=True):
        job_id: str
        checks: tuple[ImageChecks, ...]

    record = Line("sku-1", (marketplace_checks(shot()),))

    assert msgspec.json.decode(msgspec.json.encode(record), type=Line) == record


def test_broken_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        ImageChecks.from_json(b'{"facts": {"width": "wide"}}')


def test_stored_facts_judged_again_give_the_same_verdicts() -> None:
    checks = marketplace_checks(shot(box=(192, 192, 832, 832)))

    assert checks_from_facts(checks.facts) == checks


def test_a_path_and_its_bytes_give_the_same_checks(tmp_path: Path) -> None:
    data = shot(fmt="JPEG", quality=85)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)

    assert marketplace_checks(path) == marketplace_checks(data)


def test_a_pngs_own_pixels_stand_in_for_decoding() -> None:
    data = shot(box=(192, 192, 832, 832))
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        pixels = image.copy()

    assert marketplace_checks(data, pixels=pixels) == marketplace_checks(data)


def test_pixels_cannot_stand_in_for_a_lossy_file() -> None:
    data = shot(fmt="JPEG")

    with pytest.raises(ValueError, match="PNG"):
        marketplace_checks(data, pixels=Image.new("RGB", SQUARE, WHITE))


@pytest.mark.parametrize("data", [b"not an image", shot()[:-300]], ids=["text", "truncated"])
def test_unreadable_bytes_raise_a_one_line_error(data: bytes) -> None:
    with pytest.raises(ImageCheckError) as raised:
        marketplace_checks(data)

    assert "\n" not in str(raised.value)
    assert raised.value.kind == "image_check"
