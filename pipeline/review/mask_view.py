"""The effective mask of a generated mask (``box:``, ``ellipse:``, ``alpha``, a file with
modifiers), drawn for the review page from the recipe the ledger recorded.

The ledger's ``started`` line holds the recipe as ``MaskRecipe.canonical()`` text; this reads it
back and renders it with ``pipeline.images.masks.render_mask`` at the image's full upright size, as
preflight renders the upload (pixel boxes, grow and feather are in the image's pixels), then
scales it to the thumbnail. Done once per distinct (source, recipe, mask file): a thumbnail task.
"""

from __future__ import annotations

from PIL import Image, ImageOps

from pipeline.images.masks import (
    AlphaSource,
    FileSource,
    MaskRecipe,
    parse_mask_spec,
    render_mask,
)

_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112


def recipe_from_text(text: str, file_path: str | None = None) -> MaskRecipe | None:
    """The recipe of its ``canonical`` text; None if the text does not read as one (or names
    a file mask without ``file_path``)."""
    source_text, *options = text.split(";")
    values = dict(option.partition("=")[::2] for option in options)
    try:
        invert = bool(int(values.get("invert", "0")))
        grow, feather = int(values.get("grow", "0")), int(values.get("feather", "0"))
    except ValueError:
        return None
    if source_text == "file":
        if not file_path:
            return None
        return MaskRecipe(FileSource(file_path), invert, grow, feather)
    source = parse_mask_spec(source_text)
    if isinstance(source, str | FileSource):
        return None  # not a shape or alpha: a hand-edited line
    return MaskRecipe(source, invert, grow, feather)


def recipe_label(recipe: MaskRecipe, file_label: str = "") -> str:
    """How the page names a generated mask: ``box:0,0.7,1,1, grow 8, feather 12``."""
    is_file = isinstance(recipe.source, FileSource)
    parts = [(file_label or "file") if is_file else recipe.source.canonical()]
    if recipe.invert:
        parts.append("inverted")
    if recipe.grow:
        parts.append(f"grow {recipe.grow}")
    if recipe.feather:
        parts.append(f"feather {recipe.feather}")
    return ", ".join(parts)


def effective_mask(source: str, recipe: MaskRecipe, size: tuple[int, int]) -> Image.Image:
    """The mask the API got for this source (mode L, white = edit), scaled to ``size``.

    Raises what opening the files or ``render_mask`` raises (the caller shows no mask then).
    """
    with Image.open(source) as opened:
        source_image = None
        if isinstance(recipe.source, AlphaSource):
            opened.load()
            source_image = ImageOps.exif_transpose(opened)
            full = source_image.size
        else:  # only the size is needed: no decode
            width, height = opened.size
            turned = opened.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS
            full = (height, width) if turned else (width, height)
    mask_image = None
    if isinstance(recipe.source, FileSource):
        with Image.open(recipe.source.path) as mask_file:
            mask_file.load()
            mask_image = ImageOps.exif_transpose(mask_file)
    rendered = render_mask(recipe, full, source_image=source_image, mask_file_image=mask_image)
    return rendered.mask.resize(size, Image.Resampling.BILINEAR)
