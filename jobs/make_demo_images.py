"""Draw the example inputs under jobs/images and jobs/masks (committed; re-run to recreate).

Each image is a coloured product on a plain light background that does not touch the border,
so the emulator's background replacer (a flood fill from the border) finds the object. Each
mask is grayscale, the size of its image: white where the inpainter should edit, black keeps.

    python jobs/make_demo_images.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
BACKDROP = (244, 242, 237)
SHADOW = (222, 219, 212)


def _canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", size, BACKDROP)
    return image, ImageDraw.Draw(image)


def _mask(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    mask = Image.new("L", size, 0)
    return mask, ImageDraw.Draw(mask)


def _soften(mask: Image.Image) -> Image.Image:
    # A slightly soft edge blends the edit into its surroundings (the seeds' "edge quality").
    return mask.filter(ImageFilter.GaussianBlur(1.5))


def mug() -> tuple[Image.Image, Image.Image]:
    """A teal mug, 384x384: the mask covers the body, for a new glaze or pattern."""
    image, draw = _canvas((384, 384))
    draw.ellipse((92, 292, 292, 322), fill=SHADOW)
    draw.ellipse((232, 150, 312, 250), outline=(28, 120, 128), width=16)
    draw.rounded_rectangle((102, 112, 262, 306), radius=22, fill=(36, 142, 150))
    draw.ellipse((102, 100, 262, 128), fill=(24, 104, 110))
    draw.rectangle((118, 140, 128, 280), fill=(72, 172, 178))
    mask, paint = _mask(image.size)
    paint.rounded_rectangle((108, 130, 256, 300), radius=18, fill=255)
    return image, _soften(mask)


def lamp() -> tuple[Image.Image, Image.Image]:
    """A table lamp, 384x512 (portrait): the mask covers the shade."""
    image, draw = _canvas((384, 512))
    draw.ellipse((112, 436, 272, 470), fill=SHADOW)
    draw.ellipse((132, 424, 252, 456), fill=(60, 56, 52))
    draw.rectangle((186, 220, 198, 440), fill=(84, 78, 72))
    draw.polygon([(132, 96), (252, 96), (296, 236), (88, 236)], fill=(214, 168, 62))
    draw.line([(88, 236), (296, 236)], fill=(180, 138, 44), width=4)
    mask, paint = _mask(image.size)
    paint.polygon([(128, 88), (256, 88), (304, 242), (80, 242)], fill=255)
    return image, _soften(mask)


def sneaker() -> tuple[Image.Image, Image.Image]:
    """A red sneaker, 512x384 (landscape): the mask covers the sole."""
    image, draw = _canvas((512, 384))
    draw.ellipse((70, 268, 450, 300), fill=SHADOW)
    upper = [(86, 250), (96, 170), (150, 150), (214, 110), (262, 120), (300, 176), (420, 206),
             (436, 250)]  # fmt: skip
    draw.polygon(upper, fill=(196, 44, 52))
    draw.line([(170, 150), (250, 190)], fill=(245, 245, 245), width=6)
    draw.line([(190, 136), (262, 176)], fill=(245, 245, 245), width=6)
    draw.rounded_rectangle((78, 246, 444, 284), radius=14, fill=(250, 250, 248))
    draw.line([(84, 270), (438, 270)], fill=(210, 210, 206), width=3)
    mask, paint = _mask(image.size)
    paint.rounded_rectangle((72, 242, 450, 290), radius=16, fill=255)
    return image, _soften(mask)


def main() -> None:
    (HERE / "images").mkdir(exist_ok=True)
    (HERE / "masks").mkdir(exist_ok=True)
    products = {"mug": (mug, "png"), "lamp": (lamp, "jpg"), "sneaker": (sneaker, "png")}
    for name, (draw, extension) in products.items():
        image, mask = draw()
        if extension == "jpg":
            image.save(HERE / "images" / f"{name}.jpg", quality=85)
        else:
            image.save(HERE / "images" / f"{name}.png", optimize=True)
        mask.save(HERE / "masks" / f"{name}.png", optimize=True)
        print(f"wrote images/{name}.{extension} {image.size[0]}x{image.size[1]}, masks/{name}.png")


if __name__ == "__main__":
    main()
