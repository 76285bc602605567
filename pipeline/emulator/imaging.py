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

from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from .cutout import foreground_mask
from .painting import Palette, generated_fill, generated_scene

OUTPUT_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
OUTPUT_EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

# BACKGROUND_REPLACER has no output_compression; use the API's default (fast zlib level).
_BACKGROUND_PNG_COMPRESSION = 85
# Shapes drawn on a generated fill, by quality: a visible (and cheap) difference between levels.
_SHAPES_BY_QUALITY = {"low": 3, "medium": 6, "high": 12}


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
        palette = Palette.of(request.prompt, index)
        fill = generated_fill(request.size, palette, _SHAPES_BY_QUALITY[request.quality])
        kept = _drifted(source, request, index)
        result = Image.composite(fill, kept, mask)
        return _encode(result, request.output_format, request.output_compression)

    def _replace_background(self, request: EditRequest, index: int) -> bytes:
        source = self._fitted(request.image, request.size, "RGBA")
        # The cut-out depends only on the image and size: share it across prompts and indices.
        foreground = self._sources.get_or_create(
            (request.image.digest, request.size, "foreground"), lambda: foreground_mask(source)
        )
        # Pixels already transparent in the source count as background too.
        keep = ImageChops.darker(source.getchannel("A"), foreground)
        if request.background == "transparent":
            result = source.copy()
            result.putalpha(keep)
        else:
            palette = Palette.of(request.prompt, index)
            scene = generated_scene(request.size, palette, _SHAPES_BY_QUALITY[request.quality])
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
