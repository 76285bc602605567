"""The pixel facts of a PNG, measured the cheap way, against a straightforward slow reading.

``measure`` reads the ring on crops and the product on a reduced copy; the reference here reads
every pixel of a plainly converted copy in Python, after the rules in ``pipeline.images.measure``'s
docstring: the ring's lowest value (transparent pixels laid on white) and lowest alpha, and the
box of the blocks whose means are not pure white, rounded out to whole blocks. Both the decoding
path and the path given the PNG's pixels (a caller that has just encoded them) must agree with it
on images made to sit on the rules' edges: transparent and off-white rings, a product touching
the edge, an all-white image, palette, grey and 16-bit PNGs.

The images are small (every pixel is read in Python) but large enough to be reduced by 2 and 4,
and their sides are multiples of the reduction, so every block is whole.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image, ImageDraw

from pipeline.images.measure import (
    BORDER_RING_SHARE,
    FILL_DECIMALS,
    WHITE,
    WORK_SIDE,
    ImageFacts,
    measure,
    on_white,
)

Box = tuple[int, int, int, int]
Pixel = tuple[int, ...]


def _png(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


# -- the reference: every pixel read in Python ----------------------------------------------


def _flat_rgba(image: Image.Image) -> Image.Image:
    """RGBA (or RGB when nothing is transparent) in 8 bits per channel, as a shop reads it."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("L", "LA"):
        return image.convert("RGBA" if image.mode == "LA" else "RGB")
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    return image.convert("RGB")


def _rows(image: Image.Image) -> list[list[Pixel]]:
    bands, data = len(image.getbands()), image.tobytes()  # 8 bits a channel, interleaved
    values = [tuple(data[at : at + bands]) for at in range(0, len(data), bands)]
    width = image.width
    return [values[y * width : (y + 1) * width] for y in range(image.height)]


def _ring_reference(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    thickness = max(1, round(min(width, height) * BORDER_RING_SHARE))
    raw, laid = _rows(image), _rows(on_white(image) if "A" in image.getbands() else image)
    colour, alpha = WHITE, WHITE
    for y in range(height):
        for x in range(width):
            inside = thickness <= x < width - thickness and thickness <= y < height - thickness
            if inside:
                continue
            colour = min(colour, *laid[y][x][:3])
            if "A" in image.getbands():
                alpha = min(alpha, raw[y][x][3])
    return colour, alpha


def _block_means(image: Image.Image, factor: int) -> Image.Image:
    """Each ``factor`` x ``factor`` block's mean per channel, rounded half up."""
    rows = _rows(image)
    bands = len(image.getbands())
    count = factor * factor
    means = Image.new(image.mode, (image.width // factor, image.height // factor))
    for by in range(means.height):
        for bx in range(means.width):
            block = [
                rows[by * factor + dy][bx * factor + dx]
                for dy in range(factor)
                for dx in range(factor)
            ]
            mean = tuple((sum(p[b] for p in block) + count // 2) // count for b in range(bands))
            means.putpixel((bx, by), mean)
    return means


def _box_reference(image: Image.Image) -> tuple[Box | None, float]:
    width, height = image.size
    factor = 1
    while factor * 2 * WORK_SIDE <= max(width, height):
        factor *= 2  # a longer side of WORK_SIDE to twice that
    means = _block_means(image, factor)
    if "A" in means.getbands() and min(pixel[3] for row in _rows(means) for pixel in row) < WHITE:
        means = on_white(means)
    product = [
        (x, y)
        for y, row in enumerate(_rows(means))
        for x, pixel in enumerate(row)
        if min(pixel[:3]) < WHITE
    ]
    if not product:
        return None, 0.0
    left = min(x for x, _ in product) * factor
    top = min(y for _, y in product) * factor
    right = min(width, (max(x for x, _ in product) + 1) * factor)
    bottom = min(height, (max(y for _, y in product) + 1) * factor)
    fill = round(max(right - left, bottom - top) / max(width, height), FILL_DECIMALS)
    return (left, top, right, bottom), fill


def _reference(data: bytes) -> tuple[int, int, Box | None, float]:
    image = _flat_rgba(_decoded(data))
    colour, alpha = _ring_reference(image)
    box, fill = _box_reference(image)
    return colour, alpha, box, fill


def _pixel_facts(facts: ImageFacts) -> tuple[int | None, int | None, Box | None, float | None]:
    return facts.border_min, facts.border_alpha_min, facts.product, facts.fill


# -- the images ------------------------------------------------------------------------------


def _shot(
    size: tuple[int, int],
    mode: str,
    ground: Pixel,
    box: Box | None,
    product: Pixel,
) -> Image.Image:
    image = Image.new(mode, size, ground)
    if box is not None:
        left, top, right, bottom = box
        ImageDraw.Draw(image).ellipse((left, top, right - 1, bottom - 1), fill=product)
    return image


def _grain(size: tuple[int, int]) -> Image.Image:
    """A grainy product on white, the noise crossing block edges at odd places."""
    noise = Image.effect_noise((size[0] // 2, size[1] // 2), 40).convert("RGB")
    image = Image.new("RGB", size, (WHITE,) * 3)
    image.paste(noise, (size[0] // 4 + 3, size[1] // 4 - 5))
    return image


def _near_white_specks(size: tuple[int, int]) -> Image.Image:
    """White, with specks a few levels off white (lost in their blocks) and one dark pixel."""
    image = Image.new("RGB", size, (WHITE,) * 3)
    for x, y in ((40, 40), (41, 40), (90, 70)):
        image.putpixel((x, y), (250, 252, 255))
    image.putpixel((150, 101), (0, 0, 0))
    return image


def _marks(size: tuple[int, int], *marks: tuple[int, int]) -> Image.Image:
    """White, with one dark pixel at each of ``marks`` (negative: from the right or bottom)."""
    width, height = size
    image = Image.new("RGB", size, (WHITE,) * 3)
    for x, y in marks:
        image.putpixel((x % width, y % height), (200, 200, 90))
    return image


def _soft_ring(size: tuple[int, int]) -> Image.Image:
    """RGBA on white, the outermost pixel column half transparent, a product inside."""
    image = _shot(size, "RGBA", (255, 255, 255, 255), (40, 40, 200, 150), (30, 60, 200, 255))
    ImageDraw.Draw(image).line((0, 0, 0, size[1] - 1), fill=(255, 255, 255, 128))
    return image


def _semi_transparent_product(size: tuple[int, int]) -> Image.Image:
    """A transparent ground (black under alpha 0) with a half transparent dark product."""
    return _shot(size, "RGBA", (0, 0, 0, 0), (30, 20, 220, 170), (10, 10, 10, 120))


def _palette(size: tuple[int, int], transparent: bool) -> Image.Image:
    image = _shot(size, "RGB", (WHITE,) * 3, (8, 24, 248, 176), (200, 40, 30))
    palette = image.quantize(4)
    if transparent:
        palette.info["transparency"] = palette.getpixel((0, 0))
    return palette


def _grey16(size: tuple[int, int]) -> Image.Image:
    image = Image.new("I;16", size, 65535)
    ImageDraw.Draw(image).rectangle((60, 50, 180, 140), fill=20000)
    return image


SMALL, WIDE, LARGE = (256, 192), (320, 160), (512, 384)
IMAGES: dict[str, Callable[[], Image.Image]] = {
    "white ground, product inside": lambda: _shot(
        SMALL, "RGB", (255, 255, 255), (24, 16, 232, 176), (200, 40, 30)
    ),
    "off-white ring": lambda: _shot(
        SMALL, "RGB", (255, 254, 255), (24, 16, 232, 176), (200, 40, 30)
    ),
    "product touching the edge": lambda: _shot(
        WIDE, "RGB", (255, 255, 255), (0, 30, 200, 160), (10, 120, 40)
    ),
    "all white": lambda: Image.new("RGB", SMALL, (255, 255, 255)),
    "grainy product, reduced by 4": lambda: _grain(LARGE),
    "near-white specks": lambda: _near_white_specks(SMALL),
    # The ring of SMALL is 3 px thick: its innermost pixels are the 3rd from each edge.
    "marks on the ring's inner edges": lambda: _marks(SMALL, (-3, 90), (120, 2)),
    "marks just inside the ring": lambda: _marks(SMALL, (3, 3), (-4, -4)),
    "transparent ground": lambda: _shot(
        SMALL, "RGBA", (0, 0, 0, 0), (24, 16, 232, 176), (200, 40, 30, 255)
    ),
    "half transparent ring column": lambda: _soft_ring(SMALL),
    "half transparent product": lambda: _semi_transparent_product(SMALL),
    "grey": lambda: _shot(SMALL, "L", (255,), (40, 40, 200, 150), (90,)),
    "grey with alpha": lambda: _shot(SMALL, "LA", (255, 0), (40, 40, 200, 150), (90, 255)),
    "palette": lambda: _palette(SMALL, transparent=False),
    "palette with a transparent ground": lambda: _palette(SMALL, transparent=True),
    "16-bit grey": lambda: _grey16(SMALL),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_decoded_png_facts_match_the_slow_reading(name: str) -> None:
    data = _png(IMAGES[name]())

    assert _pixel_facts(measure(data)) == _reference(data)


@pytest.mark.parametrize("name", list(IMAGES))
def test_a_pngs_own_pixels_give_the_decoded_facts(name: str) -> None:
    data = _png(IMAGES[name]())

    assert measure(data, pixels=_decoded(data)) == measure(data)


def test_the_reference_sees_what_the_rules_say() -> None:
    # The reference itself, on cases whose facts are known without it: a check that cannot
    # fail would hide a reference that agrees with any measurement.
    off_white = _reference(_png(IMAGES["off-white ring"]()))
    transparent = _reference(_png(IMAGES["transparent ground"]()))
    blank = _reference(_png(IMAGES["all white"]()))
    touching = _reference(_png(IMAGES["product touching the edge"]()))

    assert off_white[:2] == (254, WHITE)
    assert transparent[:2] == (WHITE, 0)
    assert blank == (WHITE, WHITE, None, 0.0)
    assert touching[0] < WHITE and touching[2] is not None and touching[2][0] == 0
