"""Preflight: every check on a job that needs no network, before any credit is spent.

``Preflight.check(job)`` returns the job (``size: auto`` resolved), its problems and its notices
(warnings that do not stop the job). Each distinct file is opened once (cached by its real path,
in a bounded cache); the only per-job memory is the set of ids seen, to find duplicates.

Policies (the decisions behind the checks):

- Ids must be unique and usable as a folder name (see ``manifest.folder_name_problem``). They
  are compared ignoring letter case and Unicode normal form, because ``SKU-1`` and ``sku-1`` are
  one folder on macOS and Windows.
- Files: a path that points into the manifest's folder must stay inside it once symbolic links
  are resolved (a link placed there must not quietly upload a file from elsewhere). A path
  written outside the folder (absolute, ``~`` or ``..``) is taken as written: the manifest says
  plainly where the file is. Inputs must be regular, non-empty, readable files.
- Formats: the API takes PNG, JPEG and WebP (the seed's mask table; we hold images to the same).
  GIF, BMP, TIFF and others are refused with a hint to convert, not converted silently, so the
  bytes uploaded are the bytes the user has and the content key is the file's digest. JPEG
  files that Pillow calls MPO (phone cameras) are JPEGs and pass.
- Animated images (APNG, animated WebP) are refused: the API documents still images only and
  what it does with extra frames is unknown, which costs credits to find out.
- Integrity is checked once per file as cheaply as the format allows: PNG by ``verify()`` (every
  chunk's CRC, no pixel decoding), JPEG decoded at 1/8 scale (still reads every byte), WebP by a
  full decode. Images larger than ``MAX_PIXELS`` are refused (decompression bombs).
- Masks: ``L``, ``RGB`` and ``1`` are uploaded as they are (the API reads luminance). Any other
  mode is converted to grayscale before upload (``PlannedJob.mask_convert``, done by
  ``mask_upload_bytes``) and a notice says so. When the mask has real transparency (some alpha
  below 255) OpenAI's convention decides, since gpt-image models define it: transparent = edit,
  so the upload is ``255 - alpha`` and colours are ignored; the notice gives the share of the
  image that will be edited, so an inverted mask shows at a glance. Without transparency the
  conversion keeps luminance.
- Mask content (the seeds' checklist): all black after modifiers is an error (it would buy an
  unchanged image); all white (edits everything) and mostly mid-gray (low contrast) are warned.
  Notices about a file are given once, with the first job that uses it, so 100,000 jobs sharing
  a mask do not print it 100,000 times.
- ``size: auto`` picks the allowed size whose aspect ratio is closest to the image's (ties go to
  the square). For URL or asset inputs the image cannot be seen offline: 1024x1024 and a notice.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import unicodedata
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import urlsplit

from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from pipeline import masks
from pipeline.errors import Notice, Problem
from pipeline.inputs.cache import CachedInput, InputCache
from pipeline.inputs.fetch import FetchOptions, Prefetcher, fetch_all, prefetched
from pipeline.inputs.objectstore import REMOTE_SCHEMES
from pipeline.inputs.upload import MAX_INPUT_SIDE, Recipe, fitted_size, is_16bit, orientation_of
from pipeline.models import (
    BACKGROUNDS,
    N_MAX,
    OUTPUT_FORMATS,
    PROMPT_MAX,
    QUALITIES,
    SIZES,
    Feature,
    InputRef,
    Job,
)
from pipeline.naming import folder_name_problem

AUTO_SIZE = "auto"
DEFAULT_FETCH = FetchOptions()
_T = TypeVar("_T")
FALLBACK_SIZE = "1024x1024"
MAX_PIXELS = 80_000_000  # an 8000x8000 photo is scaled down (max_input_side); beyond: a bomb
LARGE_FILE_BYTES = 50 * 1024 * 1024  # OpenAI's documented cap per image file; not in the seeds
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}
MASK_MODES_AS_IS = frozenset({"L", "RGB", "1"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
COMPRESSION_RANGE = range(0, 101)
CACHE_SIZE = 65_536  # distinct files remembered; past that the least recently used are re-read

# Mask content thresholds, on 0-255 luminance (white = edit).
THUMBNAIL = (64, 64)
NEAR_BLACK = 8
NEAR_WHITE = 247
MID_GRAY = range(64, 192)
MID_GRAY_SHARE = 0.5


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


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What preflight learnt about one file; shared by every job that uses it."""

    path: str  # the real path
    format: str  # PNG, JPEG or WebP
    width: int
    height: int
    mode: str
    notes: tuple[str, ...] = ()  # notices about the file, given once
    convert_mask: bool = False  # as a mask, it must be converted to grayscale before upload
    orientation: int = 1  # EXIF orientation; width and height above are already upright
    sixteen_bit: bool = False  # 16 bits per channel: uploaded converted to 8 bits
    edits_nothing: bool = False  # as a mask, all black: an error unless modifiers change it


_Inspect = Callable[[str], ImageFacts | str]


class Preflight:
    """Checks jobs one at a time; remembers ids (for duplicates) and facts per distinct file.

    Ids are remembered as 8-byte fingerprints in an array, not as a set of strings (about 95
    bytes each): memory must not grow with a million-row catalog beyond the ledger's done-set.
    Duplicates are therefore found once the pass is over (``duplicate_ids``) and named by a
    cheap extra pass over the ids alone (``plan.scan`` does it), only if there are any.
    """

    def __init__(
        self,
        max_pixels: int = MAX_PIXELS,
        cache_size: int = CACHE_SIZE,
        max_input_side: int = MAX_INPUT_SIDE,
        cache: InputCache | None = None,
        fetch_options: FetchOptions = DEFAULT_FETCH,
    ) -> None:
        self.max_pixels = max_pixels
        self.max_input_side = max_input_side
        self.cache = cache if cache is not None else InputCache()
        self.fetch_options = fetch_options
        self._remote: dict[str, CachedInput | str] = {}  # URL → its fetch in this run
        self.sources: dict[str, str] = {}  # cached file → the URL it was fetched from
        self._prefetcher: Prefetcher | None = None  # during ahead(): fetching the next rows
        self._ids: array[int] | None = array("Q")  # None: not tracked (a later pass)
        self._id_filter = bytearray(ID_FILTER_BITS // 8)
        self._maybe_seen: set[int] = set()
        self._noted: set[tuple[str, str]] = set()  # (role, real path) whose notices were given
        self._resolve = lru_cache(maxsize=cache_size)(_resolve)
        self._image_facts = lru_cache(maxsize=cache_size)(self._inspect_image)
        self._mask_facts = lru_cache(maxsize=cache_size)(self._inspect_mask)
        # Masks are small (a box PNG is a few kB) but a catalog has many images: bounded too.
        self._effective = lru_cache(maxsize=MASK_CACHE_SIZE)(self._render_mask)

    def duplicate_ids(self) -> set[int]:
        """Fingerprints of the ids seen more than once in this pass (``id_fingerprint``)."""
        if not self._ids or not self._maybe_seen:
            return set()
        seen: set[int] = set()
        duplicates: set[int] = set()
        for fingerprint in self._ids:  # only candidates are held as Python ints
            if fingerprint in self._maybe_seen:
                (duplicates if fingerprint in seen else seen).add(fingerprint)
        return duplicates

    def check(
        self, job: Job, base_dir: Path | None = None
    ) -> tuple[Job | None, list[Problem], list[Notice]]:
        """The job with ``size: auto`` resolved (None if it has problems), problems, notices.

        ``base_dir`` is the manifest's folder, for the symbolic-link policy; ``scan`` passes it.
        """
        problems = [Problem(job.id, name, text, job.location) for name, text in self._fields(job)]
        notices: list[Notice] = []
        base = os.path.abspath(base_dir) if base_dir is not None else None
        image = self._check_file(job, "image", base, self._image_facts, problems, notices)
        mask = None
        if job.mask is not None and job.feature is Feature.INPAINT:
            mask = self._check_file(job, "mask", base, self._mask_facts, problems, notices)
        if job.feature is Feature.INPAINT and job.has_mask:
            self._check_effective_mask(job, image, mask, problems, notices)
        size = self._resolved_size(job, image, notices)
        if problems:
            return None, problems, notices
        changes: dict[str, object] = {} if size == job.size else {"size": size}
        for role, facts in (("image", image), ("mask", mask)):
            ref = job.image if role == "image" else job.mask
            if facts is not None and ref is not None and ref.kind == "url":
                # From here on a remote input is its cached file: its content key is its
                # bytes', it counts as an upload, and the upload reads the cache.
                changes[role] = InputRef("file", facts.path, ref.value)
                self.sources[facts.path] = ref.value
        return (replace(job, **changes) if changes else job), [], notices  # type: ignore[arg-type]

    # -- remote inputs --

    def prefetch(self, urls: Iterable[str]) -> int:
        """Fetch these URLs concurrently (before the checks); how many were fetched."""
        wanted = [url for url in dict.fromkeys(urls) if url not in self._remote]
        if wanted:
            self._remote.update(fetch_all(wanted, self.cache, self.fetch_options))
        return len(wanted)

    def prefetch_manifest(self, jobs: Iterable[object]) -> int:
        """Collect the distinct remote inputs of a stream of jobs and fetch them at once."""
        return self.prefetch(url for job in jobs for url in _remote_urls(job))

    @property
    def fetched(self) -> int:
        """Remote inputs fetched so far in this run (validate prints it)."""
        return sum(1 for value in self._remote.values() if not isinstance(value, str))

    def ahead(self, jobs: Iterable[_T]) -> Iterator[_T]:
        """The jobs in order, while the remote inputs of the next ones are being fetched."""
        with Prefetcher(self.cache, self.fetch_options) as prefetcher:
            self._prefetcher = prefetcher
            try:
                yield from prefetched(jobs, _remote_urls, prefetcher)
            finally:
                self._prefetcher = None

    def _fetched(self, url: str) -> CachedInput | str:
        if url not in self._remote:  # not prefetched: fetched alone (correct, only slower)
            if self._prefetcher is not None:
                self._remote[url] = self._prefetcher.result(url)
            else:
                self.prefetch([url])
        return self._remote[url]

    def mask_convert(self, job: Job) -> bool:
        """Whether the job's mask must be converted before upload (read from the cache)."""
        if job.mask is None or job.mask.kind != "file":
            return False
        real, _refusal = self._resolve(job.mask.value, None)
        facts = self._mask_facts(real)
        return isinstance(facts, ImageFacts) and facts.convert_mask

    def upload_recipe(self, job: Job, role: str) -> Recipe:
        """What to do to the job's image or mask file before upload (``inputs.upload``):
        undo EXIF rotation, scale to ``max_input_side`` (the mask to its image's new size),
        16 to 8 bits, a mask to grayscale. Read from the per-file cache; call after ``check``."""
        image = self._cached_facts(job.image, self._image_facts)
        if image is None:
            return Recipe()
        target = fitted_size(image.width, image.height, self.max_input_side)
        if role == "image":
            return Recipe(image.orientation, target, image.sixteen_bit)
        mask = self._cached_facts(job.mask, self._mask_facts)
        if mask is None:
            return Recipe()
        size = target if target is not None and target != (mask.width, mask.height) else None
        return Recipe(mask.orientation, size, mask.sixteen_bit, mask.convert_mask)

    def _cached_facts(self, ref: InputRef | None, inspect: _Inspect) -> ImageFacts | None:
        if ref is None or ref.kind != "file":
            return None
        real, _refusal = self._resolve(ref.value, None)
        facts = inspect(real)
        return facts if isinstance(facts, ImageFacts) else None

    # -- fields --

    def _fields(self, job: Job) -> Iterator[tuple[str, str]]:
        yield from self._id_problems(job.id)
        yield from _prompt_problems(job.prompt)
        yield from _parameter_problems(job)

    def _id_problems(self, job_id: str) -> Iterator[tuple[str, str]]:
        reason = folder_name_problem(job_id)
        if reason:
            yield "id", f"{job_id!r} cannot name the job's output folder: {reason}"
        if self._ids is not None:
            fingerprint = id_fingerprint(job_id)
            self._ids.append(fingerprint)
            # A bit per fingerprint's low bits: an id whose bit is already set may repeat one
            # (false positives are a few percent at a million ids), so only those are kept.
            index = fingerprint & ID_FILTER_MASK
            byte, bit = index >> 3, 1 << (index & 7)
            if self._id_filter[byte] & bit:
                self._maybe_seen.add(fingerprint)
            else:
                self._id_filter[byte] |= bit

    # -- files --

    def _check_file(
        self,
        job: Job,
        name: str,
        base: str | None,
        inspect: _Inspect,
        problems: list[Problem],
        notices: list[Notice],
    ) -> ImageFacts | None:
        ref = job.image if name == "image" else job.mask
        if ref is None:
            return None

        value, kind = ref.value, ref.kind

        def shown() -> str:  # only when a message needs it: relpath costs tens of µs a call
            return _shown_path(value, base) if kind == "file" else value

        if ref.kind == "asset":
            reason = _remote_ref_problem(ref)
            if reason:
                problems.append(Problem(job.id, name, reason, job.location))
            return None
        if ref.kind == "url":
            reason = _remote_ref_problem(ref)
            fetched = reason or self._fetched(ref.value)
            if isinstance(fetched, str):
                problems.append(Problem(job.id, name, f"{ref.value} {fetched}", job.location))
                return None
            real, refusal = str(fetched.path), None
        else:
            real, refusal = self._resolve(ref.value, base)
        facts = refusal or inspect(real)
        if isinstance(facts, str):
            problems.append(Problem(job.id, name, f"{shown()} {facts}", job.location))
            return None
        if facts.notes and (name, real) not in self._noted:
            self._noted.add((name, real))
            notices.extend(
                Notice(
                    job.id, name, f"{shown()} {note}; said once for all jobs using it", job.location
                )
                for note in facts.notes
            )
        return facts

    def _inspect_image(self, real: str) -> ImageFacts | str:
        problem = _file_problem(real)
        if problem:
            return problem
        try:
            with _bombs_refused(), Image.open(real) as image:
                problem = _header_problem(image, self.max_pixels)
                if problem:
                    return problem
                facts = _facts(real, image, _file_notes(real))
                _decode_cheaply(image)
                return facts
        # Pillow's decoders raise many types on malformed data (OSError, SyntaxError,
        # ValueError, struct.error, ...); bad input must never end in a traceback.
        except Exception as exc:
            return _failure(exc)

    def _inspect_mask(self, real: str) -> ImageFacts | str:
        problem = _file_problem(real)
        if problem:
            return problem
        try:
            with _bombs_refused(), Image.open(real) as image:
                problem = _header_problem(image, self.max_pixels)
                if problem:
                    return problem
                image.load()  # the content checks need the pixels anyway
                gray = mask_as_grayscale(image)
                notes = (
                    *_file_notes(real),
                    *_conversion_notes(image, gray),
                    *_content_notes(gray),
                )
                facts = _facts(real, image, notes, convert_mask=image.mode not in MASK_MODES_AS_IS)
                return replace(facts, edits_nothing=_extrema(gray)[1] <= NEAR_BLACK)
        except Exception as exc:  # as in _inspect_image
            return _failure(exc)

    # -- effective masks --

    def recipe_of(self, job: Job) -> masks.MaskRecipe | None:
        """The recipe whose rendering is uploaded for this job; None: the mask file as it is.

        Reads the per-file cache; call after ``check``.
        """
        image = self._cached_facts(job.image, self._image_facts)
        mask = self._cached_facts(job.mask, self._mask_facts)
        return _recipe_for(job, image, mask)

    def effective_mask(self, job: Job) -> EffectiveMask | None:
        """The mask made for this job (cached: once per distinct image, recipe and file)."""
        recipe = self.recipe_of(job)
        if recipe is None:
            return None
        image = self._cached_facts(job.image, self._image_facts)
        if image is None:
            return None
        mask_real = self._resolve(job.mask.value, None)[0] if job.mask is not None else ""
        rendered = self._effective(image.path, _without_path(recipe), mask_real)
        return rendered if isinstance(rendered, EffectiveMask) else None

    def _check_effective_mask(
        self,
        job: Job,
        image: ImageFacts | None,
        mask: ImageFacts | None,
        problems: list[Problem],
        notices: list[Notice],
    ) -> None:
        if job.protect and "asset" in (job.image.kind, job.mask.kind if job.mask else ""):
            message = (
                "needs a local image and mask: the source's pixels are composited after download"
            )
            problems.append(Problem(job.id, "protect", message, job.location))
        if image is None or (job.mask is not None and mask is None):
            if job.mask_recipe is not None and job.image.kind == "asset":
                message = "a generated or modified mask needs a local image to be drawn on"
                problems.append(Problem(job.id, "mask", message, job.location))
            return  # the file's own problem is reported already
        recipe = _recipe_for(job, image, mask)
        if recipe is None:
            if mask is not None and mask.edits_nothing:  # the file is the effective mask
                message = f"{masks.ALL_BLACK_ERROR} (white marks the area to edit)"
                problems.append(Problem(job.id, "mask", message, job.location))
            return
        mask_real = mask.path if mask is not None else ""
        rendered = self._effective(image.path, _without_path(recipe), mask_real)
        if isinstance(rendered, str):
            problems.append(Problem(job.id, "mask", rendered, job.location))
            return
        noted = ("effective", rendered.digest)
        if rendered.notes and noted not in self._noted:
            self._noted.add(noted)
            notices.extend(
                Notice(job.id, "mask", f"{note}; said once for all jobs using it", job.location)
                for note in rendered.notes
            )

    def _render_mask(
        self, image_real: str, recipe: masks.MaskRecipe, mask_real: str
    ) -> EffectiveMask | str:
        """Render ``recipe`` on the upright image (a str says why it cannot be used)."""
        facts = self._image_facts(image_real)
        if not isinstance(facts, ImageFacts):
            return facts
        what = _recipe_text(recipe)
        try:
            with _bombs_refused():
                source = _upright(image_real) if _needs_source(recipe) else None
                mask_file = _upright(mask_real) if mask_real and _is_file(recipe) else None
                rendered = masks.render_mask(
                    recipe,
                    (facts.width, facts.height),
                    source_image=source,
                    mask_file_image=mask_file,
                )
        except masks.MaskError as exc:
            mask_facts = self._mask_facts(mask_real) if _is_file(recipe) else None
            if isinstance(mask_facts, ImageFacts):  # a file's only MaskError: its shape
                return _shape_mismatch(mask_facts, facts)
            return f"{what}: {exc}"
        except Exception as exc:  # a file that decoded in its check but not now
            return f"{what}: {_failure(exc)}"
        effective = rendered.mask
        target = fitted_size(facts.width, facts.height, self.max_input_side)
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

    def _resolved_size(self, job: Job, image: ImageFacts | None, notices: list[Notice]) -> str:
        if job.size != AUTO_SIZE:
            return job.size
        if image is not None:
            return closest_size(image.width, image.height)
        if job.image.kind == "asset":
            message = f"auto needs a local image to measure; using {FALLBACK_SIZE}"
            notices.append(Notice(job.id, "size", message, job.location))
        return FALLBACK_SIZE


# --- field checks ---------------------------------------------------------------------------


ID_FILTER_BITS = 1 << 26  # 8 MB: about 1.5% of a million ids look like repeats, and are checked
ID_FILTER_MASK = ID_FILTER_BITS - 1


def id_fingerprint(job_id: str) -> int:
    """64 bits of the id as a folder name sees it: letter case and Unicode form ignored, since
    ``SKU-1`` and ``sku-1`` are one folder on macOS and Windows."""
    folded = unicodedata.normalize("NFC", job_id).casefold()
    return int.from_bytes(hashlib.blake2b(folded.encode(), digest_size=8).digest(), "little")


def _prompt_problems(prompt: str) -> Iterator[tuple[str, str]]:
    if not prompt.strip():
        yield "prompt", f"is empty: describe the edit (1-{PROMPT_MAX} characters)"
    elif len(prompt) > PROMPT_MAX:
        yield "prompt", f"is {len(prompt)} characters long; the API takes at most {PROMPT_MAX}"


def _parameter_problems(job: Job) -> Iterator[tuple[str, str]]:
    yield from _choice("size", job.size, (*SIZES, AUTO_SIZE))
    yield from _choice("quality", job.quality, QUALITIES)
    if job.feature is Feature.INPAINT:
        if not _is_int(job.n) or not 1 <= job.n <= N_MAX:
            yield "n", f"is {job.n!r}; must be 1 to {N_MAX}"
        yield from _choice("output_format", job.output_format, OUTPUT_FORMATS)
        if not _is_int(job.output_compression) or job.output_compression not in COMPRESSION_RANGE:
            yield "output_compression", f"is {job.output_compression!r}; must be 0 to 100"
        if not job.has_mask:
            yield "mask", "required for IMAGE_INPAINTER: white marks the area to edit"
    else:
        yield from _choice("background", job.background, BACKGROUNDS)
        if job.n != 1:
            yield "n", "applies only to IMAGE_INPAINTER; the background replacer makes one image"
        if job.has_mask:
            yield "mask", "applies only to IMAGE_INPAINTER; the background replacer takes none"


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if value not in allowed:
        yield name, f"{value!r} is not one of {', '.join(allowed)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _remote_urls(item: object) -> list[str]:
    """The URLs a manifest item's job fetches (none for a problem or a bad URL)."""
    if not isinstance(item, Job):
        return []
    refs = (item.image, item.mask)
    return [r.value for r in refs if r and r.kind == "url" and not _remote_ref_problem(r)]


def _remote_ref_problem(ref: InputRef) -> str | None:
    if ref.kind == "asset":
        return None if ref.value.strip() else "asset: needs a path after the colon"
    try:
        parts = urlsplit(ref.value)
        host = parts.hostname
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https", *REMOTE_SCHEMES):
        return f"{ref.value!r} is not an http(s) or object-store URL"
    if not host:
        return f"{ref.value!r} has no host"
    if any(char.isspace() for char in ref.value):
        return f"{ref.value!r} contains spaces; encode them as %20"
    return None


# --- files ----------------------------------------------------------------------------------


def _resolve(path: str, base: str | None) -> tuple[str, str | None]:
    """The real path, and why the folder policy refuses it (None if it does not)."""
    real = os.path.realpath(path)
    if base is None or not _is_within(path, base) or _is_within(real, os.path.realpath(base)):
        return real, None
    refusal = (
        f"leads outside the manifest's folder through a symbolic link (to {real}); "
        "write the real path if you mean that file"
    )
    return real, refusal


def _is_within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def _file_problem(real: str) -> str | None:
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return f"does not exist (looked for {real})"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        return "is not a regular file"
    if info.st_size == 0:
        return "is empty (0 bytes)"
    return None


def _file_notes(real: str) -> tuple[str, ...]:
    size = os.path.getsize(real)
    if size > LARGE_FILE_BYTES:
        megabytes = size / (1024 * 1024)
        return (f"is {megabytes:.0f} MB; gpt-image models take at most 50 MB per image",)
    return ()


@contextmanager
def _bombs_refused() -> Iterator[None]:
    # Pillow only warns between its own pixel limit and twice that; make that a refusal too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _failure(exc: Exception) -> str:
    """Why a file could not be opened or decoded, in words."""
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return "is too large to be a real image (decompression bomb)"
    if isinstance(exc, UnidentifiedImageError):
        return "is not an image Pillow can read (PNG, JPEG or WebP)"
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    return f"is damaged or truncated: {exc}"


def _header_problem(image: Image.Image, max_pixels: int) -> str | None:
    kind = ACCEPTED_FORMATS.get(image.format or "")
    if kind is None:
        return f"is {image.format or 'an unknown format'}; the API takes PNG, JPEG or WebP"
    if image.width * image.height > max_pixels:
        return f"is {image.width}x{image.height}, more than {max_pixels / 1e6:g} megapixels"
    if kind != "JPEG" and getattr(image, "is_animated", False):
        return "is animated; the API takes still images (save one frame)"
    return None


def _decode_cheaply(image: Image.Image) -> None:
    if image.format == "PNG":
        image.verify()  # every chunk's CRC up to IEND: finds truncation without decoding pixels
        return
    if image.format in ("JPEG", "MPO"):
        # Decoding at 1/8 scale still reads every byte, so truncation shows, ~20x cheaper.
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()


def _facts(
    real: str, image: Image.Image, notes: tuple[str, ...], convert_mask: bool = False
) -> ImageFacts:
    kind = ACCEPTED_FORMATS[image.format or ""]
    # PNG's eXIf chunk is read by Pillow only with the pixels, which would break verify(); phone
    # cameras write JPEG (or HEIC, refused), so PNG orientation is taken as upright.
    orientation = 1 if kind == "PNG" else orientation_of(image)
    width, height = image.size
    if orientation in (5, 6, 7, 8):  # a quarter turn: every check sees the image upright
        width, height = height, width
    with open(real, "rb") as handle:
        sixteen = is_16bit(image, handle.read(32))
    return ImageFacts(
        real, kind, width, height, image.mode, notes, convert_mask, orientation, sixteen
    )


def _shown_path(path: str, base: str | None) -> str:
    """The path as short as it can be told: relative to the manifest's folder when inside."""
    return os.path.relpath(path, base) if base is not None and _is_within(path, base) else path


# --- masks ----------------------------------------------------------------------------------

# Rendered masks remembered (a box is a few kB, a feathered 2048 px one up to ~100 kB); only
# the step from check to plan needs a hit when every image is distinct.
MASK_CACHE_SIZE = 256


def _without_path(recipe: masks.MaskRecipe) -> masks.MaskRecipe:
    # The file is keyed by its real path (an argument of its own), not the path as written.
    if isinstance(recipe.source, masks.FileSource):
        return replace(recipe, source=masks.FileSource(""))
    return recipe


def _is_file(recipe: masks.MaskRecipe) -> bool:
    return isinstance(recipe.source, masks.FileSource)


def _needs_source(recipe: masks.MaskRecipe) -> bool:
    return isinstance(recipe.source, masks.AlphaSource)


def _recipe_text(recipe: masks.MaskRecipe) -> str:
    """The recipe as the user wrote it, for messages: ``box:0,0.7,1,1 (mask_invert)``."""
    base = "the mask file" if _is_file(recipe) else recipe.source.canonical()
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


def _recipe_for(
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


def mask_as_grayscale(image: Image.Image) -> Image.Image:
    """The mask as the API expects it: mode L, white = edit (see the module docstring)."""
    if image.mode == "L":
        return image
    alpha = _alpha(image)
    if alpha is not None and _extrema(alpha)[0] < 255:
        return ImageChops.invert(alpha)  # OpenAI's convention: transparent = edit
    return image.convert("L")


def _alpha(image: Image.Image) -> Image.Image | None:
    if image.mode in ALPHA_MODES:
        return image.getchannel("A")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def mask_upload_bytes(path: Path) -> bytes:
    """PNG bytes of the mask converted to grayscale (L, white = edit), for ``mask_convert``."""
    with Image.open(path) as image:
        image.load()
        buffer = io.BytesIO()
        mask_as_grayscale(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _conversion_notes(image: Image.Image, gray: Image.Image) -> Iterator[str]:
    if image.mode in MASK_MODES_AS_IS:
        return
    alpha = _alpha(image)
    if alpha is not None and _extrema(alpha)[0] < 255:
        share = _mean(gray) / 255
        yield (
            f"has transparency: it will be uploaded as grayscale with OpenAI's rule "
            f"(transparent = edit, opaque = keep); {share:.0%} of the image will be edited"
        )
    else:
        yield f"is mode {image.mode}: it will be uploaded converted to grayscale"


def _content_notes(gray: Image.Image) -> Iterator[str]:
    darkest, brightest = _extrema(gray)
    if brightest <= NEAR_BLACK:
        return  # an error, not a note, unless modifiers change it (_check_effective_mask)
    if darkest >= NEAR_WHITE:
        yield "is all white: the whole image will be regenerated"
        return
    histogram = _thumbnail(gray).histogram()
    gray_share = sum(histogram[MID_GRAY.start : MID_GRAY.stop]) / sum(histogram)
    if gray_share > MID_GRAY_SHARE:
        yield (
            f"is mostly mid-gray ({gray_share:.0%}), low contrast: edits will only blend; "
            "use white to edit and black to keep"
        )


def _thumbnail(gray: Image.Image) -> Image.Image:
    small = gray.copy()
    small.thumbnail(THUMBNAIL)
    return small


def _mean(gray: Image.Image) -> float:
    histogram = _thumbnail(gray).histogram()
    return sum(value * count for value, count in enumerate(histogram)) / max(1, sum(histogram))


# --- size auto ------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def closest_size(width: int, height: int) -> str:
    """The allowed size whose aspect ratio is closest to ``width / height`` (ties: the first)."""
    ratio = math.log(width / height)

    def distance(size: str) -> float:
        size_width, size_height = (int(part) for part in size.split("x"))
        return abs(ratio - math.log(size_width / size_height))

    return min(SIZES, key=distance)


def _extrema(band: Image.Image) -> tuple[int, int]:
    """The darkest and brightest value of a one-band image (Pillow types it for every mode)."""
    return cast(tuple[int, int], band.getextrema())
