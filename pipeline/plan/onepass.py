"""The one pass over a manifest: each shape of row checked once, each row's id on its own.

A catalog of a million rows over a handful of files repeats a few job *shapes* (everything but
the id and location: files, mask, prompt, parameters). The manifest yields such
rows as ``Row`` tuples without building a Job (``Manifest.iter_entries``); the first row of a
shape is built, checked and planned in full, and every later one costs its id's check and a
dict lookup. What a shape found (problems, notices that concern every job) is said again for
each of its rows with the row's own id and location, so the report is the same as if each row
had been checked alone, and notices about a file are still given once, with its first job.

A catalog of distinct photos repeats its shape too, but every row names its own image: rows of
a background job whose image cell is a plain local path share an ``ImageShape`` (everything but
id, prompt and image). Each row's image is then checked on its own (from the stat cache: an
unchanged file is not opened) and keyed with the shape's key document; what the image decides
beyond its digest (the size ``auto`` resolves to, the upload recipe) picks one of a few
variants, each planned once and counted as a shape of its own. The report is again the one
each row alone gives (a test compares both ways).

Jobs from ``jobs:``, ``glob:``, JSONL and the rows a shape cannot stand for (a template in a
cell) take the full path one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pipeline.errors import Notice, Problem
from pipeline.images.upload import Recipe
from pipeline.manifest.build import input_ref, placeholders
from pipeline.manifest.shapes import Row, RowLayout
from pipeline.manifest.sources import Manifest
from pipeline.models import PROMPT_MAX, Feature, InputRef, Job, PlannedJob, UnreadImage
from pipeline.plan.keys import UNREAD_DIGEST, ImageKeys, key_of, unread_image, with_prompt
from pipeline.plan.spool import with_identity
from pipeline.preflight.core import Preflight
from pipeline.preflight.fields import AUTO_SIZE, prompt_problems, remote_ref_problem, remote_urls
from pipeline.preflight.files import ImageFacts, closest_size

PROMPT_KEYS = 32  # content keys remembered per shape, by prompt (bounded: 1024 shapes)
SHAPE_CACHE = 1024  # shapes remembered per pass; past that the cache starts over (see Shape)
VERDICTS_REMEMBERED = 256  # an ImageShape's variants by encoded verdict (``ImageShape.by_facts``)

LIFTED_IMAGE = "\x00image"  # in a key: the image cell, a plain local path, is the row's own
_LIFTED = (LIFTED_IMAGE,)
_uncached_input_ref = input_ref.__wrapped__  # distinct photos: a cache would only fill up

# (shape, job id, row number, prompt, key[, image path, image digest]): a valid job of a shared
# shape; the prompt and content key are the row's own when the shape's prompt is (else None:
# the shape's); a row of an ``ImageShape`` has its own key, image and digest, or, for a photo
# its upload reads (``RowPass.glance``), an ``UnreadImage`` for its key and no digest.
Hit = (
    tuple["Shape", str, int, str | None, str | None]
    | tuple["Shape", str, int, str | None, str, str, str]
    | tuple["Shape", str, int, str | None, UnreadImage, str, None]
)


class PlanJob(Protocol):
    """A checked job planned (``prepare.plan_job``): its PlannedJob and key document, or why
    an input cannot be read; ``image_digest`` when the caller has it."""

    def __call__(
        self, job: Job, image_digest: str | None = None
    ) -> tuple[PlannedJob, dict[str, Any]] | Problem: ...


Built = tuple[Job | None, list[Problem]]  # a row's job (if any) and the manifest's problems


@dataclass(slots=True, eq=False)
class ImageShape:
    """Rows that share everything but id, prompt and a local image file of their own (a
    catalog of distinct photos): a background job, no mask. The fields are checked once;
    each row's image on its own; ``variants`` are the planned shapes by what the image
    decides beyond its bytes (the size ``auto`` resolves to, the upload recipe)."""

    prefix: str
    job: Job  # built from the first row (its id, image and prompt)
    flawed: tuple[Problem, ...]  # the manifest's problems with the row
    problems: tuple[Problem, ...]  # the job's own fields' (the prompt's unless lifted)
    lifted_prompt: bool
    variants: dict[tuple[str, Recipe], Shape] = field(default_factory=dict)
    # The variant by a photo's encoded verdict in the stat cache (``_quick_row``): photos of
    # one catalog mostly share it (same size, format and mode), so an unchanged photo's
    # variant costs a dict lookup.
    by_facts: dict[bytes, Shape] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        """Whether its rows may take the fast path: nothing is wrong with their own fields."""
        return not self.flawed and not self.problems


def _urls_of(item: object) -> list[str]:
    """The remote inputs of a manifest entry: a Job's, or a Row's image and mask cells."""
    if type(item) is not tuple:
        return remote_urls(item)
    layout, cells = item[0], item[1]
    urls = []
    for index in layout.input_indexes:
        cell = cells[index] if index < len(cells) else ""
        if "://" not in cell:  # a local path: the usual case, decided without parsing
            continue
        ref = input_ref(cell, "")
        if isinstance(ref, InputRef) and ref.kind == "url" and not remote_ref_problem(ref):
            urls.append(ref.value)
    return urls


@dataclass(slots=True, eq=False)
class Shape:
    """One checked job shape: what every row with the same key shares."""

    prefix: str  # a row's location is prefix + its number ("catalog.csv row 17")
    planned: PlannedJob | None  # the first row's plan; None: the rows have problems
    flawed: tuple[Problem, ...] = ()  # the manifest's problems with the row (said before the id's)
    problems: tuple[Problem, ...] = ()  # preflight's and the planner's, the id's excepted
    each: tuple[Notice, ...] = ()  # notices every job of the shape gets
    # Kept by the plan for the rows it counts while the shape is cached (``RowPass.on_clear``).
    template: int | None = None  # the spool's template number
    calls: int = 0
    redo: int = 0
    skipped: int = 0
    held: int = 0
    clean: bool = False  # planned, no problem, no notice for each job: a row needs its id only
    built: bool = False  # the manifest built a job (else only its problems are said)
    document: dict[str, Any] | None = None  # the key document, when each row has its prompt
    keys: dict[str, str] = field(default_factory=dict)  # prompt -> key, the latest few
    image_keys: ImageKeys | None = None  # a variant's keys by image digest (``_quick_row``)
    # The latest row's ``UnreadImage`` when its prompt is the shape's: the next row with the
    # same header facts shares it (one object: the spool pickles it once a batch).
    unread: UnreadImage | None = None
    # A variant of rows of distinct photos whose size ``auto`` resolves from each photo.
    sized_by_image: bool = False

    def location(self, number: int) -> str:
        return f"{self.prefix}{number}"

    def key_for(self, prompt: str) -> tuple[str | None, str | None]:
        """A row's (prompt, content key), or (None, None) when they are the first row's."""
        assert self.planned is not None and self.document is not None
        if prompt == self.planned.job.prompt:
            return None, None
        key = self.keys.get(prompt)
        if key is None:  # a catalog repeats a few prompts, or none: remember the latest few
            if len(self.keys) >= PROMPT_KEYS:
                self.keys.clear()
            key = self.keys[prompt] = with_prompt(self.document, prompt)
        return prompt, key


@dataclass
class RowPass:
    """Streams a manifest through preflight and the planner: problems, notices, PlannedJobs of
    jobs checked one by one, and ``Hit`` tuples for the rows of shared shapes."""

    manifest: Manifest
    preflight: Preflight
    plan_job: PlanJob
    on_clear: Callable[[list[Shape]], None] = lambda shapes: None
    cache_size: int = SHAPE_CACHE
    _shapes: dict[RowLayout, dict[tuple[str, ...], Shape | ImageShape | None]] = field(
        default_factory=dict
    )
    _flawed: str | None = None  # location of the latest entry the manifest found wrong
    _image_columns: dict[RowLayout, int] = field(default_factory=dict)
    # Whether to tell the signature of each row's own photo (``photo``), for the plan memo.
    signatures: bool = False
    # The latest row of distinct photos: its photo's ``(dev, ino, size, mtime_ns, ctime_ns)``
    # when the pass may vouch for it by that alone (``signatures`` on), else None.
    photo: tuple[int, ...] | None = None
    # Whether a row's new photo may be glanced at and read by its upload (a first run's job no
    # earlier run knows: ``models.UnreadImage``); None: every photo is read here.
    glance: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        self._known = self.preflight.known_image

    def __iter__(self) -> Iterator[Problem | Notice | PlannedJob | Hit]:
        check_id = self.preflight.check_id
        base = str(self.manifest.base_dir)
        last: RowLayout | None = None
        shapes: dict[tuple[str, ...], Shape | ImageShape | None] = {}
        image_at = -1
        # The next rows' URLs are fetched while this one is checked (pipeline.inputs.fetch).
        for item in self.preflight.ahead(self.manifest.iter_entries(), _urls_of):
            if type(item) is not tuple:
                yield from self._one_by_one(iter((item,)))  # type: ignore[arg-type]
                continue
            layout, key, job_id, number, prompt = item
            if layout is not last:
                last, shapes = layout, self._shapes.setdefault(layout, {})
                image_at = self._image_column(layout)
            once: list[Notice] = _NONE
            built: Built | None = None
            if image_at >= 0:  # a row of distinct photos? Its image lifted out of its key
                lifted_key = key[:image_at] + _LIFTED + key[image_at + 1 :]
                shape = shapes.get(lifted_key, _MISSING)
                cell = key[image_at]
                if shape is not _NOT_LIFTED and _local_cell(cell):
                    if shape is _MISSING:
                        shape, built = self._new_image_shape(item, shapes, lifted_key)
                    if type(shape) is ImageShape:
                        reason = check_id(job_id)
                        long = None
                        if prompt is not None and len(prompt) > PROMPT_MAX:
                            long = _too_long(prompt)
                        elif reason is None and shape.quick:
                            # The nightly no-op: the photo unchanged, one stat and one lookup.
                            hit = self._quick_row(shape, cell, base, job_id, number, prompt)
                            if hit is not None:
                                yield hit
                                continue
                        row = (job_id, number, prompt, reason, long)
                        yield from self._image_row(shape, cell, *row)
                        continue
            shape = shapes.get(key, _MISSING)
            if shape is _MISSING:
                once = []
                shape = self._new_shape(item, shapes, once, built)
            if shape is None:  # this key's rows are built one by one
                yield from self._one_by_one(self.manifest.build_row(item))
                continue
            assert type(shape) is Shape
            # A row the manifest could build no job from is not preflighted, its id neither.
            reason = check_id(job_id) if shape.built else None
            row_key = long = None
            if prompt is not None and shape.built:  # the shape's prompt is each row's own
                if len(prompt) > PROMPT_MAX:
                    long = _too_long(prompt)
                elif shape.document is not None:
                    prompt, row_key = shape.key_for(prompt)
            if reason is None and long is None and shape.clean and not once:
                yield (shape, job_id, number, prompt, row_key)
                continue
            yield from _said_again(shape, job_id, number, reason, long, once)
            if reason is None and long is None and shape.planned is not None:
                yield (shape, job_id, number, prompt, row_key)

    def shapes(self) -> list[Shape]:
        """The shapes cached now, an ``ImageShape``'s variants among them (the plan counts
        their rows at the end)."""
        found: list[Shape] = []
        for cache in self._shapes.values():
            for shape in cache.values():
                if type(shape) is ImageShape:
                    found.extend(shape.variants.values())
                elif type(shape) is Shape and shape is not _NOT_LIFTED:
                    found.append(shape)
        return found

    # -- rows of distinct photos --

    def _image_column(self, layout: RowLayout) -> int:
        """The layout's image column when a row's image may be lifted out of its key: mapped
        to ``image`` alone and read by no default's template; else -1."""
        known = self._image_columns.get(layout)
        if known is not None:
            return known
        found = [index for index, name in layout.columns if name == "image"]
        at = found[0] if len(found) == 1 else -1
        if at >= 0:
            shared = sum(1 for index, _name in layout.columns if index == at) != 1
            header = layout.names[at] if at < len(layout.names) else ""
            read = any(header in placeholders(value) for value in self.manifest.defaults.values())
            if shared or read or at in (layout.id_index, layout.prompt_index):
                at = -1
        self._image_columns[layout] = at
        return at

    def _lifted(self, cell: str) -> InputRef:
        """The row's image, from a cell ``_local_cell`` passed."""
        ref = _uncached_input_ref(cell, str(self.manifest.base_dir))
        assert isinstance(ref, InputRef) and ref.kind == "file"
        return ref

    def _new_image_shape(
        self,
        row: Row,
        shapes: dict[tuple[str, ...], Shape | ImageShape | None],
        key: tuple[str, ...],
    ) -> tuple[ImageShape | Shape, Built | None]:
        """The ``ImageShape`` of the row's lifted key; or ``_NOT_LIFTED`` if its job is not one
        whose image alone differs (a mask, protect, a row the manifest cannot build), with
        the job built (for ``_new_shape``: a row is built once)."""
        self._make_room()
        layout = row[0]
        if not layout.shareable(key):
            shapes[key] = _NOT_LIFTED
            return _NOT_LIFTED, None
        built = self._build(row)
        job, flawed = built
        if job is None or not _image_only(job):
            shapes[key] = _NOT_LIFTED
            return _NOT_LIFTED, built
        lifted_prompt = row[4] is not None
        problems = self.preflight.field_problems(job, not lifted_prompt)
        shape = ImageShape(
            f"{layout.display} row ", job, tuple(flawed), tuple(problems), lifted_prompt
        )
        shapes[key] = shape
        return shape, None

    def _build(self, row: Row) -> Built:
        """The row's job (None if the manifest could build none) and the manifest's problems."""
        flawed: list[Problem] = []
        job: Job | None = None
        for item in self.manifest.build_row(row):
            if isinstance(item, Job):
                job = item
            else:
                flawed.append(item)
        return job, flawed

    def _quick_row(
        self, shape: ImageShape, cell: str, base: str, job_id: str, number: int, prompt: str | None
    ) -> Hit | None:
        """The ``Hit`` of a row of distinct photos whose id and prompt passed, when its photo
        is unchanged since the stat cache knew it and its facts call for no notice: exactly
        what ``_image_row`` yields for it then, from one stat and one lookup. None: ask
        ``_image_row``."""
        found = self._known(cell, base)
        if found is None:
            return None
        path, real, digest_bytes, raw = found
        variant = shape.by_facts.get(raw)
        if variant is None:
            variant = self._quick_variant(shape, path, real, raw, f"{shape.prefix}{number}")
            if variant is None:
                return None
        digest = digest_bytes.hex()
        if shape.lifted_prompt:
            document = variant.document
            assert document is not None
            document["image"] = "sha256:" + digest
            document["parameters"]["prompt"] = prompt
            key = key_of(document)
        else:  # the image digest alone differs between rows' documents
            keys = variant.image_keys
            if keys is None:
                assert variant.document is not None
                keys = variant.image_keys = ImageKeys(variant.document)
            key = keys.key(digest)
            prompt = None
        self.photo = self.preflight.quick.signature
        return (variant, job_id, number, prompt, key, path, digest)

    def _quick_variant(
        self, shape: ImageShape, path: str, real: str, raw: bytes, location: str
    ) -> Shape | None:
        """The variant of the rows whose photos the stat cache describes as ``raw`` (an
        encoded verdict): facts without notices only (a notice is given with its file's first
        job, which ``_image_row`` knows). None: ``_image_row`` says what is what."""
        facts = self.preflight.reader.facts_of(raw, real)
        if not isinstance(facts, ImageFacts) or facts.notes:
            return None
        variant = self._variant(shape, InputRef("file", path), facts, "", location)
        if not isinstance(variant, Shape):
            return None
        if len(shape.by_facts) >= VERDICTS_REMEMBERED:
            shape.by_facts.clear()
        shape.by_facts[raw] = variant
        return variant

    def _image_row(
        self,
        shape: ImageShape,
        cell: str,
        job_id: str,
        number: int,
        prompt: str | None,
        reason: str | None,
        long: str | None,
    ) -> Iterator[Problem | Notice | Hit]:
        """One row of distinct photos (its id's problem ``reason`` and its prompt's ``long``
        known): what checking it alone says, then its ``Hit``."""
        location = f"{shape.prefix}{number}"
        image = self._lifted(cell)
        base = str(self.manifest.base_dir)
        glance = self.glance is not None and self.glance(job_id)
        facts, notes, digest = self.preflight.check_local_image(image, base, glance)
        if shape.flawed or shape.problems or reason or long or notes or type(facts) is str:
            problems = [_renamed(problem, job_id, location) for problem in shape.flawed]
            if reason is not None:
                problems.append(Problem(job_id, "id", reason, location))
            if long is not None:
                problems.append(Problem(job_id, "prompt", long, location))
            problems.extend(_renamed(problem, job_id, location) for problem in shape.problems)
            if isinstance(facts, str):
                problems.append(Problem(job_id, "image", facts, location))
            yield from problems
            yield from (Notice(job_id, "image", note, location) for note in notes)
            if problems:
                return
        assert isinstance(facts, ImageFacts)
        variant = self._variant(shape, image, facts, job_id, location, unread=digest is None)
        if isinstance(variant, Problem):
            yield variant
            return
        assert variant.document is not None and variant.planned is not None
        document = variant.document
        if shape.lifted_prompt:
            document["parameters"]["prompt"] = prompt
        else:
            prompt = None
        if digest is None and glance:  # glanced at: its upload reads it, keys it then
            unread = self._unread(variant, document, facts, shared=not shape.lifted_prompt)
            if unread is not None:
                self.photo = None  # nothing read: the plan memo cannot vouch for it
                yield (variant, job_id, number, prompt, unread, image.value, None)
                return
        if digest is None:
            digest = self.preflight.digest(image.value)
        document["image"] = f"sha256:{digest}"
        if self.signatures:
            self.photo = self.preflight.settled_signature(image.value, digest)
        yield (variant, job_id, number, prompt, key_of(document), image.value, digest)

    @staticmethod
    def _unread(
        variant: Shape, document: dict[str, Any], facts: ImageFacts, shared: bool
    ) -> UnreadImage | None:
        """The ``UnreadImage`` of a row glanced at; ``shared``: its key document is the
        variant's own (the prompt too), so the latest one serves rows with the same facts."""
        latest = variant.unread
        if shared and latest is not None and latest.expected == facts.planned_from:
            return latest
        unread = unread_image(document, facts)
        if shared:
            variant.unread = unread
        return unread

    def _variant(
        self,
        shape: ImageShape,
        image: InputRef,
        facts: ImageFacts,
        job_id: str,
        location: str,
        unread: bool = False,
    ) -> Shape | Problem:
        """The planned shape of the rows whose images resolve to this size and recipe.
        ``unread``: the photo was glanced at, not read; the shape is planned without its
        digest (each row has its own)."""
        job = shape.job
        size = closest_size(facts.width, facts.height) if job.size == AUTO_SIZE else job.size
        recipe = self.preflight.image_recipe(facts)
        variant = shape.variants.get((size, recipe))
        if variant is not None:
            return variant
        digest = UNREAD_DIGEST if unread else None
        planned = self.plan_job(replace(job, image=image, size=size), digest)
        if isinstance(planned, Problem):  # the file went away since its check
            return _renamed(planned, job_id, location)
        variant = Shape(shape.prefix, planned[0], clean=True, built=True, document=planned[1])
        variant.sized_by_image = job.size == AUTO_SIZE
        shape.variants[size, recipe] = variant
        return variant

    def _make_room(self) -> None:
        """Past ``cache_size`` shapes the cache starts over (their rows are counted first)."""
        if sum(map(len, self._shapes.values())) >= self.cache_size:
            self.on_clear(self.shapes())
            for cache in self._shapes.values():
                cache.clear()

    def _new_shape(
        self,
        row: Row,
        shapes: dict[tuple[str, ...], Shape | ImageShape | None],
        once: list[Notice],
        built: Built | None = None,
    ) -> Shape | None:
        """Build (unless ``built``) and check the row's job but its id; the notices given once
        go to ``once``."""
        self._make_room()
        layout, key = row[0], row[1]
        if not layout.shareable(key):
            shapes[key] = None
            return None
        job, flawed = built if built is not None else self._build(row)
        shape = Shape(f"{layout.display} row ", None, tuple(flawed))
        if job is not None:
            shape.built = True
            lifted = row[4] is not None  # the prompt is checked and keyed per row
            checked = self.preflight.check_shape(job, self.manifest.base_dir, not lifted)
            once.extend(checked.once)
            problems: list[Problem] = checked.problems
            if checked.job is not None and not flawed:
                planned = self.plan_job(checked.job)
                if isinstance(planned, Problem):
                    problems = [planned]
                else:
                    shape.planned, document = planned
                    shape.document = document if lifted else None
            shape.problems, shape.each = tuple(problems), tuple(checked.each)
            shape.clean = shape.planned is not None and not problems and not checked.each
        shapes[key] = shape
        return shape

    def _one_by_one(
        self, items: Iterator[Job | Problem]
    ) -> Iterator[Problem | Notice | PlannedJob]:
        """The full path: each job checked, id included, and planned on its own."""
        for item in items:
            if isinstance(item, Problem):
                self._flawed = item.location
                yield item
                continue
            job, problems, notices = self.preflight.check(item, self.manifest.base_dir)
            yield from problems
            yield from notices
            # A flawed entry's job (built from its good fields) is checked for the rest of its
            # problems, so all are reported at once, but never planned.
            if job is None or item.location == self._flawed:
                continue
            planned = self.plan_job(job)
            yield planned if isinstance(planned, Problem) else planned[0]


def _local_cell(cell: str) -> bool:
    """Whether an image cell is a plain local path (a row of distinct photos keeps it out of
    its key): ``plain_cell`` (inlined: once a row), and not a URL, an asset or a name no file
    can have (a NUL byte)."""
    return (
        bool(cell)
        and cell == cell.strip()
        and "{" not in cell
        and "}" not in cell
        and "://" not in cell
        and "\x00" not in cell
        and cell[:6].lower() != "asset:"
    )


_MISSING = Shape("", None)
_NOT_LIFTED = Shape("", None)  # a lifted key whose rows keep their image in their key
_NONE: list[Notice] = []  # no notice given once (never appended to)


def _image_only(job: Job) -> bool:
    """A job whose image file alone differs between rows of a lifted key: nothing else reads
    the image (no mask drawn on it or sized by it, nothing composited with it)."""
    return (
        job.feature is Feature.BACKGROUND
        and job.mask is None
        and job.mask_recipe is None
        and not job.protect
        and job.image.kind == "file"
    )


def _said_again(
    shape: Shape,
    job_id: str,
    number: int,
    reason: str | None,
    long: str | None,
    once: list[Notice],
) -> Iterator[Problem | Notice]:
    """The shape's findings for this row, in the order a check of the row alone gives them."""
    location = shape.location(number)
    for problem in shape.flawed:
        yield _renamed(problem, job_id, location)
    if reason is not None:
        yield Problem(job_id, "id", reason, location)
    if long is not None:
        yield Problem(job_id, "prompt", long, location)
    for problem in shape.problems:
        yield _renamed(problem, job_id, location)
    yield from once  # the shape's first row: these name it already
    for notice in shape.each:
        yield Notice(job_id, notice.field, notice.message, location)


def _too_long(prompt: str) -> str:
    return next(message for _name, message in prompt_problems(prompt))


def _renamed(problem: Problem, job_id: str, location: str) -> Problem:
    # A problem about the row names its job when the first row's did (template problems don't).
    return Problem(
        job_id if problem.job is not None else None, problem.field, problem.message, location
    )


def materialize(
    shape: Shape,
    job_id: str,
    number: int,
    prompt: str | None,
    key: str | UnreadImage | None,
    image: str | None = None,
    image_digest: str | None = None,
) -> PlannedJob:
    """The PlannedJob of one row of a shape (its id, location and maybe its prompt, key and
    image in the first row's)."""
    assert shape.planned is not None
    location = shape.location(number)
    if isinstance(key, UnreadImage):  # a photo its upload reads: no digest, no key yet
        planned = with_identity(shape.planned, job_id, location, prompt, "", image)
        return replace(planned, image_digest=None, unread=key)
    return with_identity(shape.planned, job_id, location, prompt, key, image, image_digest)
