"""The streaming result check: the same file as add_provenance, the same refusals as check_image."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.errors import BadResponse
from pipeline.images.provenance import add_provenance, read_provenance
from pipeline.store.verify import ResultStream, xmp_chunk

TOOL = "onemin-pipeline test"


def _png(size: tuple[int, int] = (64, 48), **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buffer, "PNG", **params)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _with_chunk_before_iend(data: bytes, chunk: bytes) -> bytes:
    return data[:-12] + chunk + data[-12:]


def _with_chunk_after_ihdr(data: bytes, chunk: bytes) -> bytes:
    return data[:33] + chunk + data[33:]


def _stream(data: bytes, piece: int, expected=(64, 48), tool: str | None = TOOL):
    out = io.BytesIO()
    stream = ResultStream(expected, tool)
    writer = stream.writer(out)
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])
    writer.finish()
    return stream, out.getvalue()


@pytest.mark.parametrize("piece", [1, 7, 13, 64, 4096, 1 << 20])
def test_a_png_comes_out_as_add_provenance_makes_it(piece: int) -> None:
    data = _png()
    stream, written = _stream(data, piece)
    assert stream.verdict() == "png"
    assert written == add_provenance(data, creator_tool=TOOL)
    assert stream.written == len(written)
    assert read_provenance(written) is not None


def test_an_xmp_chunk_of_the_api_before_the_image_data_is_replaced() -> None:
    theirs = _chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta/>")
    data = _with_chunk_after_ihdr(_png(), theirs)
    for piece in (5, 100, 1 << 20):
        stream, written = _stream(data, piece)
        assert stream.verdict() == "png"
        assert written == add_provenance(data, creator_tool=TOOL)


def test_other_text_chunks_are_kept_where_they_are() -> None:
    data = _with_chunk_after_ihdr(_png(), _chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00hello"))
    data = _with_chunk_before_iend(data, _chunk(b"tEXt", b"Author\x00me"))
    stream, written = _stream(data, 9)
    assert stream.verdict() == "png"
    assert written == add_provenance(data, creator_tool=TOOL)


def test_an_xmp_chunk_after_the_image_data_is_left_to_the_whole_file_path() -> None:
    theirs = _chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta/>")
    data = _with_chunk_before_iend(_png(), theirs)
    stream, written = _stream(data, 11)
    assert stream.verdict() is None  # undecided: store.mark_provenance replaces both packets
    assert add_provenance(written, creator_tool=TOOL) == add_provenance(data, creator_tool=TOOL)


def test_several_idat_chunks_are_walked_to_the_end() -> None:
    data = _png((300, 200), compress_level=0)  # several IDAT chunks
    stream, written = _stream(data, 1000, expected=(300, 200))
    assert stream.verdict() == "png"
    assert written == add_provenance(data, creator_tool=TOOL)


def test_a_protected_job_keeps_the_bytes_as_received() -> None:
    data = _png()
    stream, written = _stream(data, 50, tool=None)
    assert stream.verdict() == "png"
    assert written == data


@pytest.mark.parametrize("cut", [1, 12, 100])
def test_a_truncated_png_is_refused(cut: int) -> None:
    stream, _ = _stream(_png()[:-cut], 17)
    with pytest.raises(BadResponse, match="truncated"):
        stream.verdict()


def test_bytes_after_the_end_chunk_are_refused() -> None:
    stream, _ = _stream(_png() + b"junk", 17)
    with pytest.raises(BadResponse, match="truncated"):
        stream.verdict()


def test_the_wrong_size_is_refused_from_the_header() -> None:
    with pytest.raises(BadResponse, match="expected 10x10"):
        _stream(_png(), 4096, expected=(10, 10))


def test_an_absurd_size_is_refused_from_the_header() -> None:
    data = bytearray(_png())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    with pytest.raises(BadResponse, match="too large"):
        _stream(bytes(data), 4096, expected=None)


def test_a_jpeg_is_written_through_and_left_to_the_file_check() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "JPEG")
    stream, written = _stream(buffer.getvalue(), 100)
    assert stream.verdict() is None
    assert written == buffer.getvalue()


def test_a_tiny_body_is_left_to_the_file_check() -> None:
    stream, written = _stream(b"\x89PNG", 2)
    assert stream.verdict() is None
    assert written == b"\x89PNG"


def test_each_body_starts_afresh() -> None:
    data = _png()
    stream = ResultStream((64, 48), TOOL)
    first = stream.writer(io.BytesIO())
    first.write(data[:40])  # a first URL broke off here; the client tries the next
    out = io.BytesIO()
    second = stream.writer(out)
    second.write(data)
    second.finish()
    assert stream.verdict() == "png"
    assert out.getvalue() == add_provenance(data, creator_tool=TOOL)


def test_the_chunk_is_the_provenance_modules_own() -> None:
    marked = add_provenance(_png(), creator_tool=TOOL)
    assert xmp_chunk(TOOL) in marked
