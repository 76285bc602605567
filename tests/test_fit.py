"""``fit_for_amazon``: re-framing on white fixes what it can, refuses the rest with the reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms, ImageDraw

import pipeline.images.fit as fit_module
from pipeline.images import (
    Channel,
    Code,
    FitOutcome,
    FitResult,
    ImageChecks,
    Refusal,
    fit_for_amazon,
    marketplace_checks,
)
from pipeline.images.fit import FIT_FILL
from pipeline.images.provenance import DIGITAL_SOURCE_TYPE, read_provenance
from tests.test_marketplace_checks import RED, SQUARE, WHITE, encode, shot

TOOL = "onemin-pipeline test"


def fit(data: bytes, **options: float) -> FitResult:
    return fit_for_amazon(data, marketplace_checks(data), creator_tool=TOOL, **options)


def decoded(data: bytes) -> Image.Image:
    """The image, loaded (its format and info kept; the file is closed)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    return image


def assert_fitted(result: FitResult, size: tuple[int, int], fmt: str) -> Image.Image:
    assert result.outcome is FitOutcome.FITTED, result.reason
    assert result.data is not None and result.checks is not None
    assert result.checks.passes(Channel.AMAZON), result.checks.amazon
    assert result.checks == marketplace_checks(result.data)
    image = decoded(result.data)
    assert (image.size, image.format) == (size, fmt)
    kept = read_provenance(result.data)
    assert kept is not None and kept["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert kept["creator_tool"] == TOOL
    return image


def assert_refused(result: FitResult, code: str, *words: str) -> None:
    assert result.outcome is FitOutcome.REFUSED
    assert result.data is None and result.checks is None
    assert result.refused_for == code
    for word in words:
        assert word in result.reason


def test_product_touching_the_border_of_a_white_ground_is_padded() -> None:
    # 1000x700 px, flush with the left edge: the border fails, the fill passes (97 %).
    data = shot(box=(0, 160, 1000, 860))
    assert marketplace_checks(data).codes(Channel.AMAZON) == (Code.BORDER_NOT_WHITE,)

    result = fit(data)

    side = -(-1000 // FIT_FILL)  # ceil: the product is 90 % of the square
    image = assert_fitted(result, (int(side), int(side)), "PNG")
    assert result.reason == f"product 1000x700 px centred on white {int(side)}x{int(side)}"
    left, top = (int(side) - 1000) // 2, (int(side) - 700) // 2
    product = image.crop((left, top, left + 1000, top + 700))
    assert product.tobytes() == decoded(data).crop((0, 160, 1000, 860)).tobytes()  # untouched
    assert image.getpixel((0, 0)) == WHITE


def test_small_product_in_a_large_frame_is_cropped_closer() -> None:
    data = shot((1536, 1024), box=(400, 200, 1136, 824))  # 736 px wide: fills 47 %

    result = fit(data)

    image = assert_fitted(result, (1000, 1000), "PNG")
    assert result.checks is not None and result.checks.facts.fill is not None
    assert result.checks.facts.fill >= 0.85
    assert "scaled up" in result.reason
    assert image.width == image.height


def test_900_px_image_is_scaled_up_to_1000() -> None:
    data = shot((900, 900), box=(48, 48, 848, 848))
    assert marketplace_checks(data).codes(Channel.AMAZON) == (Code.TOO_SMALL,)

    result = fit(data)

    assert_fitted(result, (1000, 1000), "PNG")
    assert result.reason == "product 900x900 px centred on white 1000x1000, scaled up 1.12x"


def test_jpeg_is_refitted_as_jpeg_with_its_own_quantisation() -> None:
    data = shot(box=(0, 160, 1000, 860), fmt="JPEG", quality=80)

    result = fit(data)

    # The box includes the JPEG's fringe of near-white pixels (up to a 16 px MCU each side).
    assert result.checks is not None and 1112 <= result.checks.facts.width <= 1150
    side = result.checks.facts.width
    assert_fitted(result, (side, side), "JPEG")
    assert result.data is not None
    with Image.open(io.BytesIO(data)) as before, Image.open(io.BytesIO(result.data)) as after:
        assert after.quantization == before.quantization  # type: ignore[attr-defined]


@pytest.mark.parametrize("ground", [254, 247])
def test_off_white_ground_is_refused(ground: int) -> None:
    result = fit(shot(ground=(ground, ground, ground)))

    expected = f"background not pure white (min {ground}): padding with white cannot whiten it"
    assert_refused(result, Refusal.BACKGROUND, expected)


def test_product_touching_the_border_of_an_off_white_ground_is_refused() -> None:
    result = fit(shot(ground=(250, 250, 250), box=(0, 160, 1000, 860)))

    assert_refused(result, Refusal.BACKGROUND, "padding with white cannot whiten it")


def test_upscaling_beyond_the_allowed_factor_is_refused() -> None:
    data = shot(box=(192, 192, 832, 832))  # 640 px: 1000 px needs 1.41x

    refused = fit(data)
    allowed = fit(data, max_upscale=1.5)

    expected = "the product is 640 px: a 1000 px square needs it 1.40x larger (allowed up to 1.25x)"
    assert_refused(refused, Refusal.UPSCALE, expected)
    assert_fitted(allowed, (1000, 1000), "PNG")


def test_no_upscaling_at_all_refuses_the_900_px_image() -> None:
    result = fit(shot((900, 900), box=(48, 48, 848, 848)), max_upscale=1.0)

    assert_refused(result, Refusal.UPSCALE, "needs it 1.12x larger (allowed up to 1.00x)")


def test_transparent_ground_is_laid_on_white() -> None:
    data = shot(mode="RGBA", ground=(0, 0, 0, 0), product=(*RED, 255))

    result = fit(data)

    image = assert_fitted(result, (1000, 1000), "PNG")
    assert image.mode == "RGB"


def test_srgb_profile_is_carried_over() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    result = fit(shot(box=(0, 160, 1000, 860), icc_profile=srgb))

    image = assert_fitted(result, (1112, 1112), "PNG")
    assert image.info.get("icc_profile") == srgb


def test_an_image_that_passes_is_delivered_unchanged() -> None:
    data = shot()

    result = fit(data)

    assert result.outcome is FitOutcome.UNCHANGED
    assert result.data is data
    assert result.checks == marketplace_checks(data)


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (shot(fmt="WEBP"), Code.FORMAT, "WEBP file (needs JPEG or PNG): re-framing"),
        (
            encode(Image.new("CMYK", SQUARE, (0, 0, 0, 0)), "JPEG"),
            Code.COLOUR,
            "CMYK colour (needs sRGB): re-framing on white cannot fix it",
        ),
        (shot(box=None), Code.NO_PRODUCT, "no product"),
    ],
    ids=["webp", "cmyk", "all-white"],
)
def test_failures_framing_cannot_change_are_refused_without_decoding(
    data: bytes, code: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = marketplace_checks(data)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit decoded an image it had to refuse")

    monkeypatch.setattr(Image, "open", no_decoding)
    result = fit_for_amazon(data, checks, creator_tool=TOOL)

    assert_refused(result, code, words)


def test_a_white_product_covering_most_of_the_border_is_refused_as_no_white_ground() -> None:
    image = Image.new("RGB", SQUARE, WHITE)
    ImageDraw.Draw(image).rectangle((0, 0, 1023, 900), fill=RED)  # the ground shows at the foot

    result = fit(encode(image, "PNG"))

    expected = "only 30 % of the border is pure white (min 30): too little white ground"
    assert_refused(result, Refusal.BACKGROUND, expected)


def test_max_upscale_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_upscale"):
        fit(shot((900, 900)), max_upscale=0.5)


def test_a_copy_that_still_fails_is_not_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    data = shot(box=(0, 160, 1000, 860))
    checks = marketplace_checks(data)
    # Stand-in for a re-check that finds the copy failing (the fit cannot make one by itself).
    monkeypatch.setattr("pipeline.images.fit.marketplace_checks", lambda _data, pixels=None: checks)

    result = fit_for_amazon(data, checks, creator_tool=TOOL)

    expected = "the re-framed copy still fails: border not pure white (min 30)"
    assert_refused(result, Refusal.STILL_FAILS, expected)


@pytest.mark.parametrize(("fmt", "handed_on"), [("PNG", True), ("JPEG", False)])
def test_a_png_copy_is_rechecked_on_its_own_pixels_without_decoding(
    monkeypatch: pytest.MonkeyPatch, fmt: str, handed_on: bool
) -> None:
    data = shot(box=(0, 160, 1000, 860), fmt=fmt)
    given: list[Image.Image | None] = []
    judge = fit_module.marketplace_checks

    def spy(source: bytes, *, pixels: Image.Image | None = None) -> ImageChecks:
        given.append(pixels)
        return judge(source, pixels=pixels)

    monkeypatch.setattr(fit_module, "marketplace_checks", spy)

    result = fit_for_amazon(data, marketplace_checks(data), creator_tool=TOOL)

    assert result.outcome is FitOutcome.FITTED, result.reason
    assert [pixels is not None for pixels in given] == [handed_on]
    assert result.data is not None and result.checks == marketplace_checks(result.data)
