"""The one pass over a manifest: each shape of row checked once, each row's id on its own.

A catalog of a million rows over a handful of files repeats a few job *shapes* (everything but
the id and location: files, mask, prompt, parameters). The manifest yields such
rows as ``Row`` tuples without building a Job (``Manifest.iter_entries``); the first row of a
shape is built, checked and planned in full, and every later one costs its id's check and a
dict lookup. What a shape found (problems, notices that concern every job) is said again for
each of its rows with the row's own id and location, so the report is the same as if each row
had been checked alone, and notices about a file are still given once, with its first job.

Jobs from ``jobs:``, ``glob:``, JSONL and the rows a shape cannot stand for (a template in a
cell) take the full path one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import Notice, Problem
from pipeline.manifest.build import input_ref
from pipeline.manifest.shapes import Row, RowLayout
from pipeline.manifest.sources import Manifest
from pipeline.models import PROMPT_MAX, InputRef, Job, PlannedJob
from pipeline.plan.keys import with_prompt
from pipeline.plan.spool import with_identity
from pipeline.preflight.core import Preflight
from pipeline.preflight.fields import prompt_problems, remote_ref_problem, remote_urls

PROMPT_KEYS = 32  # content keys remembered per shape, by prompt (bounded: 1024 shapes)
SHAPE_CACHE = 1024  # shapes remembered per pass; past that the cache starts over (see Shape)

# (shape, job id, row number, prompt, key): a valid job of a shared shape; the prompt and
# content key are the row's own when the shape's prompt is (else None: the shape's)
Hit = tuple["Shape", str, int, str | None, str | None]
PlanJob = Callable[[Job], tuple[PlannedJob, dict[str, Any]] | Problem]


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
    _shapes: dict[RowLayout, dict[tuple[str, ...], Shape | None]] = field(default_factory=dict)
    _flawed: str | None = None  # location of the latest entry the manifest found wrong

    def __iter__(self) -> Iterator[Problem | Notice | PlannedJob | Hit]:
        check_id = self.preflight.check_id
        last: RowLayout | None = None
        shapes: dict[tuple[str, ...], Shape | None] = {}
        # The next rows' URLs are fetched while this one is checked (pipeline.inputs.fetch).
        for item in self.preflight.ahead(self.manifest.iter_entries(), _urls_of):
            if type(item) is not tuple:
                yield from self._one_by_one(iter((item,)))  # type: ignore[arg-type]
                continue
            layout, key, job_id, number, prompt = item
            if layout is not last:
                last, shapes = layout, self._shapes.setdefault(layout, {})
            shape = shapes.get(key, _MISSING)
            once: list[Notice] = _NONE
            if shape is _MISSING:
                once = []
                shape = self._new_shape(item, shapes, once)
            if shape is None:  # this key's rows are built one by one
                yield from self._one_by_one(self.manifest.build_row(item))
                continue
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
        """The shapes cached now (the plan counts their rows at the end)."""
        return [s for cache in self._shapes.values() for s in cache.values() if s is not None]

    def _new_shape(
        self, row: Row, shapes: dict[tuple[str, ...], Shape | None], once: list[Notice]
    ) -> Shape | None:
        """Build and check the row's job but its id; the notices given once go to ``once``."""
        if sum(map(len, self._shapes.values())) >= self.cache_size:
            self.on_clear(self.shapes())
            for cache in self._shapes.values():
                cache.clear()
        layout, key = row[0], row[1]
        if not layout.shareable(key):
            shapes[key] = None
            return None
        flawed: list[Problem] = []
        job: Job | None = None
        for item in self.manifest.build_row(row):
            if isinstance(item, Job):
                job = item
            else:
                flawed.append(item)
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


_MISSING = Shape("", None)
_NONE: list[Notice] = []  # no notice given once (never appended to)


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
    shape: Shape, job_id: str, number: int, prompt: str | None, key: str | None
) -> PlannedJob:
    """The PlannedJob of one row of a shape (its id, location and maybe its prompt and key in
    the first row's)."""
    assert shape.planned is not None
    return with_identity(shape.planned, job_id, shape.location(number), prompt, key)
