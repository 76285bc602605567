"""Effective masks: a mask made here (``alpha``, ``box:``, ``ellipse:``, a file with modifiers,
or a file of another size than its image), rendered once per distinct image, recipe and file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from PIL import Image, ImageOps

from pipeline.images import masks
from pipeline.images.upload import fitted_size
from pipeline.models import Job
from pipeline.preflight.files import ImageFacts, bombs_refused, failure

# Rendered masks remembered (a box is a few kB, a feathered 2048 px one up to ~100 kB); only
# the step from check to plan needs a hit when every image is distinct.
MASK_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class EffectiveMask:
    """A mask made here for one (image, recipe, mask file): what is uploaded in its place."""

    recipe: masks.MaskRecipe
    png: bytes  # mode L, the image's upload size (upright, downscaled with it), white = edit
    digest: str  # sha256 of ``png``: keys the upload, so identical masks go up once
    scaled_to: tuple[int, int] | None  # the upload size when the image is downscaled
    notes: tuple[str, ...] = ()  # render notes and content warnings, given once per mask

    @property
    def size_token(self) -> str:
        return "" if self.scaled_to is None else f"fit{self.scaled_to[0]}x{self.scaled_to[1]}"


def render_mask(
    recipe: masks.MaskRecipe,
    image: ImageFacts,
    mask: ImageFacts | str | None,
    mask_real: str,
    max_input_side: int,
) -> EffectiveMask | str:
    """Render ``recipe`` on the upright image (a str says why it cannot be used).

    ``mask`` is the mask file's facts when the recipe modifies a file.
    """
    what = recipe_text(recipe)
    try:
        with bombs_refused():
            source = _upright(image.path) if _needs_source(recipe) else None
            mask_file = _upright(mask_real) if mask_real and is_file(recipe) else None
            rendered = masks.render_mask(
                recipe, (image.width, image.height), source_image=source, mask_file_image=mask_file
            )
    except masks.MaskError as exc:
        if is_file(recipe) and isinstance(mask, ImageFacts):  # a file's only MaskError: its shape
            return _shape_mismatch(mask, image)
        return f"{what}: {exc}"
    except Exception as exc:  # a file that decoded in its check but not now
        return f"{what}: {failure(exc)}"
    effective = rendered.mask
    target = fitted_size(image.width, image.height, max_input_side)
    if target is not None:
        effective = effective.resize(target, Image.Resampling.BILINEAR)
    stats = masks.mask_stats(effective)
    error = stats.error()
    if error:
        return f"{what} {error}"
    png = masks.mask_png_bytes(effective)
    notes = (
        *(f"{what} {note}" for note in rendered.notes),
        *(f"{what} {warning}" for warning in stats.warnings()),
    )
    return EffectiveMask(recipe, png, hashlib.sha256(png).hexdigest(), target, notes)


def without_path(recipe: masks.MaskRecipe) -> masks.MaskRecipe:
    # The file is keyed by its real path (an argument of its own), not the path as written.
    if isinstance(recipe.source, masks.FileSource):
        return replace(recipe, source=masks.FileSource(""))
    return recipe


def is_file(recipe: masks.MaskRecipe) -> bool:
    return isinstance(recipe.source, masks.FileSource)


def reads_pixels(recipe: masks.MaskRecipe) -> bool:
    """Whether drawing the recipe reads a file's pixels (the image's alpha, a mask file); a box
    or an ellipse depends on the image's size alone."""
    return _needs_source(recipe) or is_file(recipe)


def _needs_source(recipe: masks.MaskRecipe) -> bool:
    return isinstance(recipe.source, masks.AlphaSource)


def recipe_text(recipe: masks.MaskRecipe) -> str:
    """The recipe as the user wrote it, for messages: ``box:0,0.7,1,1 (mask_invert)``."""
    base = "the mask file" if is_file(recipe) else recipe.source.canonical()
    mods = [
        text
        for text, on in (
            ("mask_invert", recipe.invert),
            (f"mask_grow {recipe.grow}", recipe.grow),
            (f"mask_feather {recipe.feather}", recipe.feather),
        )
        if on
    ]
    return f"{base} ({', '.join(mods)})" if mods else base


def _upright(real: str) -> Image.Image:
    with Image.open(real) as image:
        image.load()
        return ImageOps.exif_transpose(image)


def recipe_for(
    job: Job, image: ImageFacts | None, mask: ImageFacts | None
) -> masks.MaskRecipe | None:
    """A plain file mask of another size than its image (same aspect ratio) is rendered too:
    scaled. None: the file is uploaded as it is."""
    if job.mask_recipe is not None:
        return job.mask_recipe
    if image is None or mask is None or job.mask is None:
        return None
    if (image.width, image.height) == (mask.width, mask.height):
        return None
    return masks.MaskRecipe(masks.FileSource(job.mask.value))


def _shape_mismatch(mask: ImageFacts, image: ImageFacts) -> str:
    width, height = mask.width, mask.height
    return (
        f"is {width}x{height} but the image is {image.width}x{image.height}; a mask must have "
        "the image's aspect ratio (one of another size with the same shape is scaled)"
    )
