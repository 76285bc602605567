"""Plan: a content key per job, and ``scan``, the single pass both ``validate`` and ``run`` use.

The content key decides whether a re-run must redo a job (SPEC §4: "same content (image, mask,
prompt and parameters)"). It is the sha256 of a canonical JSON document holding the feature,
the model, the image's and mask's byte digests (or the URL / asset path as written), every
parameter the API gets, and whether the mask is converted. It holds neither the id nor the
location, so moving or renaming a job keeps its key. Nothing in it depends on the process
(no ``hash()``, sorted keys), so it is the same across runs and machines. ``KEY_VERSION`` is
in it too: changing what goes into the key means bumping it, which re-runs every job once.

A URL's key is its text: the pipeline cannot see, offline, that the bytes behind it changed.
A mask made here (``box:``, ``alpha``, a modified or scaled file) is keyed by its recipe, the
image's digest and the file's (``masks.recipe_token``), not by the PNG's bytes: the key then
says what was asked, and a plain file mask keeps the key it always had.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from pipeline import masks
from pipeline.credits import CreditTable
from pipeline.errors import ManifestError, Problem
from pipeline.inputs.upload import Recipe
from pipeline.ledger import JobState, LedgerState
from pipeline.manifest import Manifest, load_manifest
from pipeline.models import MODEL, InputRef, Job, PlannedJob, Status
from pipeline.preflight import EffectiveMask, Notice, Preflight, id_fingerprint
from pipeline.review.decisions import Decision, standing
from pipeline.summary import PlanSummary

KEY_VERSION = 1
CACHE_SIZE = 65_536  # distinct files whose digest is remembered


def file_digest(path: Path) -> str:
    """sha256 hex of the file's bytes, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def content_key(
    job: Job,
    image_token: str,
    mask_token: str | None,
    mask_convert: bool = False,
    recipes: Mapping[str, str] | None = None,
) -> str:
    """The job's content key from its inputs' tokens (see the module docstring).

    ``recipes`` holds the non-empty upload recipes (``image_recipe``, ``mask_recipe``): other
    bytes are uploaded, so another key; a job whose files go up as they are keeps its old key.
    """
    document: dict[str, Any] = {
        "key_version": KEY_VERSION,
        "model": MODEL,
        "feature": job.feature.value,
        "image": image_token,
        "mask": mask_token,
        "mask_convert": mask_convert,
        "parameters": job.parameters(),
        **(recipes or {}),
    }
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Planner:
    """Makes PlannedJobs; hashes each distinct file once (by real path, bounded cache)."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._real_path = lru_cache(maxsize=cache_size)(os.path.realpath)
        self._digest = lru_cache(maxsize=cache_size)(_digest_of_real_path)

    def digest(self, path: str | Path) -> str:
        return self._digest(self._real_path(os.fspath(path)))

    def plan(
        self,
        job: Job,
        mask_convert: bool = False,
        image_recipe: Recipe | None = None,
        mask_recipe: Recipe | None = None,
        effective: EffectiveMask | None = None,
    ) -> PlannedJob:
        """Raises OSError if an input file can no longer be read (``scan`` reports it)."""
        image_digest = self._file_digest(job.image)
        mask_digest = self._file_digest(job.mask) if job.mask is not None else None
        recipes = {
            name: recipe.token
            for name, recipe in (("image_recipe", image_recipe), ("mask_recipe", mask_recipe))
            if recipe is not None and recipe.token
        }
        if effective is not None and image_digest is not None:
            # A mask made here: keyed by its recipe and the image's digest; uploaded as its PNG.
            token = masks.recipe_token(effective.recipe, image_digest, mask_digest)
            if effective.size_token:
                token += f"|{effective.size_token}"
            image_only = {k: v for k, v in recipes.items() if k == "image_recipe"}
            key = content_key(job, _token(job.image, image_digest), token, recipes=image_only)
            return PlannedJob(
                job, key, image_digest, effective.digest, False, image_recipe, None, effective.png
            )
        key = content_key(
            job,
            _token(job.image, image_digest),
            _token(job.mask, mask_digest) if job.mask is not None else None,
            mask_convert,
            recipes,
        )
        return PlannedJob(
            job, key, image_digest, mask_digest, mask_convert, image_recipe, mask_recipe
        )

    def _file_digest(self, ref: InputRef) -> str | None:
        return self.digest(ref.value) if ref.kind == "file" else None


def _digest_of_real_path(real: str) -> str:
    return file_digest(Path(real))


def _token(ref: InputRef, digest: str | None) -> str:
    # The kind prefix keeps a URL from ever colliding with a digest or an asset path.
    return f"sha256:{digest}" if digest is not None else f"{ref.kind}:{ref.value}"


def scan(
    manifest: Manifest,
    preflight: Preflight | None = None,
    planner: Planner | None = None,
) -> Iterator[PlannedJob | Problem | Notice]:
    """Stream the manifest's jobs through preflight and the planner, in manifest order.

    Yields a job's problems and notices before its PlannedJob; a job with problems yields no
    PlannedJob. Give each call a fresh Preflight (it remembers the ids it saw, to find
    duplicates).
    """
    preflight = preflight if preflight is not None else Preflight()
    planner = planner if planner is not None else Planner()
    flawed: str | None = None  # location of the latest entry the manifest found wrong
    for item in preflight.ahead(manifest.iter_jobs()):  # the next rows' URLs fetched meanwhile
        if isinstance(item, Problem):
            flawed = item.location
            yield item
            continue
        job, problems, notices = preflight.check(item, manifest.base_dir)
        yield from problems
        yield from notices
        # A flawed entry's job (built from its good fields) is checked for the rest of its
        # problems, so all are reported at once, but never planned.
        if job is None or item.location == flawed:
            continue
        try:
            mask_recipe = preflight.upload_recipe(job, "mask") if job.mask is not None else None
            yield planner.plan(
                job,
                preflight.mask_convert(job),
                preflight.upload_recipe(job, "image"),
                mask_recipe,
                preflight.effective_mask(job),
            )
        except OSError as exc:  # the file went away or changed permissions since preflight
            reason = exc.strerror or str(exc)
            yield Problem(job.id, None, f"cannot read an input: {reason}", job.location)
    duplicates = preflight.duplicate_ids()
    if duplicates:
        yield from _name_duplicates(manifest, duplicates)


def _name_duplicates(manifest: Manifest, duplicates: set[int]) -> Iterator[Problem]:
    """Every reuse of an id, with where it was first used (a second pass over the ids alone)."""
    first: dict[int, str] = {}
    for item in manifest.iter_jobs():
        if not isinstance(item, Job):
            continue
        fingerprint = id_fingerprint(item.id)
        if fingerprint not in duplicates:
            continue
        if fingerprint not in first:
            first[fingerprint] = item.location
            continue
        message = f"{item.id!r} is already used by the job at {first[fingerprint]} "
        yield Problem(item.id, "id", message + "(letter case ignored)", item.location)


# -- the plan: both passes, the entry set and the skip rule ------------------------------------


class Skip(StrEnum):
    """Why a valid job is not run now."""

    DONE = "done"  # succeeded for the same content
    FAILED = "failed"  # failed for the same content; waits for --retry-failed
    HELD = "held"  # pending, left for a later run by --limit or --only


# A succeeded job's state -> a reviewer rejected its outputs for this content since
Rejected = Callable[[JobState], bool]


def reviewer_rejections(decisions: Mapping[str, Decision]) -> Rejected:
    """The redo rule (SPEC 6): a job rejected for its current content, and not run again
    since the rejection, is bought again; a changed job is new content anyway. The rule
    itself is ``decisions.standing``, shared with the review page and ``export``."""

    def rejected(state: JobState) -> bool:
        decision = standing(decisions.get(state.job_id), state.key, state.updated)
        return decision is not None and decision.decision == "rejected"

    return rejected


@dataclass(frozen=True)
class PlanOptions:
    retry_failed: bool = False
    limit: int | None = None  # run at most this many of the pending jobs (a canary)
    only: frozenset[str] | None = None  # run only these ids
    rejected: Rejected | None = None
    # --redo-missing: a succeeded job whose outputs are gone is bought again (SPEC 6)
    missing: Callable[[JobState], bool] | None = None
    # told of every job skipped as done (pipeline.refetch brings back lost outputs, free)
    on_done: Callable[[JobState, PlannedJob], None] | None = None


def skip_reason(state: JobState | None, options: PlanOptions) -> Skip | None:
    """The one skip rule: None means the job runs (SPEC 4, 5, 6)."""
    if state is None:
        return None
    if state.status is Status.SUCCEEDED:
        return Skip.DONE
    if state.status is Status.FAILED and not options.retry_failed:
        # A job that only ran out of retries on transient errors (an outage, not the job's
        # fault) is tried again by the next run on its own.
        return None if state.error is not None and state.error.transient else Skip.FAILED
    return None


@dataclass
class CheckedPlan:
    """The first pass's verdict, and (if it passed) the second pass ready to stream."""

    summary: PlanSummary
    skipped: Counter[Skip] = field(default_factory=Counter)
    jobs: Iterator[PlannedJob] = field(default_factory=lambda: iter(()))

    @property
    def ok(self) -> bool:
        return self.summary.ok

    @property
    def total(self) -> int:
        return self.summary.total.jobs


def prepare(
    manifest: Manifest, ledger: LedgerState, options: PlanOptions, credits: CreditTable
) -> CheckedPlan:
    """Check the whole manifest (one pass), then stream the jobs that must run.

    The pass counts, names every problem and spools each job that will run to an anonymous
    temporary file; the run then streams them from there, so no row is parsed or checked
    twice and no job is held in memory: a million-row catalog plans in flat memory.
    """
    preflight, planner, runnable = Preflight(), Planner(), Spool()
    plan = CheckedPlan(PlanSummary(manifest=manifest.path, name=manifest.name))
    summary = plan.summary
    summary.credit_source = credits.source
    chosen = _Chooser(options)
    for item in scan(manifest, preflight, planner):
        if isinstance(item, PlannedJob):
            job, key = item.job, item.key
            chosen.note(job.id)
            state = ledger.state_of(job.id, key)
            redo = _rejected(options, state) or _missing(options, state)
            reason = None if redo else skip_reason(state, options)
            if reason is Skip.DONE and state is not None and options.on_done is not None:
                options.on_done(state, item)
            if reason is None and not chosen.take(job.id):
                reason = Skip.HELD
            if reason is None:
                summary.count_job(item, True, credits.for_job(job), redo)
                runnable.add(item)
            else:
                summary.count_skip(item, held=reason is Skip.HELD)
                plan.skipped[reason] += 1
        elif isinstance(item, Notice):
            summary.add_warning(item)
        else:
            summary.add_problems([item])
    summary.add_problems(chosen.unknown_ids(manifest.display_name))
    summary.remote_inputs = preflight.fetched
    if summary.ok:
        plan.jobs = iter(runnable)
    else:
        runnable.close()
    return plan


def prepare_file(
    path: Path,
    ledger: LedgerState | None = None,
    options: PlanOptions | None = None,
    credits: CreditTable | None = None,
) -> CheckedPlan:
    """``prepare`` for a manifest file; a header that does not load is a plan of problems."""
    from pipeline.credits import load_credit_table

    table = credits if credits is not None else load_credit_table()
    try:
        manifest = load_manifest(path)
    except ManifestError as exc:
        plan = CheckedPlan(PlanSummary(manifest=path, name=path.stem))
        plan.summary.add_problems(exc.problems)
        return plan
    return prepare(manifest, ledger or LedgerState(), options or PlanOptions(), table)


def _rejected(options: PlanOptions, state: JobState | None) -> bool:
    return (
        options.rejected is not None
        and state is not None
        and state.status is Status.SUCCEEDED
        and options.rejected(state)
    )


def _missing(options: PlanOptions, state: JobState | None) -> bool:
    # Only under --redo-missing: a stat per succeeded job is too dear for every resume.
    return (
        options.missing is not None
        and state is not None
        and state.status is Status.SUCCEEDED
        and options.missing(state)
    )


class _Chooser:
    """``--only`` and ``--limit``: which of the jobs that would run, run now."""

    def __init__(self, options: PlanOptions) -> None:
        self._only = options.only
        self._left = options.limit
        self._seen: set[str] = set()

    def note(self, job_id: str) -> None:
        if self._only is not None and job_id in self._only:
            self._seen.add(job_id)

    def take(self, job_id: str) -> bool:
        if self._only is not None and job_id not in self._only:
            return False
        if self._left is None:
            return True
        if self._left <= 0:
            return False
        self._left -= 1
        return True

    def unknown_ids(self, where: str) -> list[Problem]:
        if self._only is None:
            return []
        message = "given to --only but no valid job of the manifest has this id"
        return [Problem(job_id, "id", message, where) for job_id in sorted(self._only - self._seen)]


class Spool:
    """Planned jobs written to an anonymous temporary file, read back once, in order.

    Pickled: a PlannedJob is a tree of frozen dataclasses, and pickle keeps every field (new
    ones too) without a schema of its own. The job types are pickled as their constructor
    arguments (``_REDUCERS``) rather than through dataclasses' own ``__getstate__``, which was
    most of the cost of a million-row plan. The file is deleted by the system when closed, or
    when the process dies.
    """

    def __init__(self) -> None:
        # Not a `with`: the file lives from the first pass to the end of the run.
        self._file = tempfile.TemporaryFile(prefix="pipeline-plan-")  # noqa: SIM115
        self._pickler = pickle.Pickler(self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._pickler.dispatch_table = _REDUCERS
        self.count = 0

    def add(self, planned: PlannedJob) -> None:
        self._pickler.dump(planned)
        self._pickler.clear_memo()  # each job stands alone: the memo must not grow
        self.count += 1

    def __iter__(self) -> Iterator[PlannedJob]:
        handle = self._file
        handle.flush()
        handle.seek(0)
        try:
            for _ in range(self.count):
                # One unpickler per job, as each was pickled with a fresh memo.
                yield pickle.load(handle)
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


def _by_fields(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    # attrgetter collects every field in C, in declaration order: the constructor's arguments.
    fields_of = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))

    def reduce(value: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, fields_of(value)

    return reduce


_REDUCERS: dict[type, Any] = {cls: _by_fields(cls) for cls in (PlannedJob, Job, InputRef, Recipe)}
