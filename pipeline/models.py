"""Frozen values passed between stages. No behaviour beyond small derived properties."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipeline.images.masks import MaskRecipe
    from pipeline.images.upload import Recipe

MODEL = "gpt-image-1-mini"


class Feature(StrEnum):
    INPAINT = "IMAGE_INPAINTER"
    BACKGROUND = "BACKGROUND_REPLACER"


# The seed tables, shared by the manifest schema and the preflight checks.
SIZES = ("1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("low", "medium", "high")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("auto", "opaque", "transparent")
PROMPT_MAX = 4000
N_MAX = 10


class Status(StrEnum):
    """A job's states in the ledger. A job's state is its latest line."""

    STARTED = "started"
    UPLOADED = "uploaded"
    SUBMITTED = "submitted"  # the feature call succeeded: results exist, not yet stored
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Some paid images could not be fetched: the job keeps what was delivered and waits for
    # --redo-missing to buy exactly the missing ones (never bought again silently).
    PARTIAL = "partial"


InputKind = Literal["file", "url", "asset"]


@dataclass(frozen=True, slots=True)
class InputRef:
    """Where an input image comes from: a local file, an http(s) URL, or an uploaded asset."""

    kind: InputKind
    value: str  # absolute path, URL, or asset path (without the "asset:" prefix)
    source: str | None = None  # a fetched remote input (a cache file): the URL it came from

    def __str__(self) -> str:
        return f"asset:{self.value}" if self.kind == "asset" else self.value


@dataclass(frozen=True, slots=True)
class Job:
    """One edit as the manifest asks for it, every default applied."""

    id: str
    feature: Feature
    image: InputRef
    prompt: str
    size: str = "1024x1024"  # one of SIZES once preflight has resolved "auto"
    quality: str = "medium"
    mask: InputRef | None = None  # inpainter only
    n: int = 1  # inpainter only; the background replacer makes one image
    output_format: str = "png"  # inpainter only
    output_compression: int = 85  # inpainter only
    background: str = "auto"  # background replacer only
    location: str = ""  # where the job was written, for messages: "demo.yaml job 3"
    # A mask made here (alpha, box:, ellipse:, or a file with modifiers); None for no mask or a
    # plain file mask. ``mask`` above is still the file of a file mask, modified or not.
    mask_recipe: MaskRecipe | None = None
    # Outside the mask, deliver the source's own pixels (docs/manifest.md#protect).
    protect: bool = False
    # The product the job belongs to (its images are exported and reviewed together); None: the
    # job is a product of its own. Not part of the content key: regrouping re-buys nothing.
    group: str | None = None

    def parameters(self) -> dict[str, Any]:
        """The promptObject fields other than the asset paths, as the API takes them."""
        if self.feature is Feature.INPAINT:
            return {
                "prompt": self.prompt,
                "size": self.size,
                "n": self.n,
                "quality": self.quality,
                "output_format": self.output_format,
                "output_compression": self.output_compression,
            }
        return {
            "prompt": self.prompt,
            "size": self.size,
            "quality": self.quality,
            "background": self.background,
        }

    @property
    def has_mask(self) -> bool:
        return self.mask is not None or self.mask_recipe is not None

    @property
    def expected_outputs(self) -> int:
        return self.n if self.feature is Feature.INPAINT else 1


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A checked job with the content key that decides whether a re-run must redo it."""

    job: Job
    key: str  # hash of input bytes, mask bytes, prompt and every parameter
    image_digest: str | None = None  # sha256 of the file's bytes (None for URL/asset inputs)
    mask_digest: str | None = None
    # The mask must be converted to grayscale before upload (e.g. RGBA whose alpha marks the
    # edit area); preflight.mask_upload_bytes() does it and says so in its warnings.
    mask_convert: bool = False
    # What is done to each file before upload (EXIF rotation undone, scaled to max_input_side,
    # 16 to 8 bits, a mask to grayscale: images.upload); None: upload the file as it is.
    image_recipe: Recipe | None = None
    mask_recipe: Recipe | None = None
    # A mask made here (generated, modified or scaled): the PNG uploaded in place of the file;
    # ``mask_digest`` is then the sha256 of these bytes, so identical masks go up once.
    mask_png: bytes | None = None
    # A new photo of a first run, checked from its header: read once, by its upload, which
    # gives ``image_digest`` and the ``key`` (empty until then). See ``UnreadImage``.
    unread: UnreadImage | None = None


@dataclass(frozen=True, slots=True)
class UnreadImage:
    """A job's photo that preflight checked from its header and trailer only: a job no earlier
    run knows, whose photo the stat cache does not know either (docs/ledger.md#stat-cache).
    Its upload reads it, once: the digest, the decode check and the report's thumbnail come
    from those bytes, and the content key is completed then, before anything is sent.

    ``head`` and ``tail`` are the key document's canonical JSON around the image's hex digest,
    so the key is exactly the one a full pass gives (``plan.keys.ImageKeys``); ``expected``
    are the header facts the plan was made from (format, upright width and height,
    orientation, 16-bit): bytes that say otherwise were changed since, and are not sent."""

    head: bytes
    tail: bytes
    expected: tuple[str, int, int, int, bool]

    def key(self, digest: str) -> str:
        """The content key of the job with the photo whose sha256 (hex) is ``digest``."""
        return hashlib.sha256(self.head + digest.encode("ascii") + self.tail).hexdigest()


@dataclass(frozen=True, slots=True)
class Asset:
    """An input stored on the API side: the path that imageUrl / maskUrl take."""

    path: str
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """What a feature call (or a poll of its record) answered.

    ``finished`` is False while the record is still processing: ``result_paths`` is empty then
    and the record is polled by ``uuid``, never bought again.
    """

    uuid: str
    result_paths: tuple[str, ...]
    temporary_url: str | None = None
    used_credit: int | None = None
    credit_limit: int | None = None
    finished: bool = True
    status: str = "SUCCESS"  # aiRecord.status as the API wrote it


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    kind: str
    message: str
    http_status: int | None = None
    # The job's retries ran out on transient errors alone (5xx, timeouts, connection): the next
    # run tries it again without --retry-failed (docs/ledger.md#transient-failures).
    transient: bool = False
    uuid: str | None = None  # the record concerned, when there is one (processing_timeout)
