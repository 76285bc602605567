"""Plan: ``prepare``, the single pass both ``validate`` and ``run`` use, and the skip rule.

The pass streams the manifest through preflight and the planner (``plan.onepass``: each
shared row shape checked once, each id on its own), decides per valid job whether it runs
(the ledger, ``--retry-failed``, ``--only``, ``--limit``, reviews) and spools those that do
(``plan.spool``). Content keys are ``plan.keys``' (re-exported here). A pass over a catalog
unchanged since a clean pass reads that pass's rows from its memo instead (``plan.memo``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipeline.credits import CreditTable, load_credit_table
from pipeline.errors import ManifestError, Problem
from pipeline.ledger import FoldedJob, LedgerState
from pipeline.ledger.decisions import Decision, standing
from pipeline.manifest import Manifest, load_manifest
from pipeline.models import Job, PlannedJob, Status, UnreadImage
from pipeline.plan.keys import KEY_VERSION, Planner, content_key, file_digest
from pipeline.plan.memo import (
    MEMO_NAME,
    MemoPlace,
    MemoRows,
    MemoStale,
    MemoWriter,
    PhotoRecheck,
    memo_digest,
)
from pipeline.plan.onepass import Hit, PlanJob, RowPass, Shape, materialize
from pipeline.plan.spool import Spool
from pipeline.plan.summary import PlanSummary
from pipeline.preflight import Notice, Preflight, id_fingerprint

__all__ = [
    "KEY_VERSION",
    "CheckedPlan",
    "PlanOptions",
    "Planner",
    "Skip",
    "Spool",
    "content_key",
    "file_digest",
    "prepare",
    "prepare_file",
    "reviewer_rejections",
    "scan",
    "skip_reason",
]


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
    planner = planner if planner is not None else Planner(digest_of=preflight.digest)
    for item in RowPass(manifest, preflight, plan_job(preflight, planner)):
        yield materialize(*item) if type(item) is tuple else item  # type: ignore[misc]
    duplicates = preflight.duplicate_ids()
    if duplicates:
        yield from _name_duplicates(manifest, duplicates)


def plan_job(preflight: Preflight, planner: Planner) -> PlanJob:
    """The planner fed from preflight's caches (call on a job ``check`` passed): the
    PlannedJob and its key document, or why an input cannot be read. ``image_digest``: the
    image's, when the caller has it."""

    def plan(
        job: Job, image_digest: str | None = None
    ) -> tuple[PlannedJob, dict[str, Any]] | Problem:
        try:
            mask_recipe = preflight.upload_recipe(job, "mask") if job.mask is not None else None
            return planner.plan_and_document(
                job,
                preflight.mask_convert(job),
                preflight.upload_recipe(job, "image"),
                mask_recipe,
                preflight.effective_mask(job),
                image_digest,
            )
        except OSError as exc:  # the file went away or changed permissions since preflight
            reason = exc.strerror or str(exc)
            return Problem(job.id, None, f"cannot read an input: {reason}", job.location)

    return plan


def _jobs_and_rows(manifest: Manifest, duplicates: set[int]) -> Iterator[Job]:
    """The manifest's jobs; a fast-path row is built only if its id is among ``duplicates``."""
    for item in manifest.iter_entries():
        if type(item) is tuple:
            if id_fingerprint(item[2]) in duplicates:
                built = manifest.build_row(item)
                yield from (job for job in built if isinstance(job, Job))
        elif isinstance(item, Job):
            yield item


def _name_duplicates(manifest: Manifest, duplicates: set[int]) -> Iterator[Problem]:
    """Every reuse of an id, with where it was first used (a second pass over the ids alone)."""
    first: dict[int, str] = {}
    for item in _jobs_and_rows(manifest, duplicates):
        job_id, location = item.id, item.location
        fingerprint = id_fingerprint(job_id)
        if fingerprint not in duplicates:
            continue
        if fingerprint not in first:
            first[fingerprint] = location
            continue
        message = f"{job_id!r} is already used by the job at {first[fingerprint]} "
        yield Problem(job_id, "id", message + "(letter case ignored)", location)


# -- the plan: the one pass, its spool and the skip rule ---------------------------------------


class Skip(StrEnum):
    """Why a valid job is not run now."""

    DONE = "done"  # succeeded for the same content
    FAILED = "failed"  # failed for the same content; waits for --retry-failed
    PARTIAL = "partial"  # paid images missing; waits for --redo-missing (which buys them)
    HELD = "held"  # pending, left for a later run by --limit or --only


# A succeeded job's state -> a reviewer rejected its outputs for this content since
Rejected = Callable[[FoldedJob], bool]


def reviewer_rejections(decisions: Mapping[str, Decision]) -> Rejected | None:
    """The redo rule (docs/delivery.md#rejected-jobs): a job rejected for its current content,
    and not run again since the rejection, is bought again; a changed job is new content
    anyway. The rule itself is ``decisions.standing``, shared with the review page and
    ``export``. None when nothing was reviewed: the ledger alone then decides (the plan's
    cheaper path)."""
    if not decisions:
        return None

    def rejected(state: FoldedJob) -> bool:
        decision = standing(decisions.get(state.job_id), state.key, state.updated)
        return decision is not None and decision.decision == "rejected"

    return rejected


@dataclass(frozen=True)
class PlanOptions:
    retry_failed: bool = False
    limit: int | None = None  # run at most this many of the pending jobs (a canary)
    only: frozenset[str] | None = None  # run only these ids
    rejected: Rejected | None = None
    # --redo-missing: a succeeded job whose outputs are gone is bought again
    # (docs/ledger.md#lost-outputs)
    missing: Callable[[FoldedJob], bool] | None = None
    # told of every job skipped as done (pipeline.scheduler.refetch brings back lost outputs, free)
    on_done: Callable[[FoldedJob, PlannedJob], None] | None = None
    # A run (not validate, not a dry run, not Ray): a new photo of a job no earlier run knows
    # is glanced at here and read once by its upload (``models.UnreadImage``).
    read_at_upload: bool = False


def skip_reason(state: FoldedJob | None, options: PlanOptions) -> Skip | None:
    """The one skip rule: None means the job runs (docs/ledger.md#resume)."""
    if state is None:
        return None
    if state.status is Status.SUCCEEDED:
        return Skip.DONE
    if state.status is Status.FAILED and not options.retry_failed:
        # A job that only ran out of retries on transient errors (an outage, not the job's
        # fault) is tried again by the next run on its own.
        return None if state.error is not None and state.error.transient else Skip.FAILED
    if state.status is Status.PARTIAL:
        return Skip.PARTIAL  # its missing images are bought only when asked (--redo-missing)
    return None


@dataclass
class CheckedPlan:
    """The pass's verdict, and (if it passed) the spooled jobs ready to stream."""

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
    manifest: Manifest,
    ledger: LedgerState,
    options: PlanOptions,
    credits: CreditTable,
    preflight: Preflight | None = None,
    memo: MemoPlace | None = None,
    options_again: Callable[[], PlanOptions] | None = None,
) -> CheckedPlan:
    """Check the whole manifest (one pass), then stream the jobs that must run.

    The pass counts, names every problem and spools each job that will run to an anonymous
    temporary file; the run then streams them from there, so no row is parsed or checked
    twice and no job is held in memory: a million-row catalog plans in flat memory. Rows of a
    shared shape (``plan.onepass``) are counted on their shape and spooled as a few fields.
    ``preflight`` (fresh for each pass) may bring a stat cache (``Preflight(stat_cache=...)``).

    ``memo``: where the plan memo (``plan.memo``) is kept: a clean pass writes it, and a pass
    whose manifest and files are as the memo found them reads its rows instead of checking
    them. If the memo turns out stale part way, the full pass starts over with
    ``options_again()`` (fresh callbacks: ``on_done`` was told of some jobs already).
    """
    preflight = preflight if preflight is not None else Preflight()
    digest = memo_digest(manifest, preflight) if memo is not None else None
    if memo is not None and digest is not None and memo.read:
        place = memo.folder / MEMO_NAME
        plan, started = _plan_from_memo(
            manifest, ledger, options, credits, preflight, place, digest
        )
        if plan is not None:
            return plan
        if started:  # some rows were handed out: the full pass starts afresh
            preflight.start_over()
            options = options_again() if options_again is not None else options
    writer = None
    if memo is not None and digest is not None:
        writer = MemoWriter.open(memo.folder, digest, preflight)
    planner = Planner(digest_of=preflight.digest)
    plan = _empty_plan(manifest, credits)
    tally = _Tally(plan, ledger, options, credits)
    rows = RowPass(
        manifest,
        preflight,
        plan_job(preflight, planner),
        tally.forget if writer is None else _forget_both(tally, writer),
        signatures=writer is not None,
        glance=_new_job(ledger) if options.read_at_upload else None,
    )
    try:
        _take_rows(plan, tally, rows, writer)
        duplicates = preflight.duplicate_ids()
        if duplicates:
            plan.summary.add_problems(_name_duplicates(manifest, duplicates))
        plan.summary.remote_inputs = preflight.fetched
    finally:
        if writer is not None:
            # Problems, warnings or remote inputs: the memo could not give the same report.
            summary = plan.summary
            if not summary.ok or summary.warning_count or preflight.fetched or preflight.sources:
                writer.spoil()
            writer.commit()
    return _finished(plan, tally, manifest)


def _empty_plan(manifest: Manifest, credits: CreditTable) -> CheckedPlan:
    plan = CheckedPlan(PlanSummary(manifest=manifest.path, name=manifest.name))
    plan.summary.credit_source = credits.source
    return plan


def _take_rows(
    plan: CheckedPlan, tally: _Tally, rows: RowPass | MemoRows, writer: MemoWriter | None
) -> None:
    """Feed the pass's items to the tally (and the memo's writer)."""
    summary = plan.summary
    if isinstance(rows, MemoRows):
        rows.feed(tally.row, tally.job)
    else:
        for item in rows:
            if type(item) is tuple:
                tally.row(item)
                if writer is not None:
                    writer.hit(item, rows.photo)
            elif isinstance(item, PlannedJob):
                tally.job(item)
                if writer is not None:
                    writer.job(item)
            elif isinstance(item, Notice):
                summary.add_warning(item)
            else:
                summary.add_problems([item])  # type: ignore[list-item]
    tally.count(rows.shapes())


def _finished(plan: CheckedPlan, tally: _Tally, manifest: Manifest) -> CheckedPlan:
    plan.summary.add_problems(tally.chosen.unknown_ids(manifest.display_name))
    plan.summary.settle_uploads()
    if plan.summary.ok:
        plan.jobs = iter(tally.spool)
    else:
        tally.spool.close()
    return plan


def _plan_from_memo(
    manifest: Manifest,
    ledger: LedgerState,
    options: PlanOptions,
    credits: CreditTable,
    preflight: Preflight,
    path: Path,
    digest: str,
) -> tuple[CheckedPlan | None, bool]:
    """The plan from the memo's rows (a photo whose signature moved checked again, alone),
    or None if the memo cannot stand for this pass; and whether any row was handed to the
    plan (its options' callbacks were called then)."""
    plan = _empty_plan(manifest, credits)
    tally = _Tally(plan, ledger, options, credits)
    recheck = PhotoRecheck(preflight, str(manifest.base_dir))
    rows = MemoRows.open(path, digest, tally.forget, recheck)
    if rows is None:
        return None, False
    try:
        _take_rows(plan, tally, rows, None)
    except MemoStale:
        tally.spool.close()
        return None, True
    rows.rewrite()
    return _finished(plan, tally, manifest), True


def _new_job(ledger: LedgerState) -> Callable[[str], bool]:
    """Whether no earlier run knows the job: its content key cannot decide anything yet, so its
    photo may be read by its upload, and keyed then."""

    def new(job_id: str) -> bool:
        return not ledger.knows(job_id)

    return new


def _forget_both(tally: _Tally, writer: MemoWriter) -> Callable[[list[Shape]], None]:
    def forget(shapes: list[Shape]) -> None:
        tally.forget(shapes)
        writer.cleared()

    return forget


class _Tally:
    """The pass's verdict per valid job: runs (spooled) or skipped, and why; counted."""

    def __init__(
        self, plan: CheckedPlan, ledger: LedgerState, options: PlanOptions, credits: CreditTable
    ) -> None:
        self.plan, self.ledger, self.options, self.credits = plan, ledger, options, credits
        self.chosen = _Chooser(options)
        self.spool = Spool()
        # Neither --only, --limit, reviews nor --redo-missing: the ledger alone decides.
        self._plain = (
            options.only is None
            and options.limit is None
            and options.rejected is None
            and options.missing is None
        )
        self._on_done = options.on_done

    def job(self, planned: PlannedJob) -> None:
        job_id = planned.job.id
        state = self.ledger.state_of(job_id, planned.key)
        reason, redo = self._decide(job_id, state)
        if reason is Skip.DONE and self._on_done is not None and state is not None:
            self._on_done(state, planned)
        summary = self.plan.summary
        if reason is None:
            summary.count_job(planned, True, self.credits.for_job(planned.job), redo)
            self.spool.add(planned)
        else:
            summary.count_skip(planned, held=reason is Skip.HELD)
            self.plan.skipped[reason] += 1

    def row(self, hit: Hit) -> None:
        shape, job_id, number, prompt, row_key = hit[0], hit[1], hit[2], hit[3], hit[4]
        image = len(hit) > 5  # its own photo (path and digest)
        planned = shape.planned
        assert planned is not None
        if isinstance(row_key, UnreadImage):  # a job no earlier run knows (``_new_job``)
            state, row_key = None, None
        else:
            state = self.ledger.state_of(job_id, row_key or planned.key)
        if self._plain:  # no --only, --limit or reviews: the ledger alone decides
            reason, redo = (None if state is None else skip_reason(state, self.options)), False
        else:
            reason, redo = self._decide(job_id, state)
        if reason is Skip.DONE and self._on_done is not None and state is not None:
            # a protect job's composite needs its own PlannedJob; others only their state
            self._on_done(state, materialize(*hit) if planned.job.protect else planned)
        if reason is None and image:  # its own photo, its own upload: counted as a job alone
            own = materialize(*hit)
            self.plan.summary.count_job(own, True, self.credits.for_job(own.job), redo)
            self.spool.add(own)
        elif reason is None:
            shape.calls += 1
            shape.redo += redo
            if shape.template is None:
                shape.template = self.spool.template(planned, shape.prefix)
            self.spool.add_row(shape.template, job_id, number, prompt, row_key)
        else:
            if reason is Skip.HELD:
                shape.held += 1
            else:
                shape.skipped += 1
            self.plan.skipped[reason] += 1

    def _decide(self, job_id: str, state: FoldedJob | None) -> tuple[Skip | None, bool]:
        self.chosen.note(job_id)
        redo = _redo(self.options, state)
        reason = None if redo else skip_reason(state, self.options)
        if reason is None and not self.chosen.take(job_id):
            reason = Skip.HELD
        return reason, redo

    def count(self, shapes: list[Shape]) -> None:
        """Add the shapes' rows to the summary (once: their counters start over)."""
        summary = self.plan.summary
        for shape in shapes:
            planned = shape.planned
            if planned is None or not (shape.calls or shape.skipped or shape.held):
                continue
            each = self.credits.for_job(planned.job) if shape.calls else 0
            summary.count_jobs(planned, shape.calls, each, shape.redo, shape.skipped, shape.held)
            shape.calls = shape.redo = shape.skipped = shape.held = 0

    def forget(self, shapes: list[Shape]) -> None:
        """The pass drops its shapes: count them, and tell the spool their templates are done."""
        self.count(shapes)
        self.spool.forget_templates()


def prepare_file(
    path: Path,
    ledger: LedgerState | None = None,
    options: PlanOptions | None = None,
    credits: CreditTable | None = None,
) -> CheckedPlan:
    """``prepare`` for a manifest file; a header that does not load is a plan of problems."""
    table = credits if credits is not None else load_credit_table()
    try:
        manifest = load_manifest(path)
    except ManifestError as exc:
        plan = CheckedPlan(PlanSummary(manifest=path, name=path.stem))
        plan.summary.add_problems(exc.problems)
        return plan
    return prepare(manifest, ledger or LedgerState(), options or PlanOptions(), table)


def _redo(options: PlanOptions, state: FoldedJob | None) -> bool:
    """A done job bought again: rejected by a reviewer for this content, or (only under
    ``--redo-missing``: a stat per done job is too dear for every resume) its outputs gone; a
    partial job's missing images, under ``--redo-missing``."""
    if state is not None and state.status is Status.PARTIAL:
        return options.missing is not None
    if state is None or state.status is not Status.SUCCEEDED:
        return False
    return any(rule is not None and rule(state) for rule in (options.rejected, options.missing))


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
