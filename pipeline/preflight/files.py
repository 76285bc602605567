"""What preflight learns about one file: it exists, is a still PNG, JPEG or WebP, decodes, and
its size, mode and orientation (``ImageFacts``), from bytes ``preflight.reader`` read once.

Integrity is checked as cheaply as the format allows: PNG by ``verify()`` (every chunk's CRC, no
pixel decoding), JPEG decoded at 1/8 scale (still reads every byte), WebP by a full decode.

``glance_facts`` is the first run's cheaper look at a new photo that its upload will read anyway
(docs/ledger.md#stat-cache): the header and the end only (for WebP, its chunk headers). It
vouches for a file only when both say it is whole; anything else takes the full check, so its
messages are the same.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from pipeline.images.upload import is_16bit, orientation_of, upright
from pipeline.models import SIZES
from pipeline.preflight.maskfile import (
    MASK_MODES_AS_IS,
    content_notes,
    conversion_notes,
    is_all_black,
    mask_as_grayscale,
)
from pipeline.preflight.webp import webp_header

MAX_PIXELS = 80_000_000  # an 8000x8000 photo is scaled down (max_input_side); beyond: a bomb
LARGE_FILE_BYTES = 50 * 1024 * 1024  # OpenAI's documented cap per image file; not in the seeds
UNUSABLE_NAME = "is not a usable file name (it holds a NUL byte or an unencodable character)"
FOLDER_CACHE = 4096  # folders whose real path is remembered
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What preflight learnt about one file; shared by every job that uses it."""

    path: str  # the real path
    format: str  # PNG, JPEG or WebP
    width: int
    height: int
    mode: str
    notes: tuple[str, ...] = ()  # notices about the file, given once
    convert_mask: bool = False  # as a mask, it must be converted to grayscale before upload
    orientation: int = 1  # EXIF orientation; width and height above are already upright
    sixteen_bit: bool = False  # 16 bits per channel: uploaded converted to 8 bits
    edits_nothing: bool = False  # as a mask, all black: an error unless modifiers change it

    @property
    def planned_from(self) -> tuple[str, int, int, int, bool]:
        """What a plan made from the header decides by (``models.UnreadImage.expected``):
        format, upright width and height, orientation, 16-bit."""
        return (self.format, self.width, self.height, self.orientation, self.sixteen_bit)


def image_facts(real: str, data: bytes | None, size: int, max_pixels: int) -> ImageFacts | str:
    """The facts of an image file from its bytes (``data``; None: read from ``real``, for a
    file too large to hold), or why it cannot be used. ``size`` is the file's, from its stat."""

    def facts_of(image: Image.Image) -> ImageFacts:
        facts = _facts(real, image, _file_notes(size), data)
        _decode_cheaply(image)
        return facts

    return _inspect(real, data, max_pixels, facts_of)


def mask_facts(real: str, data: bytes | None, size: int, max_pixels: int) -> ImageFacts | str:
    """The facts of a mask file (its content warnings among the notes), or why it cannot be
    used; ``data`` and ``size`` as for ``image_facts``."""

    def facts_of(image: Image.Image) -> ImageFacts:
        image.load()  # the content checks need the pixels anyway
        gray = mask_as_grayscale(image)
        notes = (*_file_notes(size), *conversion_notes(image, gray), *content_notes(gray))
        facts = _facts(real, image, notes, data, convert_mask=image.mode not in MASK_MODES_AS_IS)
        return replace(facts, edits_nothing=is_all_black(gray))

    return _inspect(real, data, max_pixels, facts_of)


def _inspect(
    real: str,
    data: bytes | None,
    max_pixels: int,
    facts_of: Callable[[Image.Image], ImageFacts],
) -> ImageFacts | str:
    """The header checks both inspectors share, then ``facts_of`` the open image."""
    try:
        source: str | io.BytesIO = real if data is None else io.BytesIO(data)
        with bombs_refused(), Image.open(source) as image:
            problem = _header_problem(image, max_pixels)
            return problem if problem else facts_of(image)
    # Pillow's decoders raise many types on malformed data (OSError, SyntaxError,
    # ValueError, struct.error, ...); bad input must never end in a traceback.
    except Exception as exc:
        return failure(exc)


TRAILER = 12  # bytes read at the end of a file by ``glance_facts``
GLANCE_BUFFER = 8192  # bytes a read of ``glance_facts`` asks of the file system
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: empty, and its CRC
_JPEG_END = b"\xff\xd9"  # EOI


def glance_facts(real: str, size: int, max_pixels: int) -> ImageFacts | None:
    """A file's facts from its header and its end, when those say it is a whole, usable still
    image: what ``image_facts`` finds in such a file, without reading its pixel data. A PNG or
    JPEG is opened by Pillow, which reads the header only, and its last ``TRAILER`` bytes must
    be a whole file's end; a WebP, which Pillow would read whole, by its RIFF chunk headers
    (``preflight.webp``), which must end exactly at the file's end. None when anything is off
    (a problem, a truncated end, trailing bytes): ``image_facts`` then reads the file and says
    what is wrong."""
    try:
        # Buffered (a system call a block, not one per marker): a header costs a block or
        # two, the end one more.
        with open(real, "rb", buffering=GLANCE_BUFFER) as handle:
            head = handle.read(32)
            if head[:4] == b"RIFF":
                return _webp_glance(real, handle, head, size, max_pixels)
            handle.seek(0)
            with bombs_refused(), Image.open(handle) as image:
                if _header_problem(image, max_pixels) is not None:
                    return None
                facts = _facts(real, image, _file_notes(size), head)
            handle.seek(max(0, size - TRAILER))
            end = handle.read(TRAILER)
    except Exception:  # whatever Pillow raises: the full check says it in words
        return None
    return facts if _looks_whole(facts.format, end) else None


def _webp_glance(
    real: str, handle: BinaryIO, head: bytes, size: int, max_pixels: int
) -> ImageFacts | None:
    """``glance_facts`` of a WebP file: the facts ``_facts`` takes from Pillow's opened image,
    from the chunk headers; its orientation by Pillow's own rule, from the EXIF and XMP bytes."""
    header = webp_header(handle, head, size)
    if header is None or header.width * header.height > max_pixels:
        return None
    probe = Image.new("1", (1, 1))  # carries the metadata the way the opened file's info does
    for name, data in (("exif", header.exif), ("xmp", header.xmp)):
        if data is not None:
            probe.info[name] = data
    orientation = orientation_of(probe)
    width, height = upright(header.width, header.height, orientation)
    mode = "RGBA" if header.alpha else "RGB"
    return ImageFacts(real, "WebP", width, height, mode, _file_notes(size), False, orientation)


def _looks_whole(kind: str, end: bytes) -> bool:
    """Whether a file of this format ends where a whole one does (a cut-off copy does not)."""
    if kind == "PNG":
        return end == _PNG_END
    return kind == "JPEG" and end.endswith(_JPEG_END)


class RealPaths:
    """``os.path.realpath`` of input files at the cost of one ``lstat``: a folder's real path is
    remembered (a catalog has far fewer folders than files), so a file's is its folder's plus
    its name, unless the name itself is a symbolic link. Raises ValueError on a NUL byte."""

    def __init__(self, folders: int = FOLDER_CACHE) -> None:
        self._folder = lru_cache(maxsize=folders)(os.path.realpath)

    def __call__(self, path: str) -> str:
        return self.with_stat(path)[0]

    def with_stat(self, path: str) -> tuple[str, os.stat_result | None]:
        """The real path, and the file's stat when the one ``lstat`` taken is it (the name is
        no link): whoever checks the file next need not ask again."""
        folder, name = os.path.split(path)
        if not name or name in (os.curdir, os.pardir):
            return os.path.realpath(path), None
        candidate = os.path.join(self._folder(folder), name)
        try:
            info = os.lstat(candidate)
        except OSError:  # missing or unreadable: realpath keeps the name as written too
            return candidate, None
        if not stat.S_ISLNK(info.st_mode):
            return candidate, info
        return os.path.realpath(path), None


def folder_refusal(path: str, real: str, base: str | None, base_real: str) -> str | None:
    """Why the folder policy refuses ``path`` (``real`` once links are resolved), or None: a
    path written into the manifest's folder ``base`` (real: ``base_real``) must stay in it."""
    if base is None or not is_within(path, base) or is_within(real, base_real):
        return None
    return (
        f"leads outside the manifest's folder through a symbolic link (to {real}); "
        "write the real path if you mean that file"
    )


def is_within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both absolute and normalized)."""
    if path == folder:
        return True
    return path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


def unusable_file(info: os.stat_result) -> str | None:
    """Why a file with this stat cannot be an input (a folder, a FIFO, empty), or None."""
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        return "is not a regular file"
    if info.st_size == 0:
        return "is empty (0 bytes)"
    return None


def _file_notes(size: int) -> tuple[str, ...]:
    if size > LARGE_FILE_BYTES:
        megabytes = size / (1024 * 1024)
        return (f"is {megabytes:.0f} MB; gpt-image models take at most 50 MB per image",)
    return ()


@contextmanager
def bombs_refused() -> Iterator[None]:
    # Pillow only warns between its own pixel limit and twice that; make that a refusal too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def failure(exc: Exception) -> str:
    """Why a file could not be opened or decoded, in words."""
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return "is too large to be a real image (decompression bomb)"
    if isinstance(exc, UnidentifiedImageError):
        return "is not an image Pillow can read (PNG, JPEG or WebP)"
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    return f"is damaged or truncated: {exc}"


def _header_problem(image: Image.Image, max_pixels: int) -> str | None:
    kind = ACCEPTED_FORMATS.get(image.format or "")
    if kind is None:
        return f"is {image.format or 'an unknown format'}; the API takes PNG, JPEG or WebP"
    if image.width * image.height > max_pixels:
        return f"is {image.width}x{image.height}, more than {max_pixels / 1e6:g} megapixels"
    if kind != "JPEG" and getattr(image, "is_animated", False):
        return "is animated; the API takes still images (save one frame)"
    return None


def _decode_cheaply(image: Image.Image) -> None:
    if image.format == "PNG":
        image.verify()  # every chunk's CRC up to IEND: finds truncation without decoding pixels
        return
    if image.format in ("JPEG", "MPO"):
        # Decoding at 1/8 scale still reads every byte, so truncation shows, ~20x cheaper.
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()


def _facts(
    real: str,
    image: Image.Image,
    notes: tuple[str, ...],
    data: bytes | None,
    convert_mask: bool = False,
) -> ImageFacts:
    kind = ACCEPTED_FORMATS[image.format or ""]
    # PNG's eXIf chunk is read by Pillow only with the pixels, which would break verify(); phone
    # cameras write JPEG (or HEIC, refused), so PNG orientation is taken as upright.
    orientation = 1 if kind == "PNG" else orientation_of(image)
    width, height = upright(*image.size, orientation)  # every check sees the image upright
    if data is None:
        with open(real, "rb") as handle:
            data = handle.read(32)
    sixteen = is_16bit(image, data[:32])
    return ImageFacts(
        real, kind, width, height, image.mode, notes, convert_mask, orientation, sixteen
    )


def shown_path(path: str, base: str | None) -> str:
    """The path as short as it can be told: relative to the manifest's folder when inside."""
    return os.path.relpath(path, base) if base is not None and is_within(path, base) else path


@lru_cache(maxsize=4096)
def closest_size(width: int, height: int) -> str:
    """The allowed size whose aspect ratio is closest to ``width / height`` (ties: the first)."""
    ratio = math.log(width / height)

    def distance(size: str) -> float:
        size_width, size_height = (int(part) for part in size.split("x"))
        return abs(ratio - math.log(size_width / size_height))

    return min(SIZES, key=distance)
