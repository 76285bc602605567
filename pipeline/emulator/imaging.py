"""The image edits the emulator performs: real pixels, deterministic from inputs and prompt.

Nothing here is meant to look like a model's output; it is meant to be *checkable*: an inpainted
result keeps the source where the mask is black (within `drift` levels per channel: like the real
model, it does not keep those pixels exactly), replaces it where white and blends where gray;
a background replacement keeps the product and swaps (or clears) what is connected to the borders.
Colors come from a hash of the prompt and the result index, so the n results of one call differ and
the same request always gives the same bytes.

Sources and masks are fitted to the output size with the same centered cover-crop
(`ImageOps.fit`), so a mask stays aligned with its image whatever the aspect ratios.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from PIL import Image, ImageChops, ImageDraw, ImageOps, UnidentifiedImageError

OUTPUT_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
OUTPUT_EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

# The flood fill runs in Python, so it works on a copy no larger than this on its longer side.
_FLOOD_SIDE = 128
# Largest per-channel distance from the border color that still counts as background.
_FLOOD_TOLERANCE = 40
# BACKGROUND_REPLACER has no output_compression; use the API's default (fast zlib level).
_BACKGROUND_PNG_COMPRESSION = 85
# Shapes drawn on a generated fill, by quality: a visible (and cheap) difference between levels.
_SHAPES_BY_QUALITY = {"low": 3, "medium": 6, "high": 12}

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
class ImageInfo:
    width: int
    height: int
    format: str
    mime: str


@dataclass(frozen=True)
class SourceImage:
    """Encoded bytes plus their digest (the cache key, so bytes are hashed once, at upload)."""

    digest: str
    data: bytes


@dataclass(frozen=True)
class EditRequest:
    kind: str  # "IMAGE_INPAINTER" | "BACKGROUND_REPLACER"
    image: SourceImage
    mask: SourceImage | None
    prompt: str
    size: tuple[int, int]
    n: int
    quality: str
    output_format: str
    output_compression: int
    background: str
    # Largest change, in levels per channel, of the pixels the mask keeps (0: kept exactly).
    drift: int = 0


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes) -> ImageInfo:
    """Fully decode `data`; raise ValueError with a reason a user can act on if it is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt = image.format or "UNKNOWN"
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ValueError("image has too many pixels to decode") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(
            "not a decodable image (PNG, JPEG, WebP or another common format)"
        ) from exc
    return ImageInfo(width, height, fmt, Image.MIME.get(fmt, "application/octet-stream"))


K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A small thread-safe LRU bounded by total cost (bytes for results, 1 per entry otherwise).

    Two threads may compute the same missing value at once; both results are equal, so the
    duplicate work is harmless and cheaper than holding a lock across image work.
    """

    def __init__(self, max_cost: int, cost: Callable[[V], int] = lambda _: 1) -> None:
        self._max_cost = max_cost
        self._cost = cost
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        value = create()
        self._put(key, value)
        return value

    def _put(self, key: K, value: V) -> None:
        cost = self._cost(value)
        if cost > self._max_cost:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._total += cost
            while self._total > self._max_cost:
                _, old = self._entries.popitem(last=False)
                self._total -= self._cost(old)

    def __len__(self) -> int:
        return len(self._entries)


class Imager:
    """Renders edit results, caching fitted sources and finished results."""

    def __init__(
        self, result_cache_bytes: int = 256 * 1024 * 1024, source_cache_entries: int = 16
    ) -> None:
        self.results: LRUCache[tuple[object, ...], bytes] = LRUCache(result_cache_bytes, len)
        self._sources: LRUCache[tuple[str, tuple[int, int], str], Image.Image] = LRUCache(
            source_cache_entries
        )

    def render(self, request: EditRequest) -> list[bytes]:
        """All n results of one call (CPU-bound: call it from a worker thread)."""
        return [self._render_one(request, index) for index in range(request.n)]

    def _render_one(self, request: EditRequest, index: int) -> bytes:
        key = (
            request.kind,
            request.image.digest,
            request.mask.digest if request.mask else None,
            request.prompt,
            request.size,
            request.quality,
            request.output_format,
            request.output_compression,
            request.background,
            request.drift,
            index,
        )
        if request.kind == "IMAGE_INPAINTER":
            return self.results.get_or_create(key, lambda: self._inpaint(request, index))
        return self.results.get_or_create(key, lambda: self._replace_background(request, index))

    def _fitted(self, source: SourceImage, size: tuple[int, int], mode: str) -> Image.Image:
        # Cached images are shared between threads: callers must never draw on them in place.
        return self._sources.get_or_create(
            (source.digest, size, mode), lambda: _decode_fitted(source.data, size, mode)
        )

    def _inpaint(self, request: EditRequest, index: int) -> bytes:
        assert request.mask is not None
        source = self._fitted(request.image, request.size, "RGB")
        # Mask luminance is the blend weight: white replaces, black keeps, gray blends.
        mask = self._fitted(request.mask, request.size, "L")
        palette = _Palette.of(request.prompt, index)
        fill = _generated_fill(request.size, palette, _SHAPES_BY_QUALITY[request.quality])
        kept = _drifted(source, request, index)
        result = Image.composite(fill, kept, mask)
        return _encode(result, request.output_format, request.output_compression)

    def _replace_background(self, request: EditRequest, index: int) -> bytes:
        source = self._fitted(request.image, request.size, "RGBA")
        # The cut-out depends only on the image and size: share it across prompts and indices.
        foreground = self._sources.get_or_create(
            (request.image.digest, request.size, "foreground"), lambda: _foreground_mask(source)
        )
        # Pixels already transparent in the source count as background too.
        keep = ImageChops.darker(source.getchannel("A"), foreground)
        if request.background == "transparent":
            result = source.copy()
            result.putalpha(keep)
        else:
            palette = _Palette.of(request.prompt, index)
            scene = _generated_scene(request.size, palette, _SHAPES_BY_QUALITY[request.quality])
            result = Image.composite(source.convert("RGB"), scene, keep)
        return _encode(result, "png", _BACKGROUND_PNG_COMPRESSION)


def drift_offsets(request: EditRequest, index: int) -> tuple[int, int, int]:
    """The per-channel shift of result `index`: each in [-drift, -1] or [1, drift], seeded by the
    request, so every result has something outside the mask for a client's `protect` to undo."""
    if request.drift == 0:
        return (0, 0, 0)
    digest = hashlib.sha256(
        f"drift\x00{request.image.digest}\x00{index}\x00{request.prompt}".encode()
    ).digest()
    return tuple(  # type: ignore[return-value]
        (byte % request.drift + 1) * (1 if byte & 0x80 else -1) for byte in digest[:3]
    )


def _drifted(source: Image.Image, request: EditRequest, index: int) -> Image.Image:
    """The RGB source shifted by `drift_offsets`, clipped to 0..255 (a copy: sources are shared)."""
    offsets = drift_offsets(request, index)
    if offsets == (0, 0, 0):
        return source
    lut = [min(255, max(0, level + offset)) for offset in offsets for level in range(256)]
    return source.point(lut)


def _decode_fitted(data: bytes, size: tuple[int, int], mode: str) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        # JPEG can decode at 1/2, 1/4, 1/8 scale for free; never below the size we need.
        # No EXIF rotation: the mask-size check compares stored pixels, so the blend must too.
        image.draft(image.mode, size)
        converted = image.convert(mode)
    return ImageOps.fit(converted, size, method=Image.Resampling.BILINEAR)


def _encode(image: Image.Image, output_format: str, compression: int) -> bytes:
    """Encode; `compression` is the API's 0-100, higher = better quality."""
    buffer = io.BytesIO()
    fmt = _PIL_FORMAT[output_format]
    if fmt == "PNG":
        # PNG is lossless: "better quality" can only mean less effort, so 100 -> level 0.
        level = min(9, max(0, round((100 - compression) * 9 / 100)))
        image.save(buffer, fmt, compress_level=level)
    elif fmt == "JPEG":
        image.convert("RGB").save(buffer, fmt, quality=compression)
    else:
        # method=0 is WebP's fastest setting; the emulator must keep up with benchmark rates.
        image.save(buffer, fmt, quality=compression, method=0)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Palette:
    primary: tuple[int, int, int]
    secondary: tuple[int, int, int]
    accent: tuple[int, int, int]
    noise: bytes  # more hash bytes for shape positions
    vertical: bool

    @classmethod
    def of(cls, prompt: str, index: int) -> _Palette:
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


def _generated_fill(size: tuple[int, int], palette: _Palette, shapes: int) -> Image.Image:
    """A prompt-colored gradient with a few circles and bars: obviously generated, cheap to draw."""
    image = _gradient(size, palette.primary, palette.secondary, palette.vertical)
    _draw_shapes(image, palette, shapes)
    return image


def _generated_scene(size: tuple[int, int], palette: _Palette, shapes: int) -> Image.Image:
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


def _draw_shapes(image: Image.Image, palette: _Palette, count: int, top: int = 0) -> None:
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


def _foreground_mask(source: Image.Image) -> Image.Image:
    """L mask at full size, 255 on the product, 0 on background connected to the borders."""
    width, height = source.size
    scale = _FLOOD_SIDE / max(width, height)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = source.resize(small_size, Image.Resampling.BOX)
    similar = _similar_to_border(small)
    background = _flood_from_borders(similar.tobytes(), *small_size)
    foreground_small = Image.frombytes("L", small_size, bytes(background)).point(
        lambda v: 0 if v else 255
    )
    upscaled = foreground_small.resize(source.size, Image.Resampling.BILINEAR)
    # Steepen and shift the soft edge inwards: less of the old backdrop halo around the product.
    return upscaled.point(lambda v: max(0, min(255, (v - 128) * 4)))


def _similar_to_border(small: Image.Image) -> Image.Image:
    """L image: 255 where the pixel looks like the border (plain backdrop) or is transparent."""
    rgb = small.convert("RGB")
    reference = _median_border_color(rgb)
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, reference))
    red, green, blue = diff.split()
    distance = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    similar = distance.point(lambda v: 255 if v <= _FLOOD_TOLERANCE else 0)
    clear = small.getchannel("A").point(lambda a: 255 if a < 16 else 0)
    return ImageChops.lighter(similar, clear)


def _median_border_color(rgb: Image.Image) -> tuple[int, int, int]:
    width, height = rgb.size
    pixels = rgb.load()
    assert pixels is not None
    border = [pixels[x, y] for x in range(width) for y in (0, height - 1)]
    border += [pixels[x, y] for y in range(height) for x in (0, width - 1)]
    channels = zip(*border, strict=True)
    return tuple(sorted(channel)[len(border) // 2] for channel in channels)


def _flood_from_borders(similar: bytes, width: int, height: int) -> bytearray:
    """1 for every 'similar' pixel 4-connected to the image border, else 0 (iterative DFS)."""
    background = bytearray(width * height)
    border = [x for x in range(width)] + [(height - 1) * width + x for x in range(width)]
    border += [y * width for y in range(height)] + [y * width + width - 1 for y in range(height)]
    stack = []
    for index in border:
        if similar[index] and not background[index]:
            background[index] = 1
            stack.append(index)
    while stack:
        index = stack.pop()
        x = index % width
        neighbours = []
        if x > 0:
            neighbours.append(index - 1)
        if x < width - 1:
            neighbours.append(index + 1)
        if index >= width:
            neighbours.append(index - width)
        if index < (height - 1) * width:
            neighbours.append(index + width)
        for other in neighbours:
            if similar[other] and not background[other]:
                background[other] = 1
                stack.append(other)
    return background
