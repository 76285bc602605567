"""Masks that need not be files: where a job's edit goes, as a recipe rendered per image.

A ``MaskRecipe`` is a source (a file, the image's own transparency, a box or an ellipse) and three
modifiers applied in this order: ``invert``, ``grow``, ``feather``. ``render_mask`` turns it into
the mask the API gets: mode ``L``, white = edit, exactly the image's size. Everything here is
pure and deterministic: the same recipe on the same image gives the same bytes, so a generated
mask can be keyed by ``recipe_token`` and uploaded once per distinct PNG (``mask_png_bytes``).

Decisions:

- Coordinates are fractions of the image's width and height when all four are within 0..1
  (``box:0,0.7,1,1`` is the bottom 30 %), else whole pixels of the image as a person sees it
  (EXIF orientation applied, before any downscale for upload: scale the mask with the image).
  A box covers ``[x0, x1) x [y0, y1)``; fractions map to ``round(f * side)``.
- ``alpha``: transparent = edit (OpenAI's convention for gpt-image masks), so the mask is
  ``255 - alpha``. An image without transparency is an error, not an all-black mask.
- A file mask with the image's aspect ratio (within 1 %) but another size is scaled (bilinear)
  and a note says so; another aspect ratio is an error: stretching it would move the edit.
- ``grow`` (px) dilates the edit area with a square window of side ``2 * grow + 1``, exactly
  what ``ImageFilter.MaxFilter`` does, computed in O(log grow) separable passes of shifted
  maxima (``MaxFilter`` costs O(grow²) per pixel: 2 s at grow=24 on a megapixel). Negative
  values shrink. Pixels outside the image count as neither edit nor keep.
- ``feather`` (px) is the width of the soft edge, centered on the hard one: one box blur of
  radius ``feather / 2``, so the ramp is linear and pixels more than ``feather / 2`` px from the
  edge keep their exact value (a Gaussian never quite ends, and ``protect`` promises the
  source's own pixels outside the band).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, cast

from PIL import Image, ImageChops, ImageDraw

from pipeline.errors import MaskError
from pipeline.images.mask_pixels import (  # re-exported: the pixel work lives there
    feather_mask,
    feather_reach,
    grow_mask,
    mask_overlay,
    mask_png_bytes,
    write_mask_preview,
)

# Mask content thresholds on 0-255 luminance (white = edit); the same as preflight's.
NEAR_BLACK = 8
NEAR_WHITE = 247
MID_GRAY = range(64, 192)
MID_GRAY_SHARE = 0.5
ASPECT_TOLERANCE = 0.01
MAX_MODIFIER_PX = 512  # a larger grow or feather is a typo (and would take a while)
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
ALL_BLACK_ERROR = "edits nothing (all black after modifiers): it would buy an unchanged image"
TOKEN_VERSION = "mask1"  # bump when rendering changes, so old content keys run again

ShapeKind = Literal["box", "ellipse"]
_SHAPE = re.compile(r"^\s*(box|ellipse)\s*:(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class ShapeSource:
    """A box or ellipse: white inside. ``fractions`` tells how to read ``coords``."""

    kind: ShapeKind
    coords: tuple[float, float, float, float]
    fractions: bool

    def canonical(self) -> str:
        return f"{self.kind}:" + ",".join(_number(v) for v in self.coords)

    def pixel_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` in pixels, end exclusive; MaskError when outside the image."""
        width, height = size
        x0, y0, x1, y1 = self.coords
        if self.fractions:
            box = (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
        else:
            box = (int(x0), int(y0), int(x1), int(y1))
            if box[2] > width or box[3] > height:
                raise MaskError(
                    f"{self.canonical()}: reaches beyond the image ({width}x{height} px); "
                    "use fractions 0..1 for images of different sizes"
                )
        if box[0] >= box[2] or box[1] >= box[3]:
            raise MaskError(
                f"{self.canonical()}: covers no whole pixel of a {width}x{height} image"
            )
        return box


@dataclass(frozen=True, slots=True)
class AlphaSource:
    """The image's own transparency: transparent = edit."""

    def canonical(self) -> str:
        return "alpha"


@dataclass(frozen=True, slots=True)
class FileSource:
    """A mask image file (path as written in the manifest; keyed by its bytes, not its path)."""

    path: str

    def canonical(self) -> str:
        return "file"


MaskSource = ShapeSource | AlphaSource | FileSource


@dataclass(frozen=True, slots=True)
class MaskRecipe:
    source: MaskSource
    invert: bool = False
    grow: int = 0
    feather: int = 0

    def canonical(self) -> str:
        """The recipe as text: equal recipes give equal text (file paths left out)."""
        return (
            f"{self.source.canonical()};invert={int(self.invert)};"
            f"grow={self.grow};feather={self.feather}"
        )

    @property
    def generated(self) -> bool:
        """True when the uploaded mask is made here (anything but an unmodified file)."""
        return not isinstance(self.source, FileSource) or self.has_modifiers

    @property
    def has_modifiers(self) -> bool:
        return self.invert or self.grow != 0 or self.feather != 0


@dataclass(frozen=True, slots=True)
class RenderedMask:
    mask: Image.Image  # mode L, the image's size, white = edit
    notes: tuple[str, ...] = ()  # things worth telling the user (e.g. "scaled from 512x512")


@dataclass(frozen=True, slots=True)
class MaskStats:
    coverage: float  # mean luminance / 255: the share of the image that will be edited
    darkest: int
    brightest: int
    mid_gray_share: float

    @property
    def all_black(self) -> bool:
        return self.brightest <= NEAR_BLACK

    @property
    def all_white(self) -> bool:
        return self.darkest >= NEAR_WHITE

    @property
    def mostly_mid_gray(self) -> bool:
        return self.mid_gray_share > MID_GRAY_SHARE

    def error(self) -> str | None:
        """Why this mask must not be sent, or None."""
        if self.all_black:
            return ALL_BLACK_ERROR
        return None

    def warnings(self) -> list[str]:
        if self.all_black:
            return []
        if self.all_white:
            return ["is all white: the whole image will be regenerated"]
        if self.mostly_mid_gray:
            return [
                f"is mostly mid-gray ({self.mid_gray_share:.0%}), low contrast: edits will "
                "only blend; use white to edit and black to keep"
            ]
        return []


# --- parsing -------------------------------------------------------------------------------


def parse_mask_spec(text: str) -> MaskSource | str:
    """``alpha``, ``box:x0,y0,x1,y1``, ``ellipse:...`` or a file path; a str is an error message.

    Tolerant of spaces and letter case (``Box: 0, 0.7, 1, 1`` from a CSV cell). A file actually
    named ``alpha`` is written ``./alpha``.
    """
    stripped = text.strip()
    if not stripped:
        return "is empty: give a file path, alpha, box:x0,y0,x1,y1 or ellipse:x0,y0,x1,y1"
    if stripped.lower() == "alpha":
        return AlphaSource()
    match = _SHAPE.match(stripped)
    if match is None:
        return FileSource(stripped)
    kind = match.group(1).lower()
    return _parse_shape(kind, match.group(2))  # type: ignore[arg-type]


def _parse_shape(kind: ShapeKind, body: str) -> ShapeSource | str:
    parts = [p.strip() for p in body.split(",")]
    usage = f"{kind}: needs 4 numbers x0,y0,x1,y1 (fractions 0..1 or pixels)"
    if len(parts) != 4 or not all(parts):
        return f"{usage}, got {body.strip()!r}"
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        return f"{usage}, got {body.strip()!r}"
    problem = _coords_problem(kind, values)  # type: ignore[arg-type]
    if problem:
        return problem
    fractions = all(v <= 1 for v in values)
    return ShapeSource(kind, values, fractions)  # type: ignore[arg-type]


def _coords_problem(kind: str, values: tuple[float, float, float, float]) -> str | None:
    names = ("x0", "y0", "x1", "y1")
    for name, value in zip(names, values, strict=True):
        if not math.isfinite(value):
            return f"{kind}: {name} is not a number"
        if value < 0:
            return f"{kind}: {name} must not be negative (got {_number(value)})"
    if not all(v <= 1 for v in values):
        odd = [f"{n}={_number(v)}" for n, v in zip(names, values, strict=True) if v != int(v)]
        if odd:
            return (
                f"{kind}: fractions must be within 0..1 and pixels whole numbers: "
                f"{', '.join(odd)} is neither"
            )
    x0, y0, x1, y1 = values
    if x0 >= x1:
        return f"{kind}: x0 must be < x1 (got {_number(x0)} and {_number(x1)})"
    if y0 >= y1:
        return f"{kind}: y0 must be < y1 (got {_number(y0)} and {_number(y1)})"
    return None


def modifier_problem(name: str, value: object) -> str | None:
    """Validation of ``mask_grow`` / ``mask_feather`` values (feather may not be negative)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be a whole number of pixels, got {value!r}"
    low = 0 if name == "mask_feather" else -MAX_MODIFIER_PX
    if not low <= value <= MAX_MODIFIER_PX:
        return f"{name} must be within {low}..{MAX_MODIFIER_PX} px, got {value}"
    return None


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


# --- rendering -----------------------------------------------------------------------------


def render_mask(
    recipe: MaskRecipe,
    image_size: tuple[int, int],
    *,
    source_image: Image.Image | None = None,
    mask_file_image: Image.Image | None = None,
) -> RenderedMask:
    """The effective mask (mode L, ``image_size``, white = edit); MaskError names a problem.

    ``source_image`` is needed for ``alpha``, ``mask_file_image`` for a file source (both as
    the user sees them: EXIF orientation already applied).
    """
    base, notes = _base_mask(recipe.source, image_size, source_image, mask_file_image)
    if recipe.invert:
        base = ImageChops.invert(base)
    if recipe.grow:
        base = grow_mask(base, recipe.grow)
    if recipe.feather:
        base = feather_mask(base, recipe.feather)
    return RenderedMask(base, notes)


def _base_mask(
    source: MaskSource,
    size: tuple[int, int],
    source_image: Image.Image | None,
    mask_file_image: Image.Image | None,
) -> tuple[Image.Image, tuple[str, ...]]:
    if isinstance(source, ShapeSource):
        return draw_shape(source, size), ()
    if isinstance(source, AlphaSource):
        if source_image is None:
            raise ValueError("render_mask: alpha needs source_image")
        return alpha_mask(source_image), ()
    if mask_file_image is None:
        raise ValueError("render_mask: a file mask needs mask_file_image")
    return fit_file_mask(as_edit_mask(mask_file_image), size)


def draw_shape(shape: ShapeSource, size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    x0, y0, x1, y1 = shape.pixel_box(size)
    draw = ImageDraw.Draw(mask)
    if shape.kind == "box":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)  # PIL's rectangle includes x1
    else:
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    return mask


def alpha_mask(image: Image.Image) -> Image.Image:
    alpha = alpha_band(image)
    if alpha is None:
        raise MaskError(
            f"alpha: the image has no transparency (mode {image.mode}, no alpha channel)"
        )
    if _darkest(alpha) == 255:
        raise MaskError("alpha: the image has no transparency (every pixel is opaque)")
    return ImageChops.invert(alpha)


def as_edit_mask(image: Image.Image) -> Image.Image:
    """A mask file as the API reads it: mode L, white = edit (transparency wins when present)."""
    if image.mode == "L":
        return image
    alpha = alpha_band(image)
    if alpha is not None and _darkest(alpha) < 255:
        return ImageChops.invert(alpha)
    return image.convert("L")


def _darkest(band: Image.Image) -> int:
    low, _high = cast("tuple[int, int]", band.getextrema())  # one band: (min, max)
    return low


def alpha_band(image: Image.Image) -> Image.Image | None:
    """The image's transparency as one band, or None if it has none."""
    if image.mode in ALPHA_MODES:
        return image.getchannel("A")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def fit_file_mask(mask: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[str, ...]]:
    """The mask at ``size``: as is, scaled with a note (same aspect), or MaskError."""
    if mask.size == size:
        return mask, ()
    (mw, mh), (iw, ih) = mask.size, size
    if abs(mw * ih - iw * mh) > ASPECT_TOLERANCE * iw * mh:
        raise MaskError(
            f"is {mw}x{mh}, another shape than the image ({iw}x{ih}): "
            "a mask must have the image's aspect ratio"
        )
    scaled = mask.resize(size, Image.Resampling.BILINEAR)
    return scaled, (f"scaled from {mw}x{mh} to {iw}x{ih}",)


# --- keys, checks, upload ------------------------------------------------------------------


def recipe_token(recipe: MaskRecipe, image_digest: str, file_digest: str | None = None) -> str:
    """What a generated mask adds to the content key: the recipe, the image's and file's digests.

    The image digest is in even for shapes: pixel boxes depend on the image's size, and the
    digest is what identifies the image everywhere else in the key.
    """
    if isinstance(recipe.source, FileSource) and file_digest is None:
        raise ValueError("recipe_token: a file mask needs its file_digest")
    parts = [TOKEN_VERSION, recipe.canonical(), f"image={image_digest}"]
    if file_digest is not None:
        parts.append(f"file={file_digest}")
    return "|".join(parts)


def mask_stats(mask: Image.Image) -> MaskStats:
    """Coverage and contrast of the effective mask (the full image: a tiny box must count)."""
    gray = mask if mask.mode == "L" else mask.convert("L")
    histogram = gray.histogram()
    total = max(1, sum(histogram))
    darkest, brightest = cast("tuple[int, int]", gray.getextrema())
    mean = sum(value * count for value, count in enumerate(histogram)) / total
    mid = sum(histogram[MID_GRAY.start : MID_GRAY.stop]) / total
    return MaskStats(mean / 255, int(darkest), int(brightest), mid)


__all__ = [
    "feather_mask",
    "feather_reach",
    "grow_mask",
    "mask_overlay",
    "mask_png_bytes",
    "write_mask_preview",
]
