"""A mask file's pixels: converting it to what the API reads, and warnings about its content.

Masks: ``L``, ``RGB`` and ``1`` are uploaded as they are (the API reads luminance). Any other
mode is converted to grayscale before upload (``PlannedJob.mask_convert``, done by
``mask_upload_bytes``). With real transparency (some alpha below 255) OpenAI's convention
decides: transparent = edit, so the upload is ``255 - alpha`` and colours are ignored.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from PIL import Image

from pipeline.images.masks import (  # one owner of the mask rule and its thresholds
    MID_GRAY,
    MID_GRAY_SHARE,
    NEAR_BLACK,
    NEAR_WHITE,
    alpha_band,
)
from pipeline.images.masks import as_edit_mask as mask_as_grayscale

MASK_MODES_AS_IS = frozenset({"L", "RGB", "1"})

THUMBNAIL = (64, 64)


def mask_upload_bytes(path: Path) -> bytes:
    """PNG bytes of the mask converted to grayscale (L, white = edit), for ``mask_convert``."""
    with Image.open(path) as image:
        image.load()
        buffer = io.BytesIO()
        mask_as_grayscale(image).save(buffer, format="PNG")
    return buffer.getvalue()


def conversion_notes(image: Image.Image, gray: Image.Image) -> Iterator[str]:
    if image.mode in MASK_MODES_AS_IS:
        return
    alpha = alpha_band(image)
    if alpha is not None and _extrema(alpha)[0] < 255:
        share = _mean(gray) / 255
        yield (
            f"has transparency: it will be uploaded as grayscale with OpenAI's rule "
            f"(transparent = edit, opaque = keep); {share:.0%} of the image will be edited"
        )
    else:
        yield f"is mode {image.mode}: it will be uploaded converted to grayscale"


def content_notes(gray: Image.Image) -> Iterator[str]:
    darkest, brightest = _extrema(gray)
    if brightest <= NEAR_BLACK:
        return  # an error, not a note, unless modifiers change it (_check_effective_mask)
    if darkest >= NEAR_WHITE:
        yield "is all white: the whole image will be regenerated"
        return
    histogram = _thumbnail(gray).histogram()
    gray_share = sum(histogram[MID_GRAY.start : MID_GRAY.stop]) / sum(histogram)
    if gray_share > MID_GRAY_SHARE:
        yield (
            f"is mostly mid-gray ({gray_share:.0%}), low contrast: edits will only blend; "
            "use white to edit and black to keep"
        )


def _thumbnail(gray: Image.Image) -> Image.Image:
    small = gray.copy()
    small.thumbnail(THUMBNAIL)
    return small


def _mean(gray: Image.Image) -> float:
    histogram = _thumbnail(gray).histogram()
    return sum(value * count for value, count in enumerate(histogram)) / max(1, sum(histogram))


def is_all_black(gray: Image.Image) -> bool:
    """As a mask, this edits nothing."""
    return _extrema(gray)[1] <= NEAR_BLACK


def _extrema(band: Image.Image) -> tuple[int, int]:
    """The darkest and brightest value of a one-band image (Pillow types it for every mode)."""
    return cast(tuple[int, int], band.getextrema())
