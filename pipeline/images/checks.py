"""Marketplace checks: may this delivered image go to Amazon, Google, Shopify as it is?

``marketplace_checks(image)`` measures an image once (``measure``: header, bytes, XMP, and for
JPEG and PNG the border ring and the product's box on the cheapest honest copy) and judges the
facts against each channel's rules (``checks_from_facts``, pure: stored facts can be judged
again when a rule changes, without the file). The result, ``ImageChecks``, keeps the facts and,
per channel, each failure as a stable machine code and a short human reason; a channel passes
when it has no failure. It is a msgspec ``Struct`` (``to_json`` / ``from_json``), so a ledger
line can carry it as one field; ``rules`` says which version of the rules produced it.

The rules:

- Amazon main image: JPEG or PNG; sRGB; longer side at least 1000 px; the border ring opaque and
  pure white (255 in every channel); the product (every pixel not pure white) filling at least
  85 % of the longer side with its own longer extent.
- Google: at least 500x500 px, at most 16 MB, and the AI provenance kept (the IPTC
  DigitalSourceType the pipeline writes into the XMP: a trained model made or edited it).
- Shopify: at most 5000x5000 px and 20 MB.

Sizes in MB are decimal (16 MB = 16,000,000 bytes): the stricter reading, so nothing passes here
that the channel could refuse.

Colour: a file with no ICC profile counts as sRGB (browsers and the shops' pipelines show it as
sRGB); a profile passes when its description names sRGB; any other profile (Display P3, Adobe
RGB, a dot-gain grey) fails, as does CMYK. Grayscale passes: an untagged grey pixel is the sRGB
neutral of the same value, so converting it to RGB (which the shops do) changes nothing, and a
grey 255 is the required pure white. Palette images pass on the same reasoning (their palette
holds sRGB values). Deeper modes (16-bit grey, float) fail: they are not 8-bit sRGB.
"""

from __future__ import annotations

import math
from enum import StrEnum

import msgspec
from PIL import Image

from pipeline.images.measure import WHITE, ImageFacts, ImageSource, measure, read_source

RULES_VERSION = 1  # raise when a rule or a threshold changes: stored verdicts are then stale

AMAZON_MIN_LONG_SIDE = 1000
AMAZON_MIN_FILL = 0.85
AMAZON_FORMATS = frozenset({"jpeg", "png"})
GOOGLE_MIN_SIDE = 500
GOOGLE_MAX_BYTES = 16_000_000
SHOPIFY_MAX_SIDE = 5000
SHOPIFY_MAX_BYTES = 20_000_000
# IPTC DigitalSourceType codes that say a trained model made or edited the picture.
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
# 8-bit modes whose values are sRGB when untagged (grey and palette: see the docstring).
SRGB_MODES = frozenset({"RGB", "RGBA", "L", "LA", "P", "PA", "1"})
SRGB_NAME = "srgb"  # what an sRGB profile's description contains (case aside)


class Channel(StrEnum):
    AMAZON = "amazon"
    GOOGLE = "google"
    SHOPIFY = "shopify"


class Code(StrEnum):
    """The machine names of failures (stable: the ledger, ``export.csv`` and filters use them)."""

    FORMAT = "format"
    COLOUR = "colour"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    FILE_TOO_LARGE = "file_too_large"
    BORDER_TRANSPARENT = "border_transparent"
    BORDER_NOT_WHITE = "border_not_white"
    NO_PRODUCT = "no_product"
    FILL_LOW = "fill_low"
    NO_PROVENANCE = "no_provenance"


class Failure(msgspec.Struct, frozen=True, array_like=True):
    """One failed rule: ``["border_not_white", "border not pure white (min 247)"]`` in JSON."""

    code: str
    reason: str


class ImageChecks(msgspec.Struct, frozen=True):
    """The verdicts on one image: what was measured, and each channel's failures."""

    facts: ImageFacts
    amazon: tuple[Failure, ...] = ()
    google: tuple[Failure, ...] = ()
    shopify: tuple[Failure, ...] = ()
    rules: int = RULES_VERSION

    def failures(self, channel: Channel) -> tuple[Failure, ...]:
        return {
            Channel.AMAZON: self.amazon,
            Channel.GOOGLE: self.google,
            Channel.SHOPIFY: self.shopify,
        }[channel]

    def passes(self, channel: Channel) -> bool:
        return not self.failures(channel)

    def verdicts(self) -> dict[Channel, bool]:
        return {channel: self.passes(channel) for channel in Channel}

    def codes(self, channel: Channel) -> tuple[str, ...]:
        return tuple(failure.code for failure in self.failures(channel))

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageChecks:
        """Raises ``msgspec.DecodeError`` (``ValidationError`` for a broken field)."""
        return _DECODER.decode(data)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ImageChecks)


def marketplace_checks(source: ImageSource, *, pixels: Image.Image | None = None) -> ImageChecks:
    """Measure one delivered image (a path or its bytes) and judge it for every channel.

    ``pixels``: the decoded pixels of a PNG the caller has just encoded (lossless, so they are
    the file's), to skip decoding it again. Raises ``ImageCheckError`` for unreadable bytes.
    """
    return checks_from_facts(measure(read_source(source), pixels=pixels))


def checks_from_facts(facts: ImageFacts) -> ImageChecks:
    """Judge measured facts against the current rules (pure, nothing read)."""
    return ImageChecks(
        facts=facts,
        amazon=amazon_failures(facts),
        google=google_failures(facts),
        shopify=shopify_failures(facts),
    )


def amazon_failures(facts: ImageFacts) -> tuple[Failure, ...]:
    found = []
    if facts.format not in AMAZON_FORMATS:
        found.append(Failure(Code.FORMAT, f"{facts.format.upper()} file (needs JPEG or PNG)"))
    colour = colour_problem(facts)
    if colour is not None:
        found.append(Failure(Code.COLOUR, colour))
    if facts.longer_side < AMAZON_MIN_LONG_SIDE:
        reason = f"longer side {facts.longer_side} px (at least {AMAZON_MIN_LONG_SIDE})"
        found.append(Failure(Code.TOO_SMALL, reason))
    found += _amazon_pixel_failures(facts)
    return tuple(found)


def _amazon_pixel_failures(facts: ImageFacts) -> list[Failure]:
    found = []
    if facts.border_alpha_min is not None and facts.border_alpha_min < WHITE:
        reason = f"border transparent (alpha min {facts.border_alpha_min})"
        found.append(Failure(Code.BORDER_TRANSPARENT, reason))
    if facts.border_min is not None and facts.border_min < WHITE:
        reason = f"border not pure white (min {facts.border_min})"
        found.append(Failure(Code.BORDER_NOT_WHITE, reason))
    if facts.fill is not None and facts.product is None:
        found.append(Failure(Code.NO_PRODUCT, "no product: the image is all white"))
    elif facts.fill is not None and facts.fill < AMAZON_MIN_FILL:
        reason = (
            f"product fills {_percent(facts.fill)} % of the longer side "
            f"(at least {_percent(AMAZON_MIN_FILL)} %)"
        )
        found.append(Failure(Code.FILL_LOW, reason))
    return found


def colour_problem(facts: ImageFacts) -> str | None:
    """Why the image is not sRGB, or None when it is (see the module's docstring)."""
    if facts.mode == "CMYK":
        return "CMYK colour (needs sRGB)"
    if facts.mode not in SRGB_MODES:
        return f"{facts.mode} pixels (needs 8-bit sRGB)"
    if facts.icc and SRGB_NAME not in facts.icc.lower():
        return f"ICC profile {facts.icc!r} is not sRGB"
    return None


def google_failures(facts: ImageFacts) -> tuple[Failure, ...]:
    found = []
    if min(facts.width, facts.height) < GOOGLE_MIN_SIDE:
        reason = f"{facts.width}x{facts.height} px (at least {GOOGLE_MIN_SIDE}x{GOOGLE_MIN_SIDE})"
        found.append(Failure(Code.TOO_SMALL, reason))
    if facts.file_bytes > GOOGLE_MAX_BYTES:
        found.append(Failure(Code.FILE_TOO_LARGE, _too_many_bytes(facts, GOOGLE_MAX_BYTES)))
    if facts.provenance not in AI_SOURCE_TYPES:
        reason = (
            f"provenance says {facts.provenance!r}, not a trained model's edit"
            if facts.provenance
            else "AI provenance not kept (no IPTC DigitalSourceType in the XMP)"
        )
        found.append(Failure(Code.NO_PROVENANCE, reason))
    return tuple(found)


def shopify_failures(facts: ImageFacts) -> tuple[Failure, ...]:
    found = []
    if max(facts.width, facts.height) > SHOPIFY_MAX_SIDE:
        reason = f"{facts.width}x{facts.height} px (at most {SHOPIFY_MAX_SIDE}x{SHOPIFY_MAX_SIDE})"
        found.append(Failure(Code.TOO_LARGE, reason))
    if facts.file_bytes > SHOPIFY_MAX_BYTES:
        found.append(Failure(Code.FILE_TOO_LARGE, _too_many_bytes(facts, SHOPIFY_MAX_BYTES)))
    return tuple(found)


def _percent(share: float) -> int:
    """Whole percent, rounded down: 0.849 is "84 %", never a failing "85 %"."""
    return math.floor(share * 100 + 1e-9)


def _too_many_bytes(facts: ImageFacts, limit: int) -> str:
    # Rounded up to 0.1 MB, so a file just over the limit never reads as the limit itself.
    megabytes = math.ceil(facts.file_bytes / 100_000) / 10
    return f"{megabytes:.1f} MB (at most {limit // 1_000_000} MB)"
