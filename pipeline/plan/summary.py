"""The plan's summary: counts per feature, problems and warnings, and the text of ``validate``
and ``run --dry-run``.

The plan's first pass (``plan.prepare``) feeds it one job at a time and it keeps counts, not
jobs, so it works on a million-row catalog; at most ``KEEP`` problems and warnings are kept for
printing, all are counted. Credits are estimates (``pipeline.credits``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import Problem
from pipeline.models import Feature, PlannedJob
from pipeline.preflight import Notice
from pipeline.preflight.fields import Fingerprints, fingerprint

KEEP = 1000  # problems (and warnings) kept for printing; the rest are only counted
UPLOAD_FILTER_BITS = 1 << 23  # 1 MB a feature: about 12% of a million uploads are checked twice


@dataclass
class FeatureCounts:
    jobs: int = 0  # valid jobs
    skipped: int = 0  # already done (or failed, without --retry-failed) for the same content
    calls: int = 0  # feature calls to send: one per job that runs
    images: int = 0  # images those calls produce
    uploads: int = 0  # distinct inputs (image, mask) those jobs upload
    credits: int = 0  # estimated
    redo: int = 0  # of the calls: jobs run again because a reviewer rejected their outputs
    held: int = 0  # pending jobs this run leaves for later (--limit, --only)
    # Calls added where jobs of several images are bought one call of n: 1 per image (the
    # asset host serves no unsigned reads: a private bucket); the same credits.
    per_image: int = 0

    def add(self, other: FeatureCounts) -> None:
        names = ("jobs", "skipped", "calls", "images", "credits", "redo", "held", "per_image")
        for name in names:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class PlanSummary:
    manifest: Path
    name: str = ""
    counts: dict[Feature, FeatureCounts] = field(
        default_factory=lambda: {feature: FeatureCounts() for feature in Feature}
    )
    problems: list[Problem] = field(default_factory=list)  # the first KEEP
    warnings: list[Notice] = field(default_factory=list)  # the first KEEP
    problem_count: int = 0
    warning_count: int = 0
    credit_source: str = ""
    remote_inputs: int = 0  # remote inputs fetched to check them (validate says so)
    # Each job's uploads as 64-bit fingerprints (``upload_fingerprints``), by feature: counted
    # at the end of the pass (``settle_uploads``), 8 bytes a job, not a set of digests.
    _uploads: dict[Feature, Fingerprints] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def uploads(self) -> int:
        """Distinct inputs over both features (a file shared between them counts once)."""
        kept = list(self._uploads.values())
        if len(kept) < 2:
            return kept[0].distinct() if kept else 0
        both = Fingerprints(UPLOAD_FILTER_BITS)
        for fingerprints in kept:
            for value in fingerprints:
                both.add_fingerprint(value)
        return both.distinct()

    def settle_uploads(self) -> None:
        """Each feature's count of distinct uploads, once the pass is over."""
        for feature, fingerprints in self._uploads.items():
            self.counts[feature].uploads = fingerprints.distinct()

    @property
    def total(self) -> FeatureCounts:
        total = FeatureCounts()
        for counts in self.counts.values():
            total.add(counts)
        total.uploads = self.uploads
        return total

    def count_job(self, planned: PlannedJob, runs: bool, credits: int, redo: bool = False) -> None:
        """One valid job: ``runs`` if this run sends it, with its estimated ``credits``."""
        counts = self.counts[planned.job.feature]
        counts.jobs += 1
        if not runs:
            return
        counts.calls += 1
        counts.redo += redo
        counts.images += planned.job.expected_outputs
        counts.per_image += planned.job.expected_outputs - 1
        counts.credits += credits
        uploads = self._uploads.get(planned.job.feature)
        if uploads is None:
            uploads = self._uploads[planned.job.feature] = Fingerprints(UPLOAD_FILTER_BITS)
        for value in upload_fingerprints(planned):
            uploads.add_fingerprint(value)

    def count_jobs(
        self, planned: PlannedJob, calls: int, credits: int, redo: int, skipped: int, held: int
    ) -> None:
        """Many valid jobs of one shape (``planned`` is one of them): ``calls`` run, each of
        ``credits``; ``skipped`` and ``held`` do not."""
        counts = self.counts[planned.job.feature]
        counts.jobs += skipped + held
        counts.skipped += skipped
        counts.held += held
        if calls:
            self.count_job(planned, True, credits * calls, bool(redo))
            counts.jobs += calls - 1
            counts.calls += calls - 1
            counts.redo += redo - bool(redo)
            counts.images += planned.job.expected_outputs * (calls - 1)
            counts.per_image += (planned.job.expected_outputs - 1) * (calls - 1)

    def count_skip(self, planned: PlannedJob, held: bool = False) -> None:
        counts = self.counts[planned.job.feature]
        counts.jobs += 1
        if held:
            counts.held += 1
        else:
            counts.skipped += 1

    def add_problems(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.problem_count += 1
            if len(self.problems) < KEEP:
                self.problems.append(problem)

    def add_warning(self, warning: Notice) -> None:
        self.warning_count += 1
        if len(self.warnings) < KEEP:
            self.warnings.append(warning)


def upload_fingerprints(planned: PlannedJob) -> Iterator[int]:
    """64 bits of each input the job uploads: its digest's first 16 hex digits; a converted
    mask's, another value (other bytes go up); a photo its upload reads, its path's (two paths
    of the same bytes then count twice, and go up once)."""
    if planned.image_digest is not None:
        yield int(planned.image_digest[:16], 16)
    elif planned.unread is not None:
        yield fingerprint(("unread", planned.job.image.value))
    if planned.mask_digest is not None:
        if planned.mask_convert:
            yield fingerprint(("converted", planned.mask_digest))
        else:
            yield int(planned.mask_digest[:16], 16)


# --- text -----------------------------------------------------------------------------------


def format_problems(
    problems: Sequence[Problem | Notice],
    limit: int = 200,
    total: int | None = None,
    heading: str = "problems",
) -> str:
    """Problems (or warnings) grouped by job, at most ``limit`` of them, then "and N more".

    ``total`` is how many there were in all when ``problems`` holds only the first ones (a
    PlanSummary keeps ``KEEP``; pass ``summary.problem_count``).
    """
    total = len(problems) if total is None else total
    if total == 0:
        return ""
    word = heading.removesuffix("s") if total == 1 else heading
    lines = [f"{total:,} {word}:"]
    groups: dict[tuple[str | None, str | None], list[Problem | Notice]] = {}
    for problem in problems[:limit]:
        groups.setdefault((problem.job, problem.location), []).append(problem)
    for (job_id, location), members in groups.items():
        lines.append(f"  {_group_title(job_id, location)}")
        lines.extend(f"    {_line(problem)}" for problem in members)
    shown = min(limit, len(problems))
    if total > shown:
        lines.append(f"  ... and {total - shown:,} more")
    return "\n".join(lines)


def _group_title(job_id: str | None, location: str | None) -> str:
    if job_id is None:
        return f"{location}:" if location else "manifest:"
    return f"job {job_id!r} ({location}):" if location else f"job {job_id!r}:"


def _line(problem: Problem | Notice) -> str:
    return f"{problem.field}: {problem.message}" if problem.field else problem.message


def _plural(word: str, count: int) -> str:
    return word if count == 1 else f"{word}s"


def format_plan(summary: PlanSummary) -> str:
    """The report: problems, warnings, then a table per feature and what happens next."""
    parts = [f"Manifest {summary.name!r} ({summary.manifest})"]
    if summary.problem_count:
        parts.append(format_problems(summary.problems, total=summary.problem_count))
    if summary.warning_count:
        warnings = format_problems(
            summary.warnings, total=summary.warning_count, heading="warnings"
        )
        parts.append(warnings)
    if summary.credit_source:  # the manifest header was readable
        parts.append(_table(summary))
    parts.append(_verdict(summary))
    return "\n\n".join(parts)


_COLUMNS = ("jobs", "skip", "calls", "images", "uploads", "est. credits")


def _table(summary: PlanSummary) -> str:
    rows = [(feature.value, summary.counts[feature]) for feature in Feature]
    rows.append(("total", summary.total))
    width = max(len(name) for name, _ in rows)
    widths = [max(7, len(column)) for column in _COLUMNS]
    header = f"{'feature':<{width}}  " + "  ".join(
        f"{column:>{w}}" for column, w in zip(_COLUMNS, widths, strict=True)
    )
    lines = [header]
    for name, counts in rows:
        values = (
            counts.jobs,
            counts.skipped,
            counts.calls,
            counts.images,
            counts.uploads,
            counts.credits,
        )
        cells = "  ".join(f"{value:>{w},}" for value, w in zip(values, widths, strict=True))
        lines.append(f"{name:<{width}}  {cells}")
    total = summary.total
    if total.redo:
        lines.append(f"redo {total.redo:,}: calls that re-run jobs a reviewer rejected (paid)")
    if total.held:
        lines.append(f"held {total.held:,}: pending jobs left for a later run (--limit, --only)")
    if total.per_image:
        lines.append(
            f"one call per image: {total.calls + total.per_image:,} calls, not {total.calls:,}, "
            "if the asset host serves no unsigned reads (the live API's private bucket: checked "
            "before the first call of several images); the same credits"
        )
    if summary.remote_inputs:
        lines.append(f"fetched {summary.remote_inputs:,} remote inputs to check them")
    lines.append(f"credits are estimates ({summary.credit_source}); nothing was sent")
    return "\n".join(lines)


def _verdict(summary: PlanSummary) -> str:
    if summary.problem_count:
        count = summary.problem_count
        return f"NOT READY: fix the {count} {_plural('problem', count)} above; nothing was sent."
    total = summary.total
    if total.calls == 0 and total.jobs and not total.held:
        return f"READY: all {total.jobs:,} jobs are already done; a run would send nothing."
    calls, images = total.calls, total.images
    per_image = f" (or {calls + total.per_image:,}, one per image)" if total.per_image else ""
    return (
        f"READY: {calls:,} feature {_plural('call', calls)}{per_image} would produce "
        f"{images:,} {_plural('image', images)}."
    )
