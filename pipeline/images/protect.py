"""``protect: true``: outside the mask, the delivered image keeps the source's own pixels.

The model edits outside the mask at times (reframed or recoloured products). After download,
``protect`` composites: the result where the mask edits, the source where it keeps, the
feathered edge blended (``Image.composite`` with the mask as the weight).

Mapping: the API returns 1024x1024, 1024x1536 or 1536x1024 whatever the source's size, so the
source and the mask are fitted to the result's size with a centered cover-crop
(``ImageOps.fit``, bilinear): scaled to cover, the excess cut equally from both sides. That is
the mapping the emulator uses (``pipeline/emulator/imaging.py``) and the one that keeps a
mask aligned with its image at any aspect ratio. Pass the source as uploaded (EXIF orientation
applied, downscaled if it was), and the effective mask (``masks.render_mask``) at its size.

Modes: the result's mode is kept. An RGBA result composites its alpha too (the kept area gets
the source's alpha; an opaque source gives opaque); an RGB result takes the source's colours
(a transparent source pixel's hidden colour shows: JPEG has no alpha to keep it in).

``protect_file`` reads the API's image (kept at ``OUT/<id>/.raw/<index>.<ext>``), composites
and encodes ONCE in the job's output format with ``output_compression``'s meaning (JPEG and
WebP quality = compression; PNG: 100 = fastest zlib level 0 ... 0 = level 9, as the API), adds
provenance to the encoded bytes in memory, and writes to a temporary name renamed into place.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.durability import atomic_write
from pipeline.images.provenance import add_provenance

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
_RESAMPLE = Image.Resampling.BILINEAR
_WORK_MODES = frozenset({"RGB", "RGBA", "L", "LA"})


def fit_to(image: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """``image`` in ``mode`` at ``size`` by centered cover-crop (the API's mapping)."""
    converted = image if image.mode == mode else image.convert(mode)
    if converted.size == size:
        return converted
    return ImageOps.fit(converted, size, method=_RESAMPLE)


def protect(result: Image.Image, source: Image.Image, mask: Image.Image) -> Image.Image:
    """The result where ``mask`` edits (white), the source where it keeps (black), blended."""
    mode = _work_mode(result)
    edited = result if result.mode == mode else result.convert(mode)
    kept = fit_to(source, edited.size, mode)
    weight = fit_to(mask, edited.size, "L")
    return Image.composite(edited, kept, weight)


def _work_mode(result: Image.Image) -> str:
    if result.mode in _WORK_MODES:
        return result.mode
    has_alpha = "A" in result.getbands() or "transparency" in result.info
    return "RGBA" if has_alpha else "RGB"


def encode(image: Image.Image, output_format: str, compression: int) -> bytes:
    """Encode once with the API's ``output_compression`` (0-100, higher = better quality)."""
    fmt = PIL_FORMATS[output_format.lower()]
    buffer = io.BytesIO()
    if fmt == "PNG":
        # PNG is lossless: "better quality" can only mean less effort, so 100 -> level 0.
        level = min(9, max(0, round((100 - compression) * 9 / 100)))
        image.save(buffer, fmt, compress_level=level)
    elif fmt == "JPEG":
        image.convert("RGB").save(buffer, fmt, quality=compression)
    else:
        image.save(buffer, fmt, quality=compression)
    return buffer.getvalue()


@dataclass(frozen=True)
class Protected:
    """A protected image as written: its bytes and the pixels they encode (a PNG's are exactly
    the file's, lossless, so the marketplace checks can read them instead of decoding again)."""

    data: bytes
    pixels: Image.Image


def protect_file(
    raw_path: Path,
    source: Path | Image.Image,
    mask: Image.Image,
    out_path: Path,
    output_format: str,
    compression: int,
    *,
    creator_tool: str | None = None,
) -> bytes:
    """Write the protected image to ``out_path`` (encoded once, provenance added when given).

    Returns the bytes written, so the caller can digest or upload them without reading back.
    """
    written = write_protected(
        raw_path, source, mask, out_path, output_format, compression, creator_tool=creator_tool
    )
    return written.data


def write_protected(
    raw_path: Path,
    source: Path | Image.Image,
    mask: Image.Image,
    out_path: Path,
    output_format: str,
    compression: int,
    *,
    creator_tool: str | None = None,
) -> Protected:
    """``protect_file``, also handing back the composited pixels."""
    with Image.open(raw_path) as raw:
        raw.load()
        composited = protect(raw, _opened(source), mask)
    data = encode(composited, output_format, compression)
    if creator_tool is not None:
        data = add_provenance(data, creator_tool=creator_tool)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, data)
    return Protected(data, composited)


def _opened(source: Path | Image.Image) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    with Image.open(source) as image:
        return ImageOps.exif_transpose(image)  # as uploaded: orientation applied
