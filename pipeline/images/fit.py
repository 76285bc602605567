"""``--fit``: a copy re-framed on pure white, where that alone fixes Amazon's main-image failures.

What the fit does: the product (the box of every pixel not pure white, at full resolution) is
cut out as it is and centred on a square of pure white whose side makes the product's longer
extent ``FIT_FILL`` of it; when that square is under Amazon's 1000 px, the product is scaled up
(Lanczos) to reach it, by at most ``max_upscale``. A transparent image is laid on white first.
So a product touching the border of a white ground gets a white margin, a small product is
cropped closer, a 900 px image grows to 1000 px, and a product that ran into the frame stays cut
where the frame cut it (now with white beyond the cut). The copy is square, as Amazon recommends
for main images, whatever the original's aspect ratio: a square is the one frame in which any
product's longer side can fill the frame's longer side.

What it will not do, returning no data and the reason:

- change a format, a colour space (CMYK, a foreign ICC profile) or an all-white image;
- whiten a ground: if less than ``FIT_MIN_WHITE_GROUND`` of the border ring is pure white, the
  ground is not white (an off-white backdrop, with or without the product touching the border)
  and padding it with white would only frame a grey rectangle. The rule reads the ring only:
  a ground white along most of the border but grey elsewhere (a shadow, a floor) is kept
  inside the product's box, and the copy passes while showing it;
- upscale more than ``max_upscale`` (default 1.25: beyond that the softening shows at Amazon's
  zoom; pass 1.0 to forbid any upscaling).

The copy is encoded in the original's format: a JPEG with the original's own quantisation
tables and chroma subsampling (its quality kept, not guessed), a PNG at ``FIT_PNG_COMPRESS_LEVEL``;
an sRGB ICC profile is carried over; the provenance XMP is written into it
(``provenance.add_provenance``). The copy is then checked like any delivered image, and offered
only if it passes Amazon's checks.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, ImageChops, JpegImagePlugin

from pipeline.images.checks import (
    AMAZON_MIN_LONG_SIDE,
    Channel,
    Code,
    ImageChecks,
    marketplace_checks,
)
from pipeline.images.measure import (
    WHITE,
    ImageSource,
    non_white_box,
    on_white,
    open_image,
    read_source,
    ring_boxes,
)
from pipeline.images.provenance import add_provenance

FIT_FILL = 0.90  # the product's longer extent in the copy: clear of the 85 % rule's edge
FIT_MAX_UPSCALE = 1.25
FIT_MIN_WHITE_GROUND = 0.5  # share of the border ring that must be pure white
# zlib level 1, as the API's default PNGs: on a grainy product shot levels 3 and 6 took 1.4x and
# 3x the time (70 -> 220 ms) for files no smaller.
FIT_PNG_COMPRESS_LEVEL = 1
# Failures no re-framing can change: the fit refuses at once, without decoding.
NOT_FIXED_BY_FRAMING = (Code.FORMAT, Code.COLOUR, Code.NO_PRODUCT)
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}


class FitOutcome(StrEnum):
    UNCHANGED = "unchanged"  # already passes: the original is the copy to deliver
    FITTED = "fitted"
    REFUSED = "refused"


@dataclass(frozen=True)
class FitResult:
    """The file to deliver for Amazon, or None with the reason it cannot be made to pass."""

    outcome: FitOutcome
    reason: str  # one line: what was done, or why it cannot be
    data: bytes | None = None  # the fitted copy (or the original when unchanged)
    checks: ImageChecks | None = None  # the checks of ``data``
    refused_for: str | None = None  # the failure code behind a refusal ("background", ...)


class Refusal(StrEnum):
    """Why a fit refuses, beside the checks' own codes it cannot fix."""

    BACKGROUND = "background"
    UPSCALE = "upscale"
    STILL_FAILS = "still_fails"


def fit_for_amazon(
    source: ImageSource,
    checks: ImageChecks,
    *,
    creator_tool: str,
    max_upscale: float = FIT_MAX_UPSCALE,
) -> FitResult:
    """Re-frame ``source`` (whose checks are ``checks``) on white if that alone fixes Amazon."""
    if max_upscale < 1:
        raise ValueError(f"max_upscale is a factor of at least 1, not {max_upscale}")
    data = read_source(source)
    if checks.passes(Channel.AMAZON):
        reason = "already passes Amazon's main-image checks"
        return FitResult(FitOutcome.UNCHANGED, reason, data, checks)
    for failure in checks.amazon:
        if failure.code in NOT_FIXED_BY_FRAMING:
            return _refused(failure.code, f"{failure.reason}: re-framing on white cannot fix it")
    with open_image(data) as original:
        original.load()
        flat = _flattened(original)
        encoder = _encoder_options(original)
        fmt = _PIL_FORMATS[(original.format or "").lower()]
    refusal = _ground_refusal(flat)
    if refusal is not None:
        return refusal
    framed = _framed(flat, max_upscale)
    if isinstance(framed, FitResult):
        return framed
    copy, how = framed
    fitted = add_provenance(_encoded(copy, fmt, encoder), creator_tool=creator_tool)
    # A PNG is lossless: the copy's pixels are the file's, so the re-check skips decoding it
    # (the decode is nearly all of a PNG's checks: 15-25 ms at the API's sizes).
    rechecked = marketplace_checks(fitted, pixels=copy if fmt == "PNG" else None)
    if not rechecked.passes(Channel.AMAZON):
        reasons = "; ".join(failure.reason for failure in rechecked.amazon)
        return _refused(Refusal.STILL_FAILS, f"the re-framed copy still fails: {reasons}")
    return FitResult(FitOutcome.FITTED, how, fitted, rechecked)


def _flattened(original: Image.Image) -> Image.Image:
    """The original (loaded) as RGB or grey, any transparency laid on white."""
    if original.mode in ("RGB", "L"):
        return original
    if "A" in original.getbands() or original.has_transparency_data:
        return on_white(original)
    return original.convert("RGB")


def _refused(code: str, reason: str) -> FitResult:
    return FitResult(FitOutcome.REFUSED, reason, refused_for=code)


def _ground_refusal(flat: Image.Image) -> FitResult | None:
    """A refusal when the ground is not white (too little of the border ring is pure white)."""
    white, total, lowest = 0, 0, WHITE
    for box in ring_boxes(flat.size):
        darkest = _darkest_channel(flat.crop(box))
        histogram = darkest.histogram()
        white += histogram[WHITE]
        total += darkest.width * darkest.height
        lowest = min(lowest, next(value for value, count in enumerate(histogram) if count))
    share = white / total
    if share >= FIT_MIN_WHITE_GROUND:
        return None
    if white == 0:
        reason = f"background not pure white (min {lowest}): padding with white cannot whiten it"
    else:
        reason = (
            f"only {math.floor(share * 100)} % of the border is pure white (min {lowest}): "
            "too little white ground to re-frame on"
        )
    return _refused(Refusal.BACKGROUND, reason)


def _darkest_channel(image: Image.Image) -> Image.Image:
    """One band holding each pixel's lowest channel: 255 exactly where it is pure white."""
    bands = image.split()
    darkest = bands[0]
    for band in bands[1:]:
        darkest = ImageChops.darker(darkest, band)
    return darkest


def _framed(flat: Image.Image, max_upscale: float) -> tuple[Image.Image, str] | FitResult:
    """The product centred on a white square (scaled up if needed), and what was done."""
    box = non_white_box(flat)
    if box is None:
        return _refused(Code.NO_PRODUCT, "no product: the image is all white")
    product = flat.crop(box)
    side = math.ceil(max(product.size) / FIT_FILL)
    scale = 1.0
    if side < AMAZON_MIN_LONG_SIDE:
        scale = AMAZON_MIN_LONG_SIDE / side
        if scale > max_upscale:
            reason = (
                f"the product is {max(product.size)} px: a {AMAZON_MIN_LONG_SIDE} px square "
                f"needs it {scale:.2f}x larger (allowed up to {max_upscale:.2f}x)"
            )
            return _refused(Refusal.UPSCALE, reason)
        side = AMAZON_MIN_LONG_SIDE
        size = (round(product.width * scale), round(product.height * scale))
        product = product.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new(flat.mode, (side, side), (WHITE,) * len(flat.getbands()))
    canvas.paste(product, ((side - product.width) // 2, (side - product.height) // 2))
    how = f"product {product.width}x{product.height} px centred on white {side}x{side}"
    if scale > 1:
        how += f", scaled up {scale:.2f}x"
    return canvas, how


def _encoder_options(original: Image.Image) -> dict[str, object]:
    """What keeps the copy's encoding like the original's (JPEG tables, sRGB profile)."""
    options: dict[str, object] = {}
    profile = original.info.get("icc_profile")
    if profile:
        options["icc_profile"] = profile  # only an sRGB one gets here: others are refused
    if isinstance(original, JpegImagePlugin.JpegImageFile):
        options["qtables"] = original.quantization
        sampling = JpegImagePlugin.get_sampling(original)
        if sampling >= 0:
            options["subsampling"] = sampling
    else:
        options["compress_level"] = FIT_PNG_COMPRESS_LEVEL
    return options


def _encoded(image: Image.Image, fmt: str, options: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
