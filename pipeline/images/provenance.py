"""Provenance: an XMP packet saying "AI-edited" in every delivered image, pixels untouched.

``add_provenance(data, creator_tool=...)`` inserts the packet into the file's container and
never decodes or re-encodes pixels (so it costs a copy of the bytes, not an encode):

- PNG: an ``iTXt`` chunk, keyword ``XML:com.adobe.xmp``, uncompressed, before the first
  ``IDAT`` (where exiftool and Adobe's readers look), CRC computed.
- JPEG: an ``APP1`` segment ``http://ns.adobe.com/xap/1.0/\\0`` + packet, after ``SOI`` and
  any leading ``APP0`` (JFIF) and ``APP1`` (Exif) segments, which must stay first.
- WebP: an ``XMP `` chunk at the end (the container's required order). A simple file (one
  ``VP8 `` or ``VP8L`` chunk) becomes extended: a ``VP8X`` chunk with the XMP flag and the
  canvas size read from the bitstream's header (and the alpha flag from VP8L's header). An
  existing ``VP8X`` gets the XMP flag set. The RIFF size is fixed.

Idempotent: an XMP packet already in the file is replaced (never a second one), and a file
that already carries exactly this packet comes back unchanged. The images the API returns
carry no XMP of their own, so replacing loses nothing of theirs.

``read_provenance(data)`` finds the packet again, for tests and for the export command.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from pipeline.durability import atomic_write
from pipeline.errors import ProvenanceError

DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
JPEG_MAX_SEGMENT = 65535 - 2  # a segment's payload, length field excluded
WEBP_XMP_FLAG = 0x04
WEBP_ALPHA_FLAG = 0x10

_PACKET = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="{rdf}">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="{iptc}"
    xmlns:xmp="{xmp}"
    Iptc4xmpExt:DigitalSourceType="{source_type}"
    xmp:CreatorTool={tool}/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def xmp_packet(creator_tool: str) -> bytes:
    """The XMP packet (UTF-8): the IPTC digital source type and the creator tool."""
    return _PACKET.format(
        rdf=RDF_NS,
        iptc=IPTC_EXT_NS,
        xmp=XMP_NS,
        source_type=DIGITAL_SOURCE_TYPE,
        tool=quoteattr(creator_tool),
    ).encode()


Pieces = list[bytes | memoryview]


def add_provenance(data: bytes, *, creator_tool: str) -> bytes:
    """``data`` with the provenance packet inserted (or replaced); pixels untouched.

    Returns ``data`` itself when it already carries exactly this packet. Building the new
    bytes copies the file once (~0.1 ms per MB); ``provenance_pieces`` + ``write_pieces``
    write the file without that copy.
    """
    pieces = provenance_pieces(data, creator_tool=creator_tool)
    return data if pieces is None else b"".join(pieces)


def provenance_pieces(data: bytes, *, creator_tool: str) -> Pieces | None:
    """The marked file as slices of ``data`` plus the new chunk; None when nothing changes."""
    packet = xmp_packet(creator_tool)
    kind = image_kind(data)
    pieces: Pieces | None
    if kind == "png":
        pieces = _png_with_xmp(data, packet)
    elif kind == "jpeg":
        pieces = _jpeg_with_xmp(data, packet)
    else:
        pieces = _webp_with_xmp(data, packet)
    return None if pieces is None or _same(pieces, data) else pieces


def write_pieces(path: Path, pieces: Pieces) -> None:
    """Write to a temporary name beside ``path``, then rename: a file at its name is whole."""
    atomic_write(path, pieces)


def _same(pieces: Pieces, data: bytes) -> bool:
    """True when the pieces spell ``data`` exactly (compared in place, nothing joined)."""
    if sum(len(piece) for piece in pieces) != len(data):
        return False
    view, offset = memoryview(data), 0
    for piece in pieces:
        if view[offset : offset + len(piece)] != piece:
            return False
        offset += len(piece)
    return True


def add_provenance_file(path: Path, creator_tool: str) -> bool:
    """Write provenance into ``path`` (temporary file, then rename); False if already there."""
    pieces = provenance_pieces(path.read_bytes(), creator_tool=creator_tool)
    if pieces is None:
        return False
    write_pieces(path, pieces)
    return True


def read_provenance(data: bytes) -> dict[str, str] | None:
    """``{"format", "digital_source_type", "creator_tool"}`` from the file's XMP, or None."""
    kind = image_kind(data)
    packet = {"png": _png_xmp, "jpeg": _jpeg_xmp, "webp": _webp_xmp}[kind](data)
    if packet is None:
        return None
    found = {"format": kind, **_xmp_fields(packet)}
    return found


def image_kind(data: bytes) -> str:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ProvenanceError("not a PNG, JPEG or WebP file: cannot write provenance into it")


def _xmp_fields(packet: bytes) -> dict[str, str]:
    # The packet is ours or the API's; expat (3.11+) refuses entity-expansion bombs anyway.
    text = packet.decode("utf-8", "replace")
    start = text.find("<x:xmpmeta")
    end = text.find("</x:xmpmeta>")
    if start < 0 or end < 0:
        return {}
    root = ElementTree.fromstring(text[start : end + len("</x:xmpmeta>")])
    fields: dict[str, str] = {}
    names = {
        f"{{{IPTC_EXT_NS}}}DigitalSourceType": "digital_source_type",
        f"{{{XMP_NS}}}CreatorTool": "creator_tool",
    }
    for description in root.iter(f"{{{RDF_NS}}}Description"):
        for qualified, name in names.items():
            value = description.get(qualified)
            if value is None:  # the element form: <xmp:CreatorTool>...</xmp:CreatorTool>
                child = description.find(qualified)
                value = child.text if child is not None else None
            if value is not None:
                fields.setdefault(name, value.strip())
    return fields


# --- PNG -----------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, type)`` of every chunk (offsets of the whole chunk, CRC included)."""
    chunks = []
    offset = len(PNG_SIGNATURE)
    while offset < len(data):
        if offset + 8 > len(data):
            raise ProvenanceError("PNG is truncated (a chunk header is cut off)")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise ProvenanceError(f"PNG is truncated (chunk {kind!r} runs past the end)")
        chunks.append((offset, end, kind))
        offset = end
        if kind == b"IEND":
            break
    return chunks


def _is_png_xmp(data: bytes, start: int, kind: bytes) -> bool:
    keyword = PNG_XMP_KEYWORD + b"\x00"
    return kind == b"iTXt" and data[start + 8 : start + 8 + len(keyword)] == keyword


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_with_xmp(data: bytes, packet: bytes) -> Pieces:
    # keyword, NUL, compression flag 0, method 0, empty language tag, NUL, empty translation, NUL
    chunk = _png_chunk(b"iTXt", PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet)
    pieces: Pieces = []
    view = memoryview(data)
    kept_from = 0
    inserted = False
    for start, end, kind in _png_chunks(data):
        if kind == b"IDAT" and not inserted:
            pieces += [view[kept_from:start], chunk]
            kept_from, inserted = start, True
        elif _is_png_xmp(data, start, kind):
            pieces.append(view[kept_from:start])
            kept_from = end
    if not inserted:
        raise ProvenanceError("PNG has no image data (IDAT chunk)")
    pieces.append(view[kept_from:])
    return pieces


def _png_xmp(data: bytes) -> bytes | None:
    for start, end, kind in _png_chunks(data):
        if _is_png_xmp(data, start, kind):
            payload = data[start + 8 + len(PNG_XMP_KEYWORD) + 1 : end - 4]
            compressed = payload[0] == 1
            # Skip the flag, method, language tag and translated keyword (both NUL-ended).
            rest = payload[2:]
            rest = rest[rest.index(b"\x00") + 1 :]
            text = rest[rest.index(b"\x00") + 1 :]
            return zlib.decompress(text) if compressed else text
    return None


# --- JPEG ----------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, marker)`` of each segment between SOI and SOS (SOS itself excluded)."""
    segments: list[tuple[int, int, int]] = []
    offset = 2
    while True:
        while (
            offset < len(data) and data[offset] == 0xFF and data[offset + 1 : offset + 2] == b"\xff"
        ):
            offset += 1  # fill bytes
        if offset + 4 > len(data) or data[offset] != 0xFF:
            raise ProvenanceError("JPEG is truncated or malformed before its image data")
        marker = data[offset + 1]
        if marker == 0xDA or marker == 0xD9:  # SOS: entropy-coded data follows; EOI
            return segments
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers, no length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        end = offset + 2 + length
        if length < 2 or end > len(data):
            raise ProvenanceError(f"JPEG segment 0xFF{marker:02X} runs past the end")
        segments.append((offset, end, marker))
        offset = end


def _is_jpeg_xmp(data: bytes, start: int, marker: int) -> bool:
    return marker == 0xE1 and data[start + 4 : start + 4 + len(JPEG_XMP_HEADER)] == JPEG_XMP_HEADER


def _jpeg_with_xmp(data: bytes, packet: bytes) -> Pieces | None:
    payload = JPEG_XMP_HEADER + packet
    if len(payload) > JPEG_MAX_SEGMENT:
        raise ProvenanceError("XMP packet too large for one JPEG segment")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    segments = _jpeg_segments(data)
    insert_at = 2
    for start, end, marker in segments:
        leading = marker == 0xE0 or (marker == 0xE1 and data[start + 4 : start + 10] == b"Exif\0\0")
        if not leading or start != insert_at:
            break
        insert_at = end
    # Old packets all lie at or after insert_at: an XMP segment ends the leading run.
    existing = [(s, e) for s, e, m in segments if _is_jpeg_xmp(data, s, m)]
    if existing == [(insert_at, insert_at + len(segment))] and data[insert_at:].startswith(segment):
        return None
    view = memoryview(data)
    pieces: Pieces = [view[:insert_at], segment]
    kept_from = insert_at
    for start, end in existing:
        pieces.append(view[kept_from:start])
        kept_from = end
    pieces.append(view[kept_from:])
    return pieces


def _jpeg_xmp(data: bytes) -> bytes | None:
    for start, end, marker in _jpeg_segments(data):
        if _is_jpeg_xmp(data, start, marker):
            return data[start + 4 + len(JPEG_XMP_HEADER) : end]
    return None


# --- WebP ----------------------------------------------------------------------------------


def _webp_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, fourcc)`` of each chunk after the RIFF header (end includes padding)."""
    (riff_size,) = struct.unpack("<I", data[4:8])
    limit = min(len(data), 8 + riff_size)
    chunks = []
    offset = 12
    while offset + 8 <= limit:
        fourcc = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        end = offset + 8 + size + (size & 1)
        if offset + 8 + size > limit:
            raise ProvenanceError(f"WebP chunk {fourcc!r} runs past the end of the file")
        chunks.append((offset, min(end, limit), fourcc))
        offset = end
    if not chunks:
        raise ProvenanceError("WebP has no chunks")
    return chunks


def _webp_chunk(fourcc: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) & 1 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + pad


def _webp_canvas(data: bytes, start: int, fourcc: bytes) -> tuple[int, int, bool]:
    """Width, height and "has alpha" from a VP8 or VP8L bitstream's header."""
    payload = data[start + 8 : start + 8 + 10]
    if fourcc == b"VP8 ":
        if len(payload) < 10 or payload[3:6] != b"\x9d\x01\x2a":
            raise ProvenanceError("WebP VP8 bitstream has no valid frame header")
        width, height = struct.unpack("<HH", payload[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    if len(payload) < 5 or payload[0] != 0x2F:
        raise ProvenanceError("WebP VP8L bitstream has no valid signature")
    (bits,) = struct.unpack("<I", payload[1:5])
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)


def _webp_with_xmp(data: bytes, packet: bytes) -> Pieces:
    chunks = _webp_chunks(data)
    xmp = _webp_chunk(b"XMP ", packet)
    view = memoryview(data)
    first_start, first_end, first = chunks[0]
    if first == b"VP8X":
        flags = data[first_start + 8]
        head = b"".join([view[first_start : first_start + 8], bytes([flags | WEBP_XMP_FLAG])])
        head += bytes(view[first_start + 9 : first_end])
    elif first in (b"VP8 ", b"VP8L"):
        width, height, alpha = _webp_canvas(data, first_start, first)
        flags = WEBP_XMP_FLAG | (WEBP_ALPHA_FLAG if alpha else 0)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        head = _webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas) + bytes(
            view[first_start:first_end]
        )
    else:
        raise ProvenanceError(f"WebP starts with an unknown chunk {first!r}")
    body: Pieces = [head]
    body += [view[s:e] for s, e, fourcc in chunks[1:] if fourcc != b"XMP "]
    body.append(xmp)
    size = sum(len(piece) for piece in body) + 4
    return [b"RIFF", struct.pack("<I", size), b"WEBP", *body]


def _webp_xmp(data: bytes) -> bytes | None:
    for start, _end, fourcc in _webp_chunks(data):
        if fourcc == b"XMP ":
            (size,) = struct.unpack("<I", data[start + 4 : start + 8])
            return data[start + 8 : start + 8 + size]
    return None
