"""A still WebP file's header facts from its RIFF chunks, without Pillow.

Pillow reads a WebP file whole just to open it (its decoder takes the bytes at once), so a
glance at a new WebP photo (``files.glance_facts``) reads the chunk headers itself. A WebP file
is a RIFF container: ``RIFF``, the size of what follows, ``WEBP``, then chunks, each a fourcc, a
little-endian length and that many bytes (padded to an even count). A simple file holds one
``VP8 `` (lossy) or ``VP8L`` (lossless) chunk; an extended one starts with ``VP8X`` (flags and
canvas size) and may hold ``ICCP``, ``ALPH``, ``EXIF``, ``XMP `` and, when animated, ``ANIM``
and ``ANMF``. The rules below are libwebp's (``WebPGetFeatures``), which Pillow asks for the
mode (RGBA or RGB): a lossy file has alpha when its ``VP8X`` flag says so, a lossless one when
its bitstream header's alpha bit does (that bit replaces the flag), and either when it holds an
``ALPH`` chunk.

Every doubt returns None: the caller then takes the full check (Pillow's decode), whose words
say what is wrong. What a header cannot show (damage inside the bitstream) is found by the
full check of the photo's bytes at upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

CHUNKS_MAX = 32  # a still photo has a handful (VP8X, ICCP, ALPH, VP8, EXIF, XMP)
METADATA_MAX = 1 << 16  # EXIF or XMP bytes read for the orientation; more: the full check
_HEADER = 30  # RIFF header (12), the first chunk's header (8) and its first 10 bytes
_ALPHA_FLAG = 0x10
_ANIMATION_FLAG = 0x02
_VP8_START = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F
_IMAGES = (b"VP8 ", b"VP8L")
_METADATA = (b"EXIF", b"XMP ")


@dataclass(frozen=True, slots=True)
class WebPHeader:
    width: int
    height: int
    alpha: bool  # decoded as RGBA (else RGB)
    exif: bytes | None  # the EXIF chunk's bytes, for the orientation
    xmp: bytes | None  # the XMP chunk's bytes (Pillow takes an orientation from there too)


@dataclass(frozen=True, slots=True)
class _Chunk:
    fourcc: bytes
    length: int
    lead: bytes  # what the glance needs of its bytes: an image chunk's first 10, metadata all


class _Doubt(Exception):
    """Something a glance cannot vouch for: the full check looks."""


def webp_header(handle: BinaryIO, head: bytes, size: int) -> WebPHeader | None:
    """The header facts of the still WebP file open as ``handle`` (``head``: its first 30
    bytes or more; ``size``: its length), or None when its chunks do not end exactly at the
    file's end, it is animated, or anything else is off."""
    try:
        return _header(handle, head, size)
    except _Doubt:
        return None


def _header(handle: BinaryIO, head: bytes, size: int) -> WebPHeader:
    _require(len(head) >= _HEADER and head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    _require(int.from_bytes(head[4:8], "little") + 8 == size)  # not cut off, nothing after
    chunks = _chunks(handle, size)
    kinds = [chunk.fourcc for chunk in chunks]
    images = [chunk for chunk in chunks if chunk.fourcc in _IMAGES]
    _require(len(images) == 1)
    width, height, lossless_alpha = _bitstream(images[0])
    if kinds[0] != b"VP8X":
        _require(len(chunks) == 1)  # a simple file is its image chunk
        return WebPHeader(width, height, bool(lossless_alpha), None, None)
    flags = head[20]
    # An animation: the full check refuses it in words.
    _require(not flags & _ANIMATION_FLAG and b"ANIM" not in kinds and b"ANMF" not in kinds)
    _require((_uint24(head, 24) + 1, _uint24(head, 27) + 1) == (width, height))
    alpha = bool(flags & _ALPHA_FLAG) if lossless_alpha is None else lossless_alpha
    return WebPHeader(
        width,
        height,
        alpha or b"ALPH" in kinds,
        _first(chunks, b"EXIF"),
        _first(chunks, b"XMP "),
    )


def _chunks(handle: BinaryIO, size: int) -> list[_Chunk]:
    """Every chunk after the RIFF header, in one pass forward (a block read where the chunks
    are, not one per chunk); they must end exactly at ``size``."""
    chunks: list[_Chunk] = []
    at = 12
    while at < size:
        _require(len(chunks) < CHUNKS_MAX)
        handle.seek(at)
        header = handle.read(8)
        _require(len(header) == 8)
        fourcc, length = header[:4], int.from_bytes(header[4:], "little")
        wanted = 10 if fourcc in _IMAGES else length if fourcc in _METADATA else 0
        _require(wanted <= length and wanted <= METADATA_MAX)
        lead = handle.read(wanted) if wanted else b""
        _require(len(lead) == wanted)
        chunks.append(_Chunk(fourcc, length, lead))
        at += 8 + length + (length & 1)
    _require(at == size and bool(chunks))
    return chunks


def _bitstream(chunk: _Chunk) -> tuple[int, int, bool | None]:
    """Width, height and, lossless, the alpha bit, from the image chunk's first bytes (with
    libwebp's checks of them)."""
    data = chunk.lead
    if chunk.fourcc == b"VP8 ":
        _require(data[3:6] == _VP8_START)
        tag = int.from_bytes(data[:3], "little")
        key_frame, profile, shown = not tag & 1, (tag >> 1) & 7, (tag >> 4) & 1
        _require(key_frame and profile <= 3 and bool(shown) and (tag >> 5) < chunk.length)
        width = int.from_bytes(data[6:8], "little") & 0x3FFF
        height = int.from_bytes(data[8:10], "little") & 0x3FFF
        _require(width > 0 and height > 0)
        return width, height, None
    _require(data[0] == _VP8L_SIGNATURE)
    bits = int.from_bytes(data[1:5], "little")
    _require(bits >> 29 == 0)  # the version: only 0 exists
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)


def _first(chunks: list[_Chunk], fourcc: bytes) -> bytes | None:
    """The first ``fourcc`` chunk's bytes (what Pillow's demuxer gives), None when none."""
    return next((chunk.lead for chunk in chunks if chunk.fourcc == fourcc), None)


def _require(condition: bool) -> None:
    if not condition:
        raise _Doubt


def _uint24(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 3], "little")
