"""The facts the marketplace checks judge, measured once per delivered image, cheaply.

Header facts (size, format, mode, ICC profile) come from Pillow's ``open``, which reads the
header only; the byte count is the file's; provenance is the IPTC ``DigitalSourceType`` in the
file's XMP, found by ``provenance.read_provenance`` walking the container's chunks (no pixel
is decoded for any of these).

Pixel facts (the border ring and the product's box) are measured only for the formats Amazon
takes, JPEG and PNG: any other format fails Amazon on its format whatever its pixels, and the
fit cannot change a format, so decoding one would buy nothing (a WebP costs 20-50 ms to decode
here). How each format is decoded, the cheapest way that stays honest:

- JPEG: Pillow's ``draft`` has libjpeg scale the DCT while decoding (1/8 for the API's sizes),
  so each pixel of the copy is the mean of an 8x8 block. The entropy decoding still reads
  every block, which is most of what is left (2-3 ms here for 1024x1024 and 1536x1024).
- PNG: a deflate stream cannot be skipped into and a row's filter may depend on the row above,
  so the whole image is decoded (14-22 ms here for 1024x1024 and 1536x1024, nearly all of the
  cost). No exact reading of a PNG from its bytes can be much cheaper: inflating the stream
  alone, nothing unfiltered, costs 10-17 ms here with zlib (4-6.5 ms with libdeflate), and the
  last rows (the ring's bottom, the product's lower edge) come out of it last. The ring is then
  read at full resolution (thin strips: exact and cheap) and the box on a copy reduced by the
  same power of two a JPEG's draft uses (``reduce``: ~1 ms; a full-size invert or
  ``getextrema`` costs 3-5 ms). A caller that already holds a PNG's pixels (it has just encoded
  them: lossless, so they are the file's) passes them, and nothing is decoded (~1.5 ms in all).

Definitions:

- The border ring is ``BORDER_RING_SHARE`` of the shorter side thick on each edge (16 px of a
  1024x1024 or 1536x1024 image; 2 px of a JPEG's 1/8 copy, i.e. its outer 16 px in block
  means). ``border_min`` is its lowest value in any colour channel, transparent pixels laid on
  white first; ``border_alpha_min`` its lowest alpha.
- The product is the bounding box of every pixel not pure white (255 in every channel), in
  full-size pixels. Found on a copy of 8x8 block means and rounded out to whole blocks: a
  block counts as product unless its mean rounds to white, so a speck a few levels off white
  is lost in its block, a visible pixel is not, and the fill is right to within a block or
  two (a JPEG's own fringe of non-white pixels around a product reaches 16 px, its MCU).
- ``fill`` is the product's longer extent over the image's longer side: a tall product in a
  wide frame fills only its height's share of the width.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import ParseError

import msgspec
from PIL import Image, ImageChops

from pipeline.errors import ImageCheckError, ProvenanceError
from pipeline.images.icc import profile_description
from pipeline.images.provenance import read_provenance

WORK_SIDE = 128  # the JPEG draft's target longer side (1/8 of a 1024 result)
BORDER_RING_SHARE = 1 / 64  # ring thickness per edge, as a share of the shorter side
WHITE = 255
MEASURED_FORMATS = frozenset({"jpeg", "png"})  # the formats Amazon takes: pixels measured
IPTC_SOURCE_TYPE_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"
UNNAMED_PROFILE = "(unnamed ICC profile)"
FILL_DECIMALS = 3
# What Pillow raises for bytes that are not a whole image it can read.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

Box = tuple[int, int, int, int]
ImageSource = bytes | Path


class ImageFacts(msgspec.Struct, frozen=True):
    """What was measured of one image: the checks' input, and what a page shows as "why"."""

    width: int
    height: int
    file_bytes: int
    format: str  # "png", "jpeg", "webp", ... (Pillow's format name, lower case)
    mode: str  # Pillow's mode: "RGB", "RGBA", "L", "P", "CMYK", ...
    icc: str = ""  # the ICC profile's description; "" when the file carries none
    provenance: str = ""  # the XMP's IPTC DigitalSourceType code; "" when absent
    border_min: int | None = None  # None: pixels not measured (a format Amazon refuses)
    border_alpha_min: int | None = None
    fill: float | None = None  # 0.0 when the image is all white
    product: Box | None = None  # (left, top, right, bottom), full-size pixels

    @property
    def longer_side(self) -> int:
        return max(self.width, self.height)


@dataclass(frozen=True)
class PixelFacts:
    border_min: int
    border_alpha_min: int
    product: Box | None
    fill: float


def read_source(source: ImageSource) -> bytes:
    return source.read_bytes() if isinstance(source, Path) else source


def measure(data: bytes, *, pixels: Image.Image | None = None) -> ImageFacts:
    """The facts of one encoded image; ``pixels``: a PNG's decoded pixels, if already held.

    Raises ``ImageCheckError`` (one line) when the bytes are not an image Pillow can read.
    """
    with open_image(data) as image:
        fmt = (image.format or "unknown").lower()
        facts = ImageFacts(
            width=image.width,
            height=image.height,
            file_bytes=len(data),
            format=fmt,
            mode=image.mode,
            icc=_profile_name(image.info.get("icc_profile")),
            provenance=source_type(data),
        )
        if fmt not in MEASURED_FORMATS:
            return facts
        if pixels is not None and (fmt != "png" or pixels.size != image.size):
            raise ValueError("pixels can stand in only for a PNG's own pixels, at its size")
        try:
            work = pixels if pixels is not None else _decoded(image)  # a draft shrinks image
            found = measure_pixels(work, (facts.width, facts.height))
        except UNREADABLE as exc:
            raise ImageCheckError(f"image does not decode ({exc})") from exc
    return msgspec.structs.replace(
        facts,
        border_min=found.border_min,
        border_alpha_min=found.border_alpha_min,
        fill=found.fill,
        product=found.product,
    )


def open_image(data: bytes) -> Image.Image:
    """Pillow's lazy image over ``data`` (header read); ``ImageCheckError`` if it is none."""
    try:
        return Image.open(io.BytesIO(data))
    except UNREADABLE as exc:
        raise ImageCheckError(f"not an image Pillow can read ({exc})") from exc


def source_type(data: bytes) -> str:
    """The IPTC DigitalSourceType code in the file's XMP ("" when none): no pixel decoded."""
    try:
        found = read_provenance(data)
    except (ProvenanceError, ParseError):
        return ""  # a container the XMP reader cannot walk carries no provenance it can see
    value = (found or {}).get("digital_source_type", "")
    if value.startswith(IPTC_SOURCE_TYPE_PREFIX):
        return value[len(IPTC_SOURCE_TYPE_PREFIX) :]
    return value


def measure_pixels(image: Image.Image, full_size: tuple[int, int]) -> PixelFacts:
    """Ring and product of ``image`` (the full image or a reduced copy of ``full_size``).

    The ring is read at the resolution given (a few thin strips: cheap); the product's box on a
    copy reduced to about ``WORK_SIDE`` (block means), because any pass over every pixel of the
    full image costs milliseconds (a full-size invert or ``getextrema`` is 3-5 ms here).
    """
    image = _eight_bit(image)
    border_min, border_alpha_min = _ring_minima(image)
    small = reduced(image)
    box = non_white_box(_opaque(small))
    product = None if box is None else _scaled(box, small.size, full_size)
    return PixelFacts(border_min, border_alpha_min, product, _fill(product, full_size))


def reduced(image: Image.Image) -> Image.Image:
    """``image`` shrunk to a longer side of ``WORK_SIDE`` to twice that, by block means.

    The factor is a power of two, as a JPEG's DCT scaling is: a PNG and a JPEG of the same
    picture are measured on the same blocks (8x8 for the API's sizes).
    """
    factor = 1 << max(0, (max(image.size) // WORK_SIDE).bit_length() - 1)
    return image.reduce(factor) if factor > 1 else image


def _ring_minima(image: Image.Image) -> tuple[int, int]:
    """The ring's lowest colour value (transparent pixels laid on white) and lowest alpha."""
    colour, alpha = WHITE, WHITE
    for box in ring_boxes(image.size):
        strip = image.crop(box)
        if "A" in strip.getbands():
            alpha = min(alpha, _band_minima(strip)[strip.getbands().index("A")])
            strip = on_white(strip)
        colour = min(colour, *_band_minima(strip))
    return colour, alpha


def ring_boxes(size: tuple[int, int]) -> list[Box]:
    """The four strips of the border ring (top, bottom, then the sides between them)."""
    width, height = size
    thickness = max(1, round(min(size) * BORDER_RING_SHARE))
    boxes = [(0, 0, width, thickness), (0, height - thickness, width, height)]
    if height > 2 * thickness:
        boxes += [
            (0, thickness, thickness, height - thickness),
            (width - thickness, thickness, width, height - thickness),
        ]
    return boxes


def non_white_box(image: Image.Image) -> Box | None:
    """Bounding box of the pixels not pure white in every colour channel (None: all white)."""
    # Inverted, pure white is the only all-zero colour; alpha (inverted too) is left out.
    return ImageChops.invert(image).getbbox(alpha_only=False)


def on_white(image: Image.Image) -> Image.Image:
    """``image`` (with alpha) laid on pure white: RGB, what a shop shows of it."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (WHITE, WHITE, WHITE, WHITE))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _decoded(image: Image.Image) -> Image.Image:
    """The pixels to measure: a JPEG decoded at 1/2, 1/4 or 1/8 (the largest not below
    ``WORK_SIDE``), anything else in full."""
    if image.format == "JPEG":
        width, height = image.size
        longer = max(width, height)
        target = (max(1, width * WORK_SIDE // longer), max(1, height * WORK_SIDE // longer))
        image.draft(None, target)
    image.load()
    return image


def _eight_bit(image: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA; other modes converted (CMYK naively: its verdict is colour anyway)."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    return image.convert("RGB")


def _band_minima(image: Image.Image) -> list[int]:
    extrema = image.getextrema()
    if len(image.getbands()) == 1:
        return [int(extrema[0])]  # type: ignore[arg-type]
    return [int(band[0]) for band in extrema]  # type: ignore[index]


def _opaque(image: Image.Image) -> Image.Image:
    """``image`` laid on white when it has any transparency, else itself."""
    if "A" not in image.getbands():
        return image
    alpha = _band_minima(image)[image.getbands().index("A")]
    return on_white(image) if alpha < WHITE else image


def _scaled(box: Box, size: tuple[int, int], full_size: tuple[int, int]) -> Box:
    """A box on a copy reduced by a whole factor, in full-size pixels: whole blocks, clipped."""
    factor = round(max(full_size) / max(size))
    left, top, right, bottom = (edge * factor for edge in box)
    return (left, top, min(full_size[0], right), min(full_size[1], bottom))


def _fill(product: Box | None, full_size: tuple[int, int]) -> float:
    if product is None:
        return 0.0
    left, top, right, bottom = product
    return round(max(right - left, bottom - top) / max(full_size), FILL_DECIMALS)


def _profile_name(profile: object) -> str:
    if not isinstance(profile, bytes) or not profile:
        return ""
    return profile_description(profile) or UNNAMED_PROFILE
