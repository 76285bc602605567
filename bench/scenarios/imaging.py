"""Scenario: local image work per job, masks, ``protect`` and provenance (CPU, in process).

- ``protect``: a 1024x1024 RGB result, a 1200x1200 source and a feathered box mask rendered at
  the source's size: fit both to the result (cover-crop), composite. Alone, and with the one
  encode the delivered file needs (PNG at the API's default compression, JPEG and WebP at 90).
- provenance: inserting the XMP packet into a delivered 1024x1024 image of each format (a
  noisy photo-like picture). It must not decode, so the target is < 0.2 ms. Timed both as the
  store should use it (``provenance_pieces``: the slices to write, no copy) and as new bytes
  (``add_provenance``: one copy of the file, ~0.1 ms per MB).
- the generated mask itself (box, grow 8, feather 12, 1200x1200) and its PNG for upload.

Each figure is the median of several runs of CPU time (``time.process_time``), per job.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from PIL import Image, ImageChops

from bench.common import Figure, ScenarioResult, cpu_ms, median
from pipeline.images.masks import MaskRecipe, ShapeSource, mask_png_bytes, render_mask
from pipeline.images.protect import encode, protect
from pipeline.images.provenance import add_provenance, provenance_pieces

TITLE = "Imaging per job (CPU: generated mask, protect, provenance)"
PROVENANCE_TARGET_MS = 0.2
RESULT_SIZE = (1024, 1024)
SOURCE_SIZE = (1200, 1200)
TOOL = "onemin-pipeline bench"
# The API's default output_compression for PNG is 100 (fastest zlib level, largest file).
FORMATS = (("png", 100), ("jpeg", 90), ("webp", 90))


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("imaging", TITLE)
    repeats = 3 if quick else 15
    result.params = {"result": "1024x1024", "source": "1200x1200", "repeats": repeats}
    source = _picture(SOURCE_SIZE, seed=1)
    raw = _picture(RESULT_SIZE, seed=2)
    recipe = MaskRecipe(ShapeSource("box", (0.1, 0.2, 0.7, 0.9), True), grow=8, feather=12)
    mask = render_mask(recipe, SOURCE_SIZE).mask

    def timed(name: str, work: Callable[[], object], target: float | None = None) -> None:
        runs = cpu_ms(work, repeats)
        result.add(Figure(name, median(runs), "ms", ("<", target) if target else None, runs))

    timed("mask: render box + grow 8 + feather 12", lambda: render_mask(recipe, SOURCE_SIZE))
    timed("mask: PNG for upload", lambda: mask_png_bytes(mask))
    timed("protect (fit source and mask, composite)", lambda: protect(raw, source, mask))
    for fmt, _compression in FORMATS:
        timed(f"protect + one encode ({fmt})", partial(_protect_encode, raw, source, mask, fmt))
    for fmt, compression in FORMATS:
        data = encode(raw, fmt, compression)
        result.details[f"{fmt}_bytes"] = len(data)
        size = f"{fmt}, {len(data) / 1e6:.1f} MB"
        timed(
            f"provenance insert, written as pieces ({size})",
            partial(provenance_pieces, data, creator_tool=TOOL),
            PROVENANCE_TARGET_MS,
        )
        timed(
            f"provenance as new bytes, one copy ({size})",
            partial(add_provenance, data, creator_tool=TOOL),
        )
    return result


def _protect_encode(raw: Image.Image, source: Image.Image, mask: Image.Image, fmt: str) -> bytes:
    return encode(protect(raw, source, mask), fmt, dict(FORMATS)[fmt])


def _picture(size: tuple[int, int], seed: int) -> Image.Image:
    """Photo-like: a gradient with grain, so encoders and the PNG size are realistic."""
    gradient = Image.linear_gradient("L").resize(size).rotate(seed * 30)
    grain = Image.effect_noise(size, 12 + seed)
    mirrored = gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    channels = [ImageChops.add(gradient, grain, 2, 0), grain, mirrored]
    return Image.merge("RGB", channels)
