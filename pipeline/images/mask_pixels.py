"""Pixel work on masks (mode L, white = edit): grow, feather, the upload PNG, previews.

Split from ``images.masks`` (which re-exports these), which says what a mask is; this module
depends on Pillow alone. ``grow`` and ``feather`` are explained in ``images.masks``' docstring.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageChops, ImageFilter

from pipeline.durability import atomic_write


def grow_mask(mask: Image.Image, pixels: int) -> Image.Image:
    """Dilate (``pixels`` > 0) or erode (< 0) with a square window of side 2*|pixels|+1."""
    if pixels == 0:
        return mask
    if pixels < 0:
        return ImageChops.invert(grow_mask(ImageChops.invert(mask), -pixels))
    return _window_max(_window_max(mask, pixels, horizontal=True), pixels, horizontal=False)


def _window_max(image: Image.Image, radius: int, *, horizontal: bool) -> Image.Image:
    """out[x] = max(image[x - radius .. x + radius]) along one axis, zeros beyond the edges."""
    width, height = image.size
    # Padded by `radius` zeros before and after, so padded[x] = image[x - radius].
    if horizontal:
        spans = image.crop((-radius, 0, width + radius, height))
    else:
        spans = image.crop((0, -radius, width, height + radius))
    length = 2 * radius + 1
    covered = 1  # spans[x] = max(padded[x .. x + covered - 1])
    while covered * 2 <= length:
        spans = ImageChops.lighter(spans, _shifted(spans, covered, horizontal))
        covered *= 2
    if covered < length:  # two overlapping windows of `covered` make `length` exactly
        spans = ImageChops.lighter(spans, _shifted(spans, length - covered, horizontal))
    return spans.crop((0, 0, width, height))


def _shifted(image: Image.Image, offset: int, horizontal: bool) -> Image.Image:
    """out[x] = image[x + offset], zero where that falls outside (crop fills with zeros)."""
    width, height = image.size
    if horizontal:
        return image.crop((offset, 0, offset + width, height))
    return image.crop((0, offset, width, offset + height))


def feather_mask(mask: Image.Image, pixels: int) -> Image.Image:
    """A linear soft edge ``pixels`` wide, centered on the hard edge (one box blur)."""
    if pixels <= 0:
        return mask
    return mask.filter(ImageFilter.BoxBlur(pixels / 2))


def feather_reach(feather: int) -> int:
    """How far (px) from the hard edge the feather can change a pixel: beyond, values are exact."""
    return math.ceil(feather / 2)


def mask_png_bytes(mask: Image.Image) -> bytes:
    """The mask as the upload's PNG (mode L); deterministic, so its digest keys the upload."""
    buffer = io.BytesIO()
    (mask if mask.mode == "L" else mask.convert("L")).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# --- preview (pipeline validate --masks DIR) -----------------------------------------------

OVERLAY_COLOR = (255, 0, 80)
OVERLAY_OPACITY = 0.55


def write_mask_preview(
    folder: Path, job_id: str, source_image: Image.Image, mask: Image.Image
) -> tuple[Path, Path]:
    """Write ``<job_id>.mask.png`` (the mask as uploaded) and ``<job_id>.overlay.png``.

    The overlay is the source tinted where the mask edits, in proportion to the mask's value,
    so a feathered edge shows as a fade. ``job_id`` must already be a valid folder name.
    """
    if not job_id or "/" in job_id or "\\" in job_id or job_id in {".", ".."}:
        raise ValueError(f"write_mask_preview: {job_id!r} is not usable as a file name")
    folder.mkdir(parents=True, exist_ok=True)
    mask_path = folder / f"{job_id}.mask.png"
    overlay_path = folder / f"{job_id}.overlay.png"
    atomic_write(mask_path, mask_png_bytes(mask))
    atomic_write(overlay_path, _png(mask_overlay(source_image, mask)))
    return mask_path, overlay_path


def mask_overlay(source_image: Image.Image, mask: Image.Image) -> Image.Image:
    base = source_image.convert("RGB")
    if mask.size != base.size:
        mask = mask.resize(base.size, Image.Resampling.BILINEAR)
    tinted = Image.blend(base, Image.new("RGB", base.size, OVERLAY_COLOR), OVERLAY_OPACITY)
    return Image.composite(tinted, base, mask.convert("L"))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
