"""Provenance XMP in PNG, JPEG and WebP: readable, pixels identical, idempotent, no duplicates."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image

from pipeline.images import provenance
from pipeline.images.provenance import (
    DIGITAL_SOURCE_TYPE,
    ProvenanceError,
    add_provenance,
    add_provenance_file,
    read_provenance,
)

TOOL = 'onemin-pipeline 2.0 <"test">'


def picture(mode: str = "RGB") -> Image.Image:
    image = Image.effect_noise((96, 64), 50).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize((96, 64)))
    return image


def exif_with_make() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0131] = "cam"  # Software
    return exif


def encoded(image: Image.Image, *, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


CASES = {
    "png": (lambda: encoded(picture(), format="PNG"), "PNG"),
    "png-rgba": (lambda: encoded(picture("RGBA"), format="PNG"), "PNG"),
    "jpeg": (lambda: encoded(picture(), format="JPEG", quality=80), "JPEG"),
    "jpeg-exif": (
        lambda: encoded(picture(), format="JPEG", exif=exif_with_make()),
        "JPEG",
    ),
    "webp-vp8": (lambda: encoded(picture(), format="WEBP", quality=80), "VP8 "),
    "webp-vp8l": (lambda: encoded(picture(), format="WEBP", lossless=True), "VP8L"),
    "webp-vp8l-alpha": (lambda: encoded(picture("RGBA"), format="WEBP", lossless=True), "VP8L"),
    "webp-vp8x-alpha": (lambda: encoded(picture("RGBA"), format="WEBP", quality=80), "VP8X"),
}


def decoded(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return image.mode, image.size, image.tobytes()


@pytest.mark.parametrize("case", list(CASES))
def test_xmp_is_readable_and_pixels_unchanged(case: str) -> None:
    make, first_chunk = CASES[case]
    data = make()
    if case.startswith("webp"):
        assert data[12:16] == first_chunk.encode()  # the case covers what it says
    marked = add_provenance(data, creator_tool=TOOL)
    assert decoded(marked) == decoded(data)
    found = read_provenance(marked)
    assert found is not None
    assert found["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert found["creator_tool"] == TOOL
    with Image.open(io.BytesIO(marked)) as image:  # Pillow finds the packet where readers look
        xmp = image.info["xmp"]
    assert DIGITAL_SOURCE_TYPE.encode() in (xmp if isinstance(xmp, bytes) else xmp.encode())


@pytest.mark.parametrize("case", list(CASES))
def test_idempotent_no_duplicates_and_replacement(case: str) -> None:
    data = CASES[case][0]()
    once = add_provenance(data, creator_tool=TOOL)
    assert add_provenance(once, creator_tool=TOOL) == once
    other = add_provenance(once, creator_tool="another tool")
    assert other.count(b"XML:com.adobe.xmp") + other.count(b"http://ns.adobe.com/xap/1.0/\x00") <= 2
    assert other.count(DIGITAL_SOURCE_TYPE.encode()) == 1
    assert read_provenance(other)["creator_tool"] == "another tool"  # type: ignore[index]
    assert decoded(other) == decoded(data)


def test_no_xmp_reads_none() -> None:
    for make, _ in CASES.values():
        assert read_provenance(make()) is None


def test_png_chunk_goes_before_idat_with_a_correct_crc() -> None:
    marked = add_provenance(CASES["png"][0](), creator_tool=TOOL)
    kinds = [kind for _s, _e, kind in provenance._png_chunks(marked)]
    assert kinds.index(b"iTXt") == kinds.index(b"IDAT") - 1
    with Image.open(io.BytesIO(marked)) as image:
        image.verify()  # checks every chunk's CRC


def test_jpeg_segment_after_jfif_and_exif() -> None:
    marked = add_provenance(CASES["jpeg-exif"][0](), creator_tool=TOOL)
    segments = provenance._jpeg_segments(marked)
    markers = [(m, marked[s + 4 : s + 8]) for s, _e, m in segments[:3]]
    assert markers[0][0] in (0xE0, 0xE1) and markers[-1] == (0xE1, b"http")
    with Image.open(io.BytesIO(marked)) as image:
        assert image.getexif()[0x0131] == "cam"


def test_webp_becomes_extended_with_canvas_size_and_riff_size() -> None:
    for case in ("webp-vp8", "webp-vp8l", "webp-vp8l-alpha"):
        marked = add_provenance(CASES[case][0](), creator_tool=TOOL)
        assert marked[12:16] == b"VP8X"
        flags = marked[20]
        assert flags & provenance.WEBP_XMP_FLAG
        assert bool(flags & provenance.WEBP_ALPHA_FLAG) == case.endswith("alpha")
        width = int.from_bytes(marked[24:27], "little") + 1
        height = int.from_bytes(marked[27:30], "little") + 1
        assert (width, height) == (96, 64)
        assert struct.unpack("<I", marked[4:8])[0] == len(marked) - 8


def test_file_variant_writes_in_place_once(tmp_path: Path) -> None:
    path = tmp_path / "0.webp"
    path.write_bytes(CASES["webp-vp8"][0]())
    assert add_provenance_file(path, TOOL) is True
    assert add_provenance_file(path, TOOL) is False
    assert read_provenance(path.read_bytes()) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["0.webp"]


def test_not_an_image_is_a_clear_error() -> None:
    with pytest.raises(ProvenanceError, match="not a PNG, JPEG or WebP"):
        add_provenance(b"GIF89a....", creator_tool=TOOL)
    with pytest.raises(ProvenanceError, match="truncated"):
        add_provenance(CASES["png"][0]()[:40], creator_tool=TOOL)


@pytest.mark.parametrize("case", ["png", "jpeg", "webp-vp8l"])
def test_pieces_spell_the_same_file_and_none_when_done(case: str) -> None:
    data = CASES[case][0]()
    pieces = provenance.provenance_pieces(data, creator_tool=TOOL)
    assert pieces is not None
    marked = b"".join(pieces)
    assert marked == add_provenance(data, creator_tool=TOOL)
    assert provenance.provenance_pieces(marked, creator_tool=TOOL) is None
    assert add_provenance(marked, creator_tool=TOOL) is marked
