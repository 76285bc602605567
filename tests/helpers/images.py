"""Helpers that make small test images, masks and manifests (import them; not a conftest).

Use: ``from tests.helpers.images import make_image, make_mask, write_manifest``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw

Size = tuple[int, int]
Box = tuple[int, int, int, int]


def pixel(image: Image.Image, xy: Size) -> tuple[int, ...]:
    """The bands of one pixel of a multi-band image (RGB, RGBA, ...): getpixel's tuple."""
    value = image.getpixel(xy)
    assert isinstance(value, tuple), f"a {image.mode} pixel has one band: {value!r}"
    return value


def level(image: Image.Image, xy: Size) -> int:
    """The one value of a pixel of a one-band image of integers (L, 1, P, I)."""
    value = image.getpixel(xy)
    assert isinstance(value, int), f"a {image.mode} pixel is not one integer: {value!r}"
    return value


def band_extrema(image: Image.Image) -> list[tuple[int, int]]:
    """getextrema of a multi-band image: the (lowest, highest) value of each band."""
    extrema = image.getextrema()
    bands = [band for band in extrema if isinstance(band, tuple)]
    assert len(bands) == len(extrema) == len(image.getbands()) > 1, extrema
    return bands


def make_image(
    path: Path,
    size: Size = (64, 64),
    mode: str = "RGB",
    fmt: str = "PNG",
    color: Any = (200, 60, 40),
    background: Any = (240, 240, 236),
) -> Path:
    """A product-like picture: a coloured box on a light background; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, background)
    width, height = size
    ImageDraw.Draw(image).rectangle(
        (width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=color
    )
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def make_mask(
    path: Path,
    size: Size = (64, 64),
    box: Box | None = None,
    mode: str = "L",
    fmt: str = "PNG",
    fill: int = 0,
    edit: int = 255,
) -> Path:
    """A grayscale mask: ``fill`` everywhere, ``edit`` inside ``box`` (default: the middle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    mask = Image.new("L", size, fill)
    box = box if box is not None else (width // 4, height // 4, width * 3 // 4, height * 3 // 4)
    ImageDraw.Draw(mask).rectangle(box, fill=edit)
    if mode != "L":
        mask = mask.convert(mode)
    mask.save(path, format=fmt)
    return path


def make_alpha_mask(path: Path, size: Size = (64, 64), hole: Box | None = None) -> Path:
    """An OpenAI-style RGBA mask: opaque everywhere, fully transparent inside ``hole``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    hole = hole if hole is not None else (0, 0, width // 2 - 1, height - 1)
    ImageDraw.Draw(mask).rectangle(hole, fill=(0, 0, 0, 0))
    mask.save(path, format="PNG")
    return path


def make_animated(path: Path, size: Size = (32, 32), fmt: str = "PNG") -> Path:
    """A two-frame animation (APNG or animated WebP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.new("RGB", size, "red"), Image.new("RGB", size, "blue")]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut the file to ``keep`` of its bytes, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_manifest(folder: Path, data: Mapping[str, Any], name: str = "manifest.yaml") -> Path:
    """Write ``data`` as YAML into ``folder``; ``version: 1`` is added unless given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump({"version": 1, **data}, sort_keys=False), encoding="utf-8")
    return path


def demo_inputs(folder: Path, size: Size = (64, 64)) -> tuple[Path, Path]:
    """``images/item.png`` and its mask ``masks/item.png`` under ``folder``."""
    image = make_image(folder / "images" / "item.png", size=size)
    mask = make_mask(folder / "masks" / "item.png", size=size)
    return image, mask
