"""The bytes uploaded for an input: upright, not larger than ``max_input_side``, 8-bit, typed.

docs/manifest.md#input-preparation: EXIF orientation is applied before anything else (a phone photo
stored 1200x800 with orientation 6 is an 800x1200 image to every check); inputs larger than
``max_input_side`` are scaled down before upload, masks by the image's factor (to the image's new
size exactly); the content type is the one the bytes have, not the file name's; 16-bit images become
8-bit.

A ``Recipe`` says what to do and is decided once per file from its header (``recipe_for``), so
preflight can check the upright size and the scheduler can make the same bytes later. When the
recipe is empty the file's bytes are uploaded as they are (no re-encoding, the digest stays the
file's). ``Recipe.token`` belongs in the content key: another ``max_input_side`` uploads other
bytes, so it must run again.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.images.masks import as_edit_mask

MAX_INPUT_SIDE = 2048
ORIENTATION_TAG = 0x0112
_SWAPS = frozenset({5, 6, 7, 8})  # orientations that turn the image a quarter
_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
}
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp"}
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True, slots=True)
class Recipe:
    """What to do to a file before upload; the empty recipe uploads the file as it is."""

    orientation: int = 1  # EXIF orientation to undo (1: none)
    size: tuple[int, int] | None = None  # the upright size to scale to, None: keep
    to_8bit: bool = False
    to_gray: bool = False  # a mask whose mode the API may not read (see preflight)

    @property
    def identity(self) -> bool:
        return self == Recipe()

    @property
    def token(self) -> str:
        """A short, stable text of the recipe for the content key ("" for the empty one)."""
        if self.identity:
            return ""
        parts = []
        if self.orientation != 1:
            parts.append(f"exif{self.orientation}")
        if self.size is not None:
            parts.append(f"fit{self.size[0]}x{self.size[1]}")
        if self.to_8bit:
            parts.append("8bit")
        if self.to_gray:
            parts.append("gray")
        return ";".join(parts)


@dataclass(frozen=True, slots=True)
class UploadBytes:
    data: bytes
    filename: str
    content_type: str

    @property
    def digest(self) -> str:
        """sha256 hex of ``data``: on demand, as the upload path never needs it (2 ms a 2 MB
        input when it was computed for every upload)."""
        return hashlib.sha256(self.data).hexdigest()


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 when absent or nonsense)."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block must not stop the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The image's size as a person sees it (EXIF orientation applied)."""
    return upright(*image.size, orientation_of(image))


def upright(width: int, height: int, orientation: int) -> tuple[int, int]:
    """A stored width and height as a person sees them under this EXIF orientation."""
    return (height, width) if orientation in _SWAPS else (width, height)


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """The size ``width`` x ``height`` is scaled to so its longer side is ``max_side``."""
    longest = max(width, height)
    if longest <= max_side:
        return None
    factor = max_side / longest
    return max(1, round(width * factor)), max(1, round(height * factor))


def is_16bit(image: Image.Image, header: bytes = b"") -> bool:
    """16 bits per channel: Pillow's I;16 modes, or a PNG whose IHDR says bit depth 16."""
    if image.mode in _SIXTEEN_BIT:
        return True
    # Pillow reads 48/64-bit RGB(A) PNGs as 8-bit RGB(A) and keeps no trace but the header.
    return image.format == "PNG" and len(header) > 24 and header[24] == 16


def recipe_for(
    image: Image.Image,
    header: bytes = b"",
    max_side: int = MAX_INPUT_SIDE,
    fit_to: tuple[int, int] | None = None,
    to_gray: bool = False,
) -> Recipe:
    """The recipe for an opened image. ``fit_to``: a mask's target (its image's new size)."""
    width, height = upright_size(image)
    size = fit_to if fit_to is not None and fit_to != (width, height) else None
    if fit_to is None:
        size = fitted_size(width, height, max_side)
    return Recipe(orientation_of(image), size, is_16bit(image, header), to_gray)


def recipe_for_file(
    path: str | Path, max_side: int = MAX_INPUT_SIDE, fit_to: tuple[int, int] | None = None
) -> Recipe:
    with open(path, "rb") as handle:
        header = handle.read(32)
    with Image.open(path) as image:
        return recipe_for(image, header, max_side, fit_to)


def prepare_upload(path: str | Path, recipe: Recipe, data: bytes | None = None) -> UploadBytes:
    """The bytes to upload for the file at ``path`` (a local file or a cached remote input);
    ``data``: its bytes, when the caller read them already."""
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        kind = image.format or ""
        if recipe.identity and kind in _CONTENT_TYPES:
            # As it is: only the name is corrected, so the content type matches the bytes.
            return _upload(data, path.stem + _EXTENSIONS[kind], _CONTENT_TYPES[kind])
        image.load()
        converted = _apply(image, recipe)
    fmt = "JPEG" if kind in ("JPEG", "MPO") and converted.mode in ("RGB", "L") else "PNG"
    buffer = io.BytesIO()
    if fmt == "JPEG":
        converted.save(buffer, format="JPEG", quality=95)
    else:
        converted.save(buffer, format="PNG")
    return _upload(buffer.getvalue(), path.stem + _EXTENSIONS[fmt], _CONTENT_TYPES[fmt])


def _apply(image: Image.Image, recipe: Recipe) -> Image.Image:
    result = ImageOps.exif_transpose(image) if recipe.orientation != 1 else image
    if recipe.to_8bit and result.mode in _SIXTEEN_BIT:
        # Scale 0-65535 to 0-255; Pillow's plain convert("L") would clip everything above 255.
        result = result.convert("I").point(lambda value: value / 256).convert("L")
    if recipe.to_gray and result.mode != "L":
        result = as_edit_mask(result)  # the one owner of the mask rule
    if recipe.size is not None and result.size != recipe.size:
        result = result.resize(recipe.size, Image.Resampling.LANCZOS)
    return result


def _upload(data: bytes, filename: str, content_type: str) -> UploadBytes:
    return UploadBytes(data, filename, content_type)
