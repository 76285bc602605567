"""What ``pipeline validate`` and ``pipeline run --dry-run`` print: problems, warnings, a plan.

``summarize`` makes one streaming pass (``plan.scan``) and keeps counts, not jobs, so it works on
a million-row catalog; at most ``KEEP`` problems and warnings are kept for printing, all are
counted. Credits are estimates from ``configs/credits.yaml`` (see ``load_credit_table``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ConfigError
from pipeline.errors import ManifestError, Problem
from pipeline.manifest import load_manifest
from pipeline.models import QUALITIES, Feature, Job, PlannedJob
from pipeline.plan import EntrySet, Planner, scan
from pipeline.preflight import Notice, Preflight

KEEP = 1000  # problems (and warnings) kept for printing; the rest are only counted
CREDITS_FILE = Path(__file__).resolve().parent.parent / "configs" / "credits.yaml"
# Used when the package is installed without the repository's configs/ folder.
BUILT_IN_CREDITS: Mapping[str, Mapping[str, int]] = {
    feature.value: {"low": 1000, "medium": 4000, "high": 8000} for feature in Feature
}

DoneKeys = Callable[[str, str], bool]  # (job_id, key) -> the ledger says it succeeded so


# --- credits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditTable:
    """Estimated credits per produced image, by feature and quality."""

    per_image: Mapping[str, Mapping[str, int]]
    source: str  # the file it came from, or "built-in"

    def for_job(self, job: Job) -> int:
        return self.per_image[job.feature.value][job.quality] * job.expected_outputs


def load_credit_table(path: Path | None = None) -> CreditTable:
    """``configs/credits.yaml`` (or ``path``); the built-in table if the default file is missing.

    Raises ConfigError naming the bad key if the file exists but is wrong.
    """
    source = path if path is not None else CREDITS_FILE
    if path is None and not source.exists():
        return CreditTable(BUILT_IN_CREDITS, "built-in")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot read the credit table: {exc}") from exc
    table = data.get("per_image") if isinstance(data, dict) else None
    return CreditTable(_checked_table(table, source), str(source))


def _checked_table(table: Any, source: Path) -> dict[str, dict[str, int]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: expected per_image: {{FEATURE: {{quality: credits}}}}")
    checked: dict[str, dict[str, int]] = {}
    for feature in Feature:
        row = table.get(feature.value)
        if not isinstance(row, dict):
            raise ConfigError(f"{source}: per_image.{feature.value} is missing")
        checked[feature.value] = {}
        for quality in QUALITIES:
            value = row.get(quality)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                key = f"per_image.{feature.value}.{quality}"
                raise ConfigError(f"{source}: {key} must be a whole number >= 0, got {value!r}")
            checked[feature.value][quality] = value
    return checked


# --- the summary ----------------------------------------------------------------------------


@dataclass
class FeatureCounts:
    jobs: int = 0  # valid jobs
    skipped: int = 0  # already done with the same content, per the ledger
    calls: int = 0  # feature calls to send: one per job not skipped
    images: int = 0  # images those calls produce
    uploads: int = 0  # distinct local files (image, mask) those jobs upload
    credits: int = 0  # estimated


@dataclass
class PlanSummary:
    manifest: Path
    name: str = ""
    counts: dict[Feature, FeatureCounts] = field(
        default_factory=lambda: {feature: FeatureCounts() for feature in Feature}
    )
    uploads: int = 0  # distinct local files over both features (a file shared counts once)
    problems: list[Problem] = field(default_factory=list)  # the first KEEP
    warnings: list[Notice] = field(default_factory=list)  # the first KEEP
    problem_count: int = 0
    warning_count: int = 0
    credit_source: str = ""

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def total(self) -> FeatureCounts:
        total = FeatureCounts()
        for counts in self.counts.values():
            total.jobs += counts.jobs
            total.skipped += counts.skipped
            total.calls += counts.calls
            total.images += counts.images
            total.credits += counts.credits
        total.uploads = self.uploads
        return total


def summarize(
    manifest_path: Path,
    done_keys: DoneKeys | None = None,
    credits: CreditTable | None = None,
    preflight: Preflight | None = None,
    planner: Planner | None = None,
    runnable: EntrySet | None = None,
) -> PlanSummary:
    """Check the whole manifest and count what a run would do; nothing is sent.

    ``run`` passes its own ``preflight`` and ``planner`` so that its second, streaming pass
    reuses what this one learnt about each file instead of reading and hashing it again, and
    ``runnable``, which collects the entries that will run, so that pass skips all the others.
    """
    summary = PlanSummary(manifest=manifest_path, name=manifest_path.stem)
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as exc:
        _add_problems(summary, exc.problems)
        return summary
    summary.name = manifest.name
    table = credits if credits is not None else load_credit_table()
    summary.credit_source = table.source
    uploads = _Uploads()
    for item in scan(manifest, preflight, planner):
        if isinstance(item, PlannedJob):
            will_run = _count(summary, item, table, uploads, done_keys)
            if will_run and runnable is not None:
                runnable.add(item.job.entry)
        elif isinstance(item, Notice):
            summary.warning_count += 1
            if len(summary.warnings) < KEEP:
                summary.warnings.append(item)
        else:
            _add_problems(summary, [item])
    for feature, files in uploads.by_feature.items():
        summary.counts[feature].uploads = len(files)
    summary.uploads = len(uploads.all)
    return summary


@dataclass
class _Uploads:
    """Distinct files to upload, by content: per feature and over all."""

    by_feature: dict[Feature, set[str]] = field(default_factory=lambda: {f: set() for f in Feature})
    all: set[str] = field(default_factory=set)

    def add(self, feature: Feature, token: str) -> None:
        self.by_feature[feature].add(token)
        self.all.add(token)


def _count(
    summary: PlanSummary,
    planned: PlannedJob,
    table: CreditTable,
    uploads: _Uploads,
    done_keys: DoneKeys | None,
) -> bool:
    """Count one planned job; True if a run would send it."""
    job = planned.job
    counts = summary.counts[job.feature]
    counts.jobs += 1
    if done_keys is not None and done_keys(job.id, planned.key):
        counts.skipped += 1
        return False
    counts.calls += 1
    counts.images += job.expected_outputs
    counts.credits += table.for_job(job)
    if planned.image_digest is not None:
        uploads.add(job.feature, planned.image_digest)
    if planned.mask_digest is not None:
        # A converted mask uploads other bytes than the file's.
        prefix = "converted:" if planned.mask_convert else ""
        uploads.add(job.feature, prefix + planned.mask_digest)
    return True


def _add_problems(summary: PlanSummary, problems: Iterable[Problem]) -> None:
    for problem in problems:
        summary.problem_count += 1
        if len(summary.problems) < KEEP:
            summary.problems.append(problem)


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
    lines.append(f"credits are estimates ({summary.credit_source}); nothing was sent")
    return "\n".join(lines)


def _verdict(summary: PlanSummary) -> str:
    if summary.problem_count:
        count = summary.problem_count
        return f"NOT READY: fix the {count} {_plural('problem', count)} above; nothing was sent."
    total = summary.total
    if total.calls == 0 and total.jobs:
        return f"READY: all {total.jobs:,} jobs are already done; a run would send nothing."
    calls, images = total.calls, total.images
    return (
        f"READY: {calls:,} feature {_plural('call', calls)} would produce "
        f"{images:,} {_plural('image', images)}."
    )
