"""A result is verified before it is stored: a whole image of the size asked for.

``ResultStream`` checks a downloaded result, and marks its provenance, while it streams to its
file; ``check_image`` checks a whole file (what the stream cannot settle alone).

``check_image`` + ``Store.mark_provenance`` used to reopen every result twice after the
download: Pillow read its header, the whole file was read back, and written again with the XMP
packet (docs/ledger.md#provenance) under a new name, then renamed. For a 2 MB PNG that was
about 4 ms of CPU a job, more than the download itself. A ``ResultStream`` sits between the
HTTP body and the file instead and does the same in one pass, holding only the PNG's head (the
chunks before the first ``IDAT``, a few hundred bytes) and the last few bytes:

- header first bytes: the PNG signature and ``IHDR`` (width, height), checked against the
  size asked for and a pixel cap;
- the packet: the ``iTXt`` XMP chunk is written before the first ``IDAT``, exactly where
  ``provenance.add_provenance`` puts it (byte for byte the same file), an XMP chunk of the
  API's own in the head dropped as it drops it;
- end marker last bytes: the stream must end with the ``IEND`` chunk, walked to from chunk
  header to chunk header (lengths, not CRCs: TCP checksums the bytes, and the client refuses a
  body shorter than its Content-Length);
- length: the client counts the body against Content-Length and the download limit.

What the stream cannot settle alone it leaves to the whole-file path (``verdict`` returns
None): JPEG and WebP results (their marker goes at the end, or after segments of any length),
and a PNG with an XMP chunk after its image data. Those are checked and marked as before.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from functools import cache
from pathlib import Path
from typing import Protocol

from PIL import Image

from pipeline.errors import BadResponse
from pipeline.images.provenance import PNG_SIGNATURE, PNG_XMP_KEYWORD, xmp_packet

MAX_RESULT_PIXELS = 64_000_000  # no edit is larger
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
MAX_HEAD = 1 << 20  # bytes held before the first IDAT; past this the whole-file path decides
_HEADER = struct.Struct(">I4s")
_XMP_PREFIX = PNG_XMP_KEYWORD + b"\x00"
_IHDR_END = len(PNG_SIGNATURE) + 16  # the signature, IHDR's length and type, width, height
_CARRY = 32  # bytes kept from the previous piece: a chunk header may straddle two pieces


class Writable(Protocol):
    """Where the checked bytes go: the open temporary file."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


@cache
def xmp_chunk(creator_tool: str) -> bytes:
    """The PNG ``iTXt`` chunk carrying the provenance packet (uncompressed, no language)."""
    payload = PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + xmp_packet(creator_tool)
    crc = zlib.crc32(payload, zlib.crc32(b"iTXt"))
    return struct.pack(">I", len(payload)) + b"iTXt" + payload + struct.pack(">I", crc)


class ResultStream:
    """One result's bytes on their way to disk: ``writer`` is what the client writes to.

    ``creator_tool`` None: write the bytes as received (a protected job keeps the API's own
    image and marks the composite it makes from it).
    """

    def __init__(self, expected: tuple[int, int] | None, creator_tool: str | None) -> None:
        self._expected = expected
        self._chunk = xmp_chunk(creator_tool) if creator_tool is not None else None
        self._out: Writable | None = None
        self._start()

    def _start(self) -> None:
        self._head = bytearray()
        self._drop: list[tuple[int, int]] = []  # XMP chunks in the head, left out of the file
        self._holding = True  # the head is held until its insertion point (first IDAT) is seen
        self._png: bool | None = None  # None: too few bytes yet to tell
        self._received = 0  # bytes of the body seen (offsets below are in the body)
        self._next = len(PNG_SIGNATURE)  # where the next chunk header starts
        self._carry = b""  # the last bytes of the body seen so far
        self._end: int | None = None  # where the IEND chunk ends
        self._undecided = False  # something only the whole file can settle
        self.written = 0  # bytes written to the file

    # -- the writer the client streams into ---------------------------------------------------

    def writer(self, out: Writable) -> ResultStream:
        """Start a body written to ``out`` (each URL the client tries starts afresh)."""
        self._out = out
        self._start()
        return self

    def write(self, data: bytes) -> None:
        if self._holding:
            self._head += data
            self._read_head()
        else:
            self._emit(data)
            self._walk(data)

    def finish(self) -> None:
        """The body ended: anything still held goes to the file as it is."""
        if self._holding:
            self._holding, self._undecided = False, True
            self._emit(bytes(self._head))
            self._head.clear()

    # -- the outcome --------------------------------------------------------------------------

    def verdict(self) -> str | None:
        """``"png"`` for a whole PNG of the expected size, marked if asked; BadResponse for a
        broken one; None when the whole-file check must decide (not a PNG, or unusual)."""
        if self._png is not True or self._undecided:
            return None
        if self._end != self._received or not self._carry.endswith(PNG_END):
            raise BadResponse("result is truncated (no PNG end chunk)")
        return "png"

    # -- the head: signature, IHDR, everything before the first IDAT --------------------------

    def _read_head(self) -> None:
        head = self._head
        if len(head) < _IHDR_END:
            return  # signature, IHDR's header, width and height: not all here yet
        if self._png is None:
            self._png = head.startswith(PNG_SIGNATURE)
            if not self._png:  # not ours to walk: written through, decided from the file
                self._undecided = True
                self._release(len(head), [])
                return
            self._check_ihdr(head)
        drop = self._drop
        while self._next + 8 <= len(head):
            length, kind = _HEADER.unpack_from(head, self._next)
            start, end = self._next, self._next + 12 + length
            if kind == b"IDAT":
                self._release(start, drop)
                return
            if kind == b"iTXt":
                if end > len(head):
                    return  # wait for the whole chunk: it may be an XMP one, to drop
                if head.startswith(_XMP_PREFIX, start + 8):
                    drop.append((start, end))
            self._next = end
        if len(head) > MAX_HEAD:
            self._undecided = True
            self._release(len(head), [])

    def _check_ihdr(self, head: bytearray) -> None:
        _, kind = _HEADER.unpack_from(head, len(PNG_SIGNATURE))
        if kind != b"IHDR":
            raise BadResponse("result does not decode as an image (a PNG without IHDR)")
        width, height = struct.unpack_from(">II", head, len(PNG_SIGNATURE) + 8)
        if width * height > MAX_RESULT_PIXELS:
            raise BadResponse(f"result is {width}x{height}, too large to be an edit")
        expected = self._expected
        if expected is not None and (width, height) != expected:
            raise BadResponse(f"result is {width}x{height}, expected {expected[0]}x{expected[1]}")

    def _release(self, insert_at: int, drop: list[tuple[int, int]]) -> None:
        """Write the held head, the packet at ``insert_at`` (the first IDAT) and the earlier
        XMP chunks left out, then stream everything after it as it comes."""
        head, self._head = bytes(self._head), bytearray()
        self._holding = False
        view, kept = memoryview(head), 0
        for start, end in drop:
            self._emit(view[kept:start])
            kept = end
        self._emit(view[kept:insert_at])
        if not self._undecided and self._chunk is not None:
            self._emit(self._chunk)
        self._emit(view[insert_at:])
        self._walk(head)  # from the IDAT header on: the offsets are the body's

    # -- the body: chunk headers only, to find where IEND ends -------------------------------

    def _walk(self, data: bytes | bytearray) -> None:
        base = self._received
        self._received += len(data)
        if self._png:
            while self._end is None and self._next + 8 <= self._received:
                header = self._bytes_at(self._next, 8 + len(_XMP_PREFIX), base, data)
                length, kind = _HEADER.unpack_from(header)
                if kind == b"iTXt" and _XMP_PREFIX.startswith(header[8:]):
                    # Maybe an XMP chunk after the image data (its keyword not all here, or
                    # it): the whole-file path replaces it.
                    self._undecided = True
                if kind == b"IEND":
                    self._end = self._next + 12 + length
                self._next += 12 + length
        self._carry = (self._carry + bytes(data[-_CARRY:]))[-_CARRY:]

    def _bytes_at(self, offset: int, count: int, base: int, data: bytes | bytearray) -> bytes:
        """Up to ``count`` body bytes from ``offset``, from this piece or the carried tail."""
        if offset >= base:
            return bytes(data[offset - base : offset - base + count])
        before = self._carry[len(self._carry) - (base - offset) :]
        return (before + bytes(data[: count - len(before)]))[:count]

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._out is None:
            raise RuntimeError("ResultStream.write before writer()")
        self._out.write(data)
        self.written += len(data)


FORMAT_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def check_image(path: Path, expected_size: tuple[int, int] | None) -> str:
    """The file's extension if it is a whole image of the expected size, else BadResponse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                fmt, size = image.format, image.size
                if size[0] * size[1] > MAX_RESULT_PIXELS:
                    raise BadResponse(f"result is {size[0]}x{size[1]}, too large to be an edit")
                if fmt == "PNG":
                    _check_png_end(path)
                else:
                    image.verify()  # JPEG and WebP: Pillow checks nothing more than the header
    except BadResponse:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise BadResponse(f"result does not decode as an image ({exc})") from exc
    if fmt not in FORMAT_EXTENSIONS:
        raise BadResponse(f"result is a {fmt} image; expected PNG, JPEG or WebP")
    if expected_size is not None and size != expected_size:
        raise BadResponse(
            f"result is {size[0]}x{size[1]}, expected {expected_size[0]}x{expected_size[1]}"
        )
    return FORMAT_EXTENSIONS[fmt]


def _check_png_end(path: Path) -> None:
    """A PNG is whole if it ends with its IEND chunk.

    Headers and the last 12 bytes, not a CRC pass over every chunk (``Image.verify``): that
    read the whole result again and cost about 1.5 ms of CPU per 2 MB result, more than anything
    else the pipeline did per job. The client already refuses a body shorter than its
    Content-Length, and TCP checksums the bytes; what is left to catch is a result cut short.
    """
    with path.open("rb") as handle:
        if handle.seek(0, os.SEEK_END) < len(PNG_END):
            raise BadResponse("result is truncated (no PNG end chunk)")
        handle.seek(-len(PNG_END), os.SEEK_END)
        if handle.read() != PNG_END:
            raise BadResponse("result is truncated (no PNG end chunk)")


def parse_size(size: str) -> tuple[int, int] | None:
    width, _, height = size.partition("x")
    return (int(width), int(height)) if width.isdigit() and height.isdigit() else None
