"""The pixels the emulator paints where an edit replaces the source: prompt-colored fills.

Colors come from a hash of the prompt and the result index, so the n results of one call differ and
the same request always gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from PIL import Image, ImageDraw

# A few color words, so that "white marble countertop" really comes out whitish.
_NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (240, 210, 50),
    "gold": (212, 175, 55),
    "green": (50, 160, 70),
    "blue": (40, 90, 200),
    "sky": (120, 180, 235),
    "purple": (130, 60, 170),
    "pink": (235, 130, 180),
    "brown": (120, 80, 45),
    "wood": (150, 105, 60),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
    "marble": (228, 226, 220),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (190, 192, 198),
    "metal": (160, 165, 170),
}


@dataclass(frozen=True)
class Palette:
    primary: tuple[int, int, int]
    secondary: tuple[int, int, int]
    accent: tuple[int, int, int]
    noise: bytes  # more hash bytes for shape positions
    vertical: bool

    @classmethod
    def of(cls, prompt: str, index: int) -> Palette:
        digest = hashlib.sha512(f"{index}\x00{prompt}".encode()).digest()
        named = _named_color(prompt)
        if named is None:
            primary = (digest[0], digest[1], digest[2])
        else:
            # Nudge a named color per result index so the n results still differ visibly.
            primary = _nudged(named, digest[0:3])
        secondary = (digest[3], digest[4], digest[5])
        accent = (255 - digest[6] // 2, digest[7], 255 - digest[8])
        return cls(primary, secondary, accent, digest[9:], bool(digest[63] & 1))


def _nudged(color: tuple[int, int, int], noise: bytes) -> tuple[int, int, int]:
    red, green, blue = (
        min(255, max(0, c + n % 41 - 20)) for c, n in zip(color, noise, strict=True)
    )
    return red, green, blue


def _named_color(prompt: str) -> tuple[int, int, int] | None:
    words = prompt.lower().replace(",", " ").replace(".", " ").split()
    for word in words:
        if word in _NAMED_COLORS:
            return _NAMED_COLORS[word]
    return None


def _gradient(
    size: tuple[int, int], start: tuple[int, ...], end: tuple[int, ...], vertical: bool
) -> Image.Image:
    # A 256-step strip stretched to size: one resize instead of composing full-size layers.
    steps = [
        tuple(a + (b - a) * step // 255 for a, b in zip(start, end, strict=True))
        for step in range(256)
    ]
    strip = Image.new("RGB", (1, 256) if vertical else (256, 1))
    strip.putdata(steps)
    return strip.resize(size, Image.Resampling.BILINEAR)


def generated_fill(size: tuple[int, int], palette: Palette, shapes: int) -> Image.Image:
    """A prompt-colored gradient with a few circles and bars: obviously generated, cheap to draw."""
    image = _gradient(size, palette.primary, palette.secondary, palette.vertical)
    _draw_shapes(image, palette, shapes)
    return image


def generated_scene(size: tuple[int, int], palette: Palette, shapes: int) -> Image.Image:
    """A 'sky over a floor' backdrop: light gradient above the horizon, darker floor below."""
    width, height = size
    horizon = height * 3 // 5
    sky_top = tuple(min(255, c + 90) for c in palette.primary)
    scene = _gradient(size, sky_top, palette.primary, vertical=True)
    floor_far = tuple(c // 2 for c in palette.secondary)
    floor = _gradient((width, height - horizon), palette.secondary, floor_far, vertical=True)
    scene.paste(floor, (0, horizon))
    draw = ImageDraw.Draw(scene)
    radius = max(8, min(width, height) // 12)
    sun_x = palette.noise[0] * (width - 2 * radius) // 255 + radius
    draw.ellipse(
        (sun_x - radius, horizon // 4, sun_x + radius, horizon // 4 + 2 * radius),
        fill=palette.accent,
    )
    _draw_shapes(scene, palette, shapes // 2, top=horizon)
    return scene


def _draw_shapes(image: Image.Image, palette: Palette, count: int, top: int = 0) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    noise = palette.noise
    for k in range(count):
        a, b, c = noise[3 * k + 1], noise[3 * k + 2], noise[3 * k + 3]
        x = a * width // 256
        y = top + b * (height - top) // 256
        extent = max(4, (c + 32) * min(width, height) // 1024)
        if k % 2:
            draw.rectangle((x, y, x + extent * 2, y + max(2, extent // 4)), fill=palette.accent)
        else:
            draw.ellipse(
                (x - extent, y - extent, x + extent, y + extent),
                outline=palette.accent,
                width=max(2, extent // 8),
            )
