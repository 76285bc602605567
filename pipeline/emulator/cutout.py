"""BACKGROUND_REPLACER's cut-out: the backdrop is what is connected to the borders and looks
like them; the product is the rest."""

from __future__ import annotations

from PIL import Image, ImageChops

# The flood fill runs in Python, so it works on a copy no larger than this on its longer side.
_FLOOD_SIDE = 128
# Largest per-channel distance from the border color that still counts as background.
_FLOOD_TOLERANCE = 40


def foreground_mask(source: Image.Image) -> Image.Image:
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
