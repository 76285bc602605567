"""``Preflight``: every check on a job that needs no network, with its per-file caches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import TypeVar

from pipeline.errors import Notice, Problem
from pipeline.images import masks
from pipeline.images.upload import MAX_INPUT_SIDE, Recipe, fitted_size
from pipeline.inputs.cache import CachedInput, InputCache
from pipeline.inputs.fetch import FetchOptions, Prefetcher, fetch_all, prefetched
from pipeline.models import Feature, InputRef, Job
from pipeline.preflight.effective import (
    MASK_CACHE_SIZE,
    EffectiveMask,
    reads_pixels,
    recipe_for,
    render_mask,
    without_path,
)
from pipeline.preflight.fields import (
    AUTO_SIZE,
    IdSet,
    id_problem,
    parameter_problems,
    prompt_problems,
    remote_ref_problem,
    remote_urls,
    shown_ref,
)
from pipeline.preflight.files import (
    MAX_PIXELS,
    UNUSABLE_NAME,
    ImageFacts,
    RealPaths,
    closest_size,
    folder_refusal,
    shown_path,
)
from pipeline.preflight.quick import KnownPhoto, QuickLook
from pipeline.preflight.reader import InputReader
from pipeline.preflight.statcache import StatCache

_T = TypeVar("_T")

DEFAULT_FETCH = FetchOptions()
FALLBACK_SIZE = "1024x1024"
# Distinct files whose facts this pass remembers; past that the least recently used are asked
# of the stat cache again (a stat and a lookup: the file is not read).
CACHE_SIZE = 4096
BASE_CACHE = 16  # manifest folders whose real path is remembered
ONCE = "; said once for all jobs using it"

_Inspect = Callable[[str], ImageFacts | str]
# Told of each local image file read for its check: its path as the job names it, and the
# bytes read (the report makes its thumbnail from them instead of opening the file again).
ImageRead = Callable[[str, bytes], None]


@dataclass(slots=True)
class ShapeCheck:
    """What preflight says about a job apart from its id: shared by every job of that shape.

    ``once`` notices are about a file or a rendered mask and are given with the first job
    using it; ``each`` notices concern every job (``size: auto`` without a local image).
    """

    job: Job | None  # ``size: auto`` resolved; None if there are problems
    problems: list[Problem] = field(default_factory=list)
    once: list[Notice] = field(default_factory=list)
    each: list[Notice] = field(default_factory=list)


class Preflight:
    """Checks jobs one at a time; remembers ids (for duplicates) and facts per distinct file.

    Ids are remembered as fingerprints (``fields.IdSet``); duplicates are found once the pass
    is over (``duplicate_ids``) and named by a cheap extra pass over the ids alone
    (``plan.scan`` does it), only if there are any. Everything but the id depends only on the
    job's other fields and its files, so a caller may check a shape once (``check_shape``) and
    each id on its own (``check_id``); ``check`` does both.
    """

    def __init__(
        self,
        max_pixels: int = MAX_PIXELS,
        cache_size: int = CACHE_SIZE,
        max_input_side: int = MAX_INPUT_SIDE,
        cache: InputCache | None = None,
        fetch_options: FetchOptions = DEFAULT_FETCH,
        stat_cache: StatCache | None = None,
        on_image_read: ImageRead | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        # Each file's digest and facts from one read, or none while the stat cache knows it.
        self.reader = InputReader(stat_cache, max_pixels)
        self._on_image_read = on_image_read
        self.reader.keep_image_bytes = on_image_read is not None
        # The fast path of a row's own photo (``preflight.quick``): ``(path, real path, digest,
        # encoded image verdict)`` when a plain local path names a file the stat cache knows
        # unchanged; None: ``check_local_image`` must say. A bound method: called once a row.
        self.quick = QuickLook(self.reader.cache)
        self.known_image: Callable[[str, str], KnownPhoto | None] = self.quick.known
        self.max_input_side = max_input_side
        self.cache = cache if cache is not None else InputCache()
        self.fetch_options = fetch_options
        self._remote: dict[str, CachedInput | str] = {}  # URL → its fetch in this run
        self.sources: dict[str, str] = {}  # cached file → the URL it was fetched from
        self._prefetcher: Prefetcher | None = None  # during ahead(): fetching the next rows
        self.ids = IdSet()
        self._add_id = self.ids.add
        self._noted: set[tuple[str, str]] = set()  # (role, real path) whose notices were given
        self._real_paths = RealPaths()
        self._real_path = lru_cache(maxsize=cache_size)(self._real_paths)
        self._base_real = lru_cache(maxsize=BASE_CACHE)(os.path.realpath)
        self._image_facts = lru_cache(maxsize=cache_size)(self._inspect_image)
        self._mask_facts = lru_cache(maxsize=cache_size)(self._inspect_mask)
        # Masks are small (a box PNG is a few kB) but a catalog has many images: bounded too.
        self._effective = lru_cache(maxsize=MASK_CACHE_SIZE)(self._render_mask)
        self._drawn = lru_cache(maxsize=MASK_CACHE_SIZE)(self._draw_mask)

    def duplicate_ids(self) -> set[int]:
        """Fingerprints of the ids seen more than once in this pass (``id_fingerprint``)."""
        return self.ids.duplicates()

    def check(
        self, job: Job, base_dir: Path | None = None
    ) -> tuple[Job | None, list[Problem], list[Notice]]:
        """The job with ``size: auto`` resolved (None if it has problems), problems, notices.

        ``base_dir`` is the manifest's folder, for the symbolic-link policy; ``scan`` passes it.
        """
        reason = self.check_id(job.id)
        shape = self.check_shape(job, base_dir)
        problems = shape.problems
        if reason:
            problems = [Problem(job.id, "id", reason, job.location), *problems]
        checked = shape.job if not problems else None
        return checked, problems, [*shape.once, *shape.each]

    def check_id(self, job_id: str) -> str | None:
        """Remember the id (for duplicates); why it cannot name a folder, or None."""
        self._add_id(job_id)
        return id_problem(job_id)

    def check_shape(
        self, job: Job, base_dir: Path | None = None, prompt: bool = True
    ) -> ShapeCheck:
        """Every check but the id's (and the prompt's if not ``prompt``), for a job whose id
        ``check_id`` checks (and whose prompt ``fields.prompt_problems``)."""
        result = ShapeCheck(None)
        problems, notices = result.problems, result.once
        problems.extend(self.field_problems(job, prompt))
        base = os.path.abspath(base_dir) if base_dir is not None else None
        image = self._check_file(job, "image", base, self._image_facts, problems, notices)
        mask = None
        if job.mask is not None and job.feature is Feature.INPAINT:
            mask = self._check_file(job, "mask", base, self._mask_facts, problems, notices)
        if job.feature is Feature.INPAINT and job.has_mask:
            self._check_effective_mask(job, image, mask, problems, notices)
        size = self._resolved_size(job, image, result.each)
        if problems:
            return result
        changes: dict[str, object] = {} if size == job.size else {"size": size}
        for role, facts in (("image", image), ("mask", mask)):
            ref = job.image if role == "image" else job.mask
            if facts is not None and ref is not None and ref.kind == "url":
                # From here on a remote input is its cached file: its content key is its
                # bytes', it counts as an upload, and the upload reads the cache.
                changes[role] = InputRef("file", facts.path, ref.value)
                self.sources[facts.path] = ref.value
        result.job = replace(job, **changes) if changes else job  # type: ignore[arg-type]
        return result

    # -- remote inputs --

    def prefetch(self, urls: Iterable[str]) -> int:
        """Fetch these URLs concurrently (before the checks); how many were fetched."""
        wanted = [url for url in dict.fromkeys(urls) if url not in self._remote]
        if wanted:
            self._remote.update(fetch_all(wanted, self.cache, self.fetch_options))
        return len(wanted)

    def prefetch_manifest(self, jobs: Iterable[object]) -> int:
        """Collect the distinct remote inputs of a stream of jobs and fetch them at once."""
        return self.prefetch(url for job in jobs for url in remote_urls(job))

    def ahead(self, items: Iterable[_T], urls_of: Callable[[_T], list[str]]) -> Iterator[_T]:
        """The items in order, while the remote inputs of the next ones are being fetched.

        The fetching starts with the first item that has a remote input: a catalog of local
        files (most, and every nightly one) starts no fetcher and holds no items back."""
        remaining = iter(items)
        for item in remaining:
            if not urls_of(item):
                yield item
                continue
            with Prefetcher(self.cache, self.fetch_options) as prefetcher:
                self._prefetcher = prefetcher
                try:
                    yield from prefetched(chain((item,), remaining), urls_of, prefetcher)
                finally:
                    self._prefetcher = None
            return

    @property
    def fetched(self) -> int:
        """Remote inputs fetched so far in this run (validate prints it)."""
        return sum(1 for value in self._remote.values() if not isinstance(value, str))

    def _fetched(self, url: str) -> CachedInput | str:
        if url not in self._remote:  # not prefetched: fetched alone (correct, only slower)
            if self._prefetcher is not None:
                self._remote[url] = self._prefetcher.result(url)
            else:
                self.prefetch([url])
        return self._remote[url]

    # -- what the planner reads back (from the caches; call after ``check``) --

    def mask_convert(self, job: Job) -> bool:
        """Whether the job's mask must be converted before upload (read from the cache)."""
        if job.mask is None or job.mask.kind != "file":
            return False
        real, _refusal = self._resolve(job.mask.value, None)
        facts = self._mask_facts(real)
        return isinstance(facts, ImageFacts) and facts.convert_mask

    def upload_recipe(self, job: Job, role: str) -> Recipe:
        """What to do to the job's image or mask file before upload (``images.upload``):
        undo EXIF rotation, scale to ``max_input_side`` (the mask to its image's new size),
        16 to 8 bits, a mask to grayscale. Read from the per-file cache; call after ``check``."""
        image = self._cached_facts(job.image, self._image_facts)
        if image is None:
            return Recipe()
        if role == "image":
            return self.image_recipe(image)
        target = fitted_size(image.width, image.height, self.max_input_side)
        mask = self._cached_facts(job.mask, self._mask_facts)
        if mask is None:
            return Recipe()
        size = target if target is not None and target != (mask.width, mask.height) else None
        return Recipe(mask.orientation, size, mask.sixteen_bit, mask.convert_mask)

    def recipe_of(self, job: Job) -> masks.MaskRecipe | None:
        """The recipe whose rendering is uploaded for this job; None: the mask file as it is."""
        image = self._cached_facts(job.image, self._image_facts)
        mask = self._cached_facts(job.mask, self._mask_facts)
        return recipe_for(job, image, mask)

    def effective_mask(self, job: Job) -> EffectiveMask | None:
        """The mask made for this job (cached: once per distinct image, recipe and file)."""
        recipe = self.recipe_of(job)
        if recipe is None:
            return None
        image = self._cached_facts(job.image, self._image_facts)
        if image is None:
            return None
        mask_real = self._resolve(job.mask.value, None)[0] if job.mask is not None else ""
        rendered = self._rendered(image, recipe, mask_real)
        return rendered if isinstance(rendered, EffectiveMask) else None

    def _cached_facts(self, ref: InputRef | None, inspect: _Inspect) -> ImageFacts | None:
        """A checked file's facts, for planning its job. A photo glanced at (``check_local_
        image``) gives its header facts: what planning needs, and its upload checks the rest."""
        if ref is None or ref.kind != "file":
            return None
        real, _refusal = self._resolve(ref.value, None)
        if inspect is self._image_facts:
            glanced = self.reader.glanced(real)
            if glanced is not None:
                return glanced
        facts = inspect(real)
        return facts if isinstance(facts, ImageFacts) else None

    # -- files --

    def _resolve(self, path: str, base: str | None) -> tuple[str, str | None]:
        """The file's real path, and why the folder policy refuses it (None if it does not)."""
        try:
            real = self._real_path(path)
        except ValueError:  # a NUL byte or an unencodable character: no file has this name
            return path, UNUSABLE_NAME
        if base is None:
            return real, None
        return real, folder_refusal(path, real, base, self._base_real(base))

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
        if ref.kind == "asset":
            reason = remote_ref_problem(ref)
            if reason:
                problems.append(Problem(job.id, name, reason, job.location))
            return None
        if ref.kind == "url":
            reason = remote_ref_problem(ref)
            fetched = reason or self._fetched(ref.value)
            if isinstance(fetched, str):
                message = f"{shown_ref(ref.value)} {fetched}"
                problems.append(Problem(job.id, name, message, job.location))
                return None
            real, refusal = str(fetched.path), None
        else:
            real, refusal = self._resolve(ref.value, base)
        facts, notes = self._file_verdict(ref, name, base, real, refusal or inspect(real))
        if self._on_image_read is not None and name == "image" and ref.kind == "file":
            self._pass_on_read(ref.value, real)
        if isinstance(facts, str):
            problems.append(Problem(job.id, name, facts, job.location))
            return None
        notices.extend(Notice(job.id, name, note, job.location) for note in notes)
        return facts

    def check_local_image(
        self, ref: InputRef, base: str, glance: bool = False
    ) -> tuple[ImageFacts | str, list[str], str | None]:
        """A local image file's facts (or the problem's message), the notices about the file
        not given yet, and its digest (None with a problem): exactly what ``check`` says about
        a job's ``image``, for a caller that makes the Problem and Notices itself (``rows``:
        each row its own photo), from one look at the file (one ``lstat``, or a read).
        ``base``: the manifest's folder, absolute. ``glance``: a new photo whose header and end
        say it is whole is not read (its upload reads it): facts, and no digest."""
        try:
            real, info = self._real_paths.with_stat(ref.value)
        except ValueError:  # a NUL byte or an unencodable character: no file has this name
            real, info = ref.value, None
            verdict: ImageFacts | str = UNUSABLE_NAME
        else:
            refusal = folder_refusal(ref.value, real, base, self._base_real(base))
            verdict = refusal or self.reader.image(real, info, glance)
            if self._on_image_read is not None:
                self._pass_on_read(ref.value, real)
        facts, notes = self._file_verdict(ref, "image", base, real, verdict)
        digest = self.reader.recalled_digest(real) if isinstance(facts, ImageFacts) else None
        return facts, notes, digest

    def _pass_on_read(self, path: str, real: str) -> None:
        """Hand the bytes just read of the image at ``path`` (``real``) to ``on_image_read``."""
        data = self.reader.take_image_bytes(real)
        if data is not None and self._on_image_read is not None:
            self._on_image_read(path, data)

    def _file_verdict(
        self, ref: InputRef, name: str, base: str | None, real: str, facts: ImageFacts | str
    ) -> tuple[ImageFacts | str, list[str]]:
        # The path as short as it can be told (relpath costs tens of µs: only for messages).
        if isinstance(facts, str):
            shown = shown_path(ref.value, base) if ref.kind == "file" else ref.value
            return f"{shown_ref(shown)} {facts}", []
        if not facts.notes or (name, real) in self._noted:
            return facts, []
        self._noted.add((name, real))
        shown = shown_path(ref.value, base) if ref.kind == "file" else ref.value
        return facts, [f"{shown} {note}{ONCE}" for note in facts.notes]

    def image_recipe(self, image: ImageFacts) -> Recipe:
        """What to do to an image file before upload (``upload_recipe``'s image part)."""
        target = fitted_size(image.width, image.height, self.max_input_side)
        return Recipe(image.orientation, target, image.sixteen_bit)

    def field_problems(self, job: Job, prompt: bool = True) -> list[Problem]:
        """``check_shape``'s problems with the job's own fields (its prompt if ``prompt``, its
        parameters), before any file is looked at."""
        prompts = prompt_problems(job.prompt) if prompt else ()
        return [
            Problem(job.id, name, text, job.location)
            for name, text in (*prompts, *parameter_problems(job))
        ]

    def _inspect_image(self, real: str) -> ImageFacts | str:
        return self.reader.image(real)

    def _inspect_mask(self, real: str) -> ImageFacts | str:
        return self.reader.mask(real)

    def start_over(self) -> None:
        """A pass that starts over (a stale plan memo) gives the notices about files again."""
        self._noted.clear()

    def settled_signature(self, path: str, digest: str | None) -> tuple[int, ...] | None:
        """``(dev, ino, size, mtime_ns, ctime_ns)`` of the file at ``path`` (as a job names it)
        when it still holds the bytes of ``digest`` (None: whatever they were) that this pass
        checked, and was not modified in the instant it was read; None: nothing but a new
        check may vouch for it (the plan memo, ``pipeline.plan.memo``)."""
        try:
            real = self._real_path(path)
        except ValueError:
            return None
        signature = self.reader.settled(real, digest)
        return None if signature is None else tuple(signature)

    def digest(self, path: str) -> str:
        """sha256 hex of a file ``check`` passed, from the read that checked it (or the stat
        cache): the planner's ``digest_of``. Raises OSError if it can no longer be read."""
        real, _refusal = self._resolve(path, None)
        return self.reader.digest(real)

    # -- effective masks --

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
        recipe = recipe_for(job, image, mask)
        if recipe is None:
            if mask is not None and mask.edits_nothing:  # the file is the effective mask
                message = f"{masks.ALL_BLACK_ERROR} (white marks the area to edit)"
                problems.append(Problem(job.id, "mask", message, job.location))
            return
        mask_real = mask.path if mask is not None else ""
        rendered = self._rendered(image, recipe, mask_real)
        if isinstance(rendered, str):
            problems.append(Problem(job.id, "mask", rendered, job.location))
            return
        noted = ("effective", rendered.digest)
        if rendered.notes and noted not in self._noted:
            self._noted.add(noted)
            notices.extend(
                Notice(job.id, "mask", f"{note}{ONCE}", job.location) for note in rendered.notes
            )

    def _rendered(
        self, image: ImageFacts, recipe: masks.MaskRecipe, mask_real: str
    ) -> EffectiveMask | str:
        """The recipe drawn for this image: once per photo (and mask file) when it reads their
        pixels, once per image size when it does not (a catalog of distinct photos with one
        box mask draws it once per size, not once per photo)."""
        recipe = without_path(recipe)
        if reads_pixels(recipe):
            return self._effective(image.path, recipe, mask_real)
        return self._drawn(image.width, image.height, recipe)

    def _draw_mask(self, width: int, height: int, recipe: masks.MaskRecipe) -> EffectiveMask | str:
        sized = ImageFacts("", "PNG", width, height, "RGB")  # only the upright size is read
        return render_mask(recipe, sized, None, "", self.max_input_side)

    def _render_mask(
        self, image_real: str, recipe: masks.MaskRecipe, mask_real: str
    ) -> EffectiveMask | str:
        facts = self._image_facts(image_real)
        if not isinstance(facts, ImageFacts):
            return facts
        mask = self._mask_facts(mask_real) if mask_real else None
        return render_mask(recipe, facts, mask, mask_real, self.max_input_side)

    def _resolved_size(self, job: Job, image: ImageFacts | None, notices: list[Notice]) -> str:
        if job.size != AUTO_SIZE:
            return job.size
        if image is not None:
            return closest_size(image.width, image.height)
        if job.image.kind == "asset":
            message = f"auto needs a local image to measure; using {FALLBACK_SIZE}"
            notices.append(Notice(job.id, "size", message, job.location))
        return FALLBACK_SIZE
