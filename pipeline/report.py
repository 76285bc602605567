"""``OUT/report.html``: a static page to review a run, from its ledger and summary alone.

The page is one self-contained file (no server, no network: it works from ``file://``). The
header (counts, retries, credits, a progress chart) is rendered here as escaped HTML; the job
grid is an embedded JSON array that the page's script renders a page at a time, so a 10,000-job
run stays a few megabytes and opens fast.

Every image the page shows is a thumbnail in ``OUT/.thumbs/``, named by a hash of the source
file's path, mtime and size: re-running the report only makes the thumbnails that are missing,
and the page never needs an absolute path (the folder can be moved or zipped). Full-size outputs
are linked relative to ``OUT``.

Work is linear in the ledger: one pass to fold it into per-job views, one stat per image file,
and thumbnail work only for what changed.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any
from urllib.parse import quote

import orjson
from PIL import Image, ImageOps

from pipeline.events import Event, JobFailed, JobStarted, JobSucceeded
from pipeline.ledger import LEDGER_NAME, Damage, read_records, to_dict
from pipeline.report_page import render_page

REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"  # pipeline.stats writes it; not imported to keep report read-only
THUMBS_DIR = ".thumbs"
THUMB_SIDE = 256
THUMB_QUALITY = 80
# Bump when the thumbnail recipe changes: the new names miss the cache and old files are pruned.
THUMB_RECIPE = 1
THUMB_NAME = re.compile(r"^[0-9a-f]{24}\.webp$")
THUMB_WORKERS = min(8, os.cpu_count() or 1)
# The inpainter's mask drawn over its source: white (edited) areas tinted red, half opaque.
MASK_TINT = (239, 68, 68)
MASK_OPACITY = 0.55
CHART_WIDTH, CHART_HEIGHT = 320, 96
CHART_POINTS = 160  # the progress chart is sampled, so its size does not grow with the run

UNFINISHED = frozenset({"started", "submitted", "retrying"})
# Failed jobs first (they need attention), then unfinished ones, then the successes.
STATUS_RANK = {"failed": 0, "started": 1, "retrying": 1, "submitted": 1, "succeeded": 2}


# -- the ledger, folded into one view per job ---------------------------------------------------


@dataclass
class JobView:
    job_id: str
    order: int  # first appearance in the ledger: the manifest's order for a single run
    status: str = "started"
    job: dict[str, Any] = field(default_factory=dict)  # the latest `started` line's job details
    outputs: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    attempts: int | None = None
    credits: int | None = None
    retries: Counter[str] = field(default_factory=Counter)  # reasons, since the latest start
    updated: str = ""


@dataclass
class LedgerView:
    jobs: dict[str, JobView] = field(default_factory=dict)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (ts, status) when terminal
    retry_reasons: Counter[str] = field(default_factory=Counter)
    credits: int = 0
    images: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    damage: Damage = field(default_factory=Damage)


def read_ledger_view(path: Path) -> LedgerView:
    """One pass over the ledger; a job's state is its latest line (uploads say nothing)."""
    view = LedgerView()
    for typed in read_records(path, view.damage):
        record = to_dict(typed)
        ts = str(record.get("ts") or "")
        if ts:
            view.first_ts = view.first_ts or ts
            view.last_ts = ts
        if record["status"] == "uploaded":
            continue
        job = view.jobs.get(record["job_id"])
        if job is None:
            job = view.jobs[record["job_id"]] = JobView(record["job_id"], len(view.jobs))
        _apply(view, job, record, ts)
    return view


def _apply(view: LedgerView, job: JobView, record: dict[str, Any], ts: str) -> None:
    status = str(record["status"])
    job.status, job.updated = status, ts
    if status == "started":
        if isinstance(record.get("job"), dict):
            job.job = record["job"]
        # A new run of the job: what earlier runs produced or hit is no longer its state.
        job.outputs, job.error, job.attempts, job.retries = [], None, None, Counter()
    elif status == "retrying":
        kind = _error_kind(record.get("error"))
        job.retries[kind] += 1
        view.retry_reasons[kind] += 1
    elif status == "submitted":
        job.credits = _int_or_none(record.get("credits"))
    elif status == "succeeded":
        outputs = record.get("outputs")
        job.outputs = [str(o) for o in outputs] if isinstance(outputs, list) else []
        job.attempts = _int_or_none(record.get("attempts"))
        job.credits = _int_or_none(record.get("credits"))
        job.error = None
        view.finished.append((ts, status))
        view.credits += job.credits or 0
        view.images += len(job.outputs)
    elif status == "failed":
        job.error = record.get("error") if isinstance(record.get("error"), dict) else {}
        job.attempts = _int_or_none(record.get("attempts"))
        view.finished.append((ts, status))


def _error_kind(error: object) -> str:
    return str(error.get("kind") or "unknown") if isinstance(error, dict) else "unknown"


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_ts(ts: object) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


# -- the run summary ------------------------------------------------------------------------------


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    """summary.json, or None if it is missing or unreadable (a killed run writes none)."""
    try:
        summary = orjson.loads((out_dir / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if isinstance(summary, dict) and "last_run" in summary:  # the folder's summary (SPEC 5)
        summary = summary["last_run"]
    return summary if isinstance(summary, dict) else None


def summary_is_stale(summary: dict[str, Any], view: LedgerView) -> bool:
    """True when the ledger moved on after the summary: a later run was killed before writing."""
    finished, last = parse_ts(summary.get("finished_at")), parse_ts(view.last_ts)
    if finished is None or last is None:
        return False
    try:
        return last > finished
    except TypeError:  # one of them had no zone: cannot tell, trust the summary
        return False


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Input:
    """Where one job input is and, for a local file, its stat (None: missing)."""

    kind: str  # "file" | "url" | "asset" | "none"
    label: str
    path: str | None = None  # absolute; plain strings, as pathlib costs add up at 10,000 jobs
    stat: os.stat_result | None = None

    @property
    def present(self) -> bool:
        return self.path is not None and self.stat is not None

    def identity(self) -> list[str]:
        """What a thumbnail of this file depends on: a changed file gets a new name."""
        assert self.stat is not None
        return [str(self.path), str(self.stat.st_mtime_ns), str(self.stat.st_size)]


def resolve_input(value: object, stat: Callable[[str], os.stat_result | None]) -> Input:
    """A ledger input reference ("/abs/path", "https://...", "asset:...") and where it is."""
    if not isinstance(value, str) or not value:
        return Input("none", "")
    if value.startswith(("http://", "https://")):
        return Input("url", value)
    if value.startswith("asset:"):
        return Input("asset", value.removeprefix("asset:"))
    path = os.path.abspath(value)  # the ledger records absolute paths; be lenient otherwise
    return Input("file", os.path.basename(path), path, stat(path))


def stat_file(path: str) -> os.stat_result | None:
    """The stat of a regular file, or None if it is missing or no file."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in a hostile path
        return None
    return stat if S_ISREG(stat.st_mode) else None


# -- thumbnails -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThumbTask:
    name: str
    source: str
    mask: str | None = None  # tint the source where this mask is white


class Thumbnailer:
    """Names thumbnails by what they are made of, and makes only the missing ones."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / THUMBS_DIR
        self.dir.mkdir(exist_ok=True)
        # One listing instead of one stat per thumbnail: cheap at 10,000 jobs.
        self.existing = {entry.name for entry in os.scandir(self.dir)}
        self.wanted: set[str] = set()
        self.tasks: dict[str, ThumbTask] = {}
        self.failed: set[str] = set()

    def request(self, source: Input, mask: Input | None = None) -> str:
        """The thumbnail's file name; scheduled for making if it is not there yet."""
        parts = [str(THUMB_RECIPE), str(THUMB_SIDE), *source.identity()]
        if mask is not None:
            parts += ["mask", *mask.identity()]
        name = hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest() + ".webp"
        self.wanted.add(name)
        if name not in self.existing and name not in self.tasks:
            assert source.path is not None
            self.tasks[name] = ThumbTask(name, source.path, mask.path if mask else None)
        return name

    def run(self) -> None:
        if not self.tasks:
            return
        tasks = list(self.tasks.values())
        # Pillow releases the GIL while it decodes, resizes and encodes, so threads do scale.
        with ThreadPoolExecutor(max_workers=THUMB_WORKERS) as pool:
            for task, ok in zip(tasks, pool.map(self.make, tasks), strict=True):
                if not ok:
                    self.failed.add(task.name)
        self.tasks.clear()

    def url(self, name: str) -> str | None:
        return None if name in self.failed else f"{THUMBS_DIR}/{name}"

    def prune(self) -> None:
        """Drop our thumbnails that no job shows any more (replaced outputs, changed sources)."""
        for name in self.existing - self.wanted:
            if THUMB_NAME.match(name):
                (self.dir / name).unlink(missing_ok=True)

    def make(self, task: ThumbTask) -> bool:
        temp = self.dir / f".{task.name}.{os.getpid()}.tmp"
        try:
            image = make_thumbnail(task.source, task.mask)
            image.save(temp, "WEBP", quality=THUMB_QUALITY, method=0)  # fastest; still small
            os.replace(temp, self.dir / task.name)
        except Exception:  # an unreadable or unwritable image is a placeholder, never a crash
            temp.unlink(missing_ok=True)
            return False
        return True


def make_thumbnail(source: str | Path, mask: str | Path | None = None) -> Image.Image:
    box = (THUMB_SIDE, THUMB_SIDE)
    with Image.open(source) as opened:
        opened.draft("RGB", box)  # JPEG decodes at 1/2..1/8 scale for free
        image = ImageOps.exif_transpose(opened)
        image.thumbnail(box, Image.Resampling.BICUBIC)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    if mask is None:
        return image  # transparency kept: the page shows it over a checkerboard
    if has_alpha:
        # Flatten onto a light backdrop; dropping alpha would bare whatever hides under it.
        backdrop = Image.new("RGB", image.size, (245, 245, 245))
        backdrop.paste(image, mask=image.getchannel("A"))
        image = backdrop
    with Image.open(mask) as opened_mask:
        # Luminance is the edit weight (white edits, black keeps), as the API reads masks.
        weight = opened_mask.convert("L").resize(image.size, Image.Resampling.BILINEAR)
    alpha = weight.point([round(v * MASK_OPACITY) for v in range(256)])
    return Image.composite(Image.new("RGB", image.size, MASK_TINT), image, alpha)


# -- the page's data ------------------------------------------------------------------------------


def safe_parts(relative: str) -> list[str] | None:
    """The parts of an output path relative to OUT, or None if it would point outside OUT."""
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if not parts or relative.startswith("/") or ".." in parts or "\0" in relative:
        return None
    return parts


def url_of(parts: Iterable[str]) -> str:
    return "/".join(quote(part) for part in parts)


class PageData:
    """Turns job views into the JSON the page renders, asking for thumbnails on the way."""

    def __init__(self, out_dir: Path, thumbs: Thumbnailer) -> None:
        self.root = os.path.abspath(out_dir)
        self.thumbs = thumbs
        # A catalog often shares one mask or backdrop between many jobs: stat each file once.
        self._stats: dict[str, os.stat_result | None] = {}

    def stat(self, path: str) -> os.stat_result | None:
        if path not in self._stats:
            self._stats[path] = stat_file(path)
        return self._stats[path]

    def link(self, path: str) -> str | None:
        """A URL relative to the page for a file inside OUT; None for anything outside it."""
        prefix = self.root + os.sep
        if not path.startswith(prefix):
            return None
        return url_of(path[len(prefix) :].split(os.sep))

    def plan(self, jobs: Sequence[JobView]) -> list[dict[str, Any]]:
        """Pass 1: resolve inputs and outputs, schedule thumbnails (names in ``thumb``)."""
        return [self._job(job) for job in jobs]

    def finish(self, planned: Iterable[dict[str, Any]]) -> None:
        """Pass 2, after the thumbnails were made: names become links, failures placeholders."""
        for job in planned:
            for image in (job["source"], *job["outputs"]):
                for key in ("thumb", "plain"):
                    if image.get(key):
                        image[key] = self.thumbs.url(image[key])
                if image.get("thumb") is None and image.get("note") is None:
                    image["note"] = "unreadable"

    def _job(self, view: JobView) -> dict[str, Any]:
        details = view.job
        parameters = details.get("parameters")
        parameters = dict(parameters) if isinstance(parameters, dict) else {}
        prompt = parameters.pop("prompt", "")
        source = resolve_input(details.get("image"), self.stat)
        mask = resolve_input(details.get("mask"), self.stat)
        return {
            "id": view.job_id,
            "status": view.status,
            "feature": str(details.get("feature") or ""),
            "prompt": str(prompt),
            "params": parameters,
            "source": self._source(source, mask),
            "mask": None if mask.kind == "none" else {"kind": mask.kind, "label": mask.label},
            "outputs": [self._output(relative) for relative in view.outputs],
            "error": view.error,
            "attempts": view.attempts,
            "credits": view.credits,
            "retries": dict(view.retries),
            "updated": view.updated,
        }

    def _source(self, source: Input, mask: Input) -> dict[str, Any]:
        image: dict[str, Any] = {"label": source.label, "kind": source.kind, "note": None}
        if source.kind != "file":
            image["note"] = source.kind  # remote inputs are not fetched: shown as placeholders
            return image
        if source.path is None or not source.present:
            image["note"] = "missing"
            return image
        image["thumb"] = self.thumbs.request(source)
        if mask.kind == "file" and mask.present:
            # The card shows the mask over the source; the plain source stays one click away.
            image["plain"] = image["thumb"]
            image["thumb"] = self.thumbs.request(source, mask)
        image["full"] = self.link(source.path)
        return image

    def _output(self, relative: str) -> dict[str, Any]:
        parts = safe_parts(relative)
        image: dict[str, Any] = {"label": parts[-1] if parts else relative, "note": None}
        path = os.path.join(self.root, *parts) if parts else None
        output = Input("file", image["label"], path, self.stat(path) if path else None)
        if parts is None or not output.present:
            image["note"] = "missing"
            return image
        image["thumb"] = self.thumbs.request(output)
        image["full"] = url_of(parts)
        return image


def ordered(jobs: Iterable[JobView]) -> list[JobView]:
    return sorted(jobs, key=lambda job: (STATUS_RANK.get(job.status, 1), job.order))


# -- the header -----------------------------------------------------------------------------------


@dataclass
class RunFacts:
    """What the header says, from summary.json when it describes the ledger, else the ledger."""

    title: str
    manifest: str
    started_at: str | None
    duration: float | None
    states: Counter[str]
    skipped: int | None
    retry_reasons: dict[str, int]
    credits: int | None
    account: str | None
    jobs_per_minute: float | None
    images_per_minute: float | None
    exit_code: int | None
    stopped: str | None
    notes: list[str]
    chart_since: str | None


def run_facts(out_dir: Path, view: LedgerView, summary: dict[str, Any] | None) -> RunFacts:
    states = Counter(job.status for job in view.jobs.values())
    notes = _damage_notes(view)
    if summary is not None and summary_is_stale(summary, view):
        notes.append("summary.json is older than the ledger: the last run did not finish")
        summary = None
    elif summary is None:
        notes.append("no summary.json (the run did not finish?): the figures are from the ledger")
    if summary is None:
        return _facts_from_ledger(out_dir, view, states, notes)
    return _facts_from_summary(out_dir, summary, states, notes)


def _damage_notes(view: LedgerView) -> list[str]:
    notes = []
    if view.damage.torn_tail:
        notes.append("the ledger's last line was torn (a crash mid-write) and was ignored")
    if view.damage.corrupt_lines:
        shown = ", ".join(map(str, view.damage.corrupt_lines[:10]))
        notes.append(f"unreadable ledger lines skipped: {shown}")
    return notes


def _facts_from_summary(
    out_dir: Path, summary: dict[str, Any], states: Counter[str], notes: list[str]
) -> RunFacts:
    stats = summary.get("stats") if isinstance(summary.get("stats"), dict) else {}
    reasons = {
        key.removeprefix("retry/reason/"): value
        for key, value in stats.items()
        if key.startswith("retry/reason/") and isinstance(value, int)
    }
    counts = _dict(summary.get("counts"))
    throughput = _dict(summary.get("throughput"))
    credits = _dict(summary.get("credits"))
    stopped = _dict(summary.get("stopped"))
    manifest = summary.get("manifest")
    used, limit = credits.get("account_used"), credits.get("account_limit")
    return RunFacts(
        title=str(summary.get("name") or out_dir.resolve().name),
        manifest=PurePosixPath(str(manifest)).name if manifest else "",
        started_at=str(summary.get("started_at") or "") or None,
        duration=_number(summary.get("wall_seconds")),
        states=states,
        skipped=_int_or_none(counts.get("skipped")),
        retry_reasons=reasons,
        credits=_int_or_none(credits.get("estimated")),
        account=f"{used:,} of {limit:,} used" if used is not None and limit is not None else None,
        jobs_per_minute=_number(throughput.get("jobs_per_minute")),
        images_per_minute=_number(throughput.get("images_per_minute")),
        exit_code=_int_or_none(summary.get("exit_code")),
        stopped=str(stopped.get("message") or stopped.get("reason") or "") or None,
        notes=notes,
        chart_since=str(summary.get("started_at") or "") or None,
    )


def _facts_from_ledger(
    out_dir: Path, view: LedgerView, states: Counter[str], notes: list[str]
) -> RunFacts:
    first, last = parse_ts(view.first_ts), parse_ts(view.last_ts)
    duration = (last - first).total_seconds() if first and last else None
    per_minute = 60 / duration if duration else None
    return RunFacts(
        title=out_dir.resolve().name,
        manifest="",
        started_at=view.first_ts,
        duration=duration,
        states=states,
        skipped=None,
        retry_reasons=dict(view.retry_reasons),
        credits=view.credits,
        account=None,
        jobs_per_minute=round(states["succeeded"] * per_minute, 2) if per_minute else None,
        images_per_minute=round(view.images * per_minute, 2) if per_minute else None,
        exit_code=None,
        stopped=None,
        notes=notes,
        chart_since=None,
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_when(ts: str | None) -> str:
    moment = parse_ts(ts)
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def progress_chart(finished: Sequence[tuple[str, str]], since: str | None) -> str:
    """Inline SVG: cumulative succeeded and failed jobs against time, sampled to a fixed size."""
    start = parse_ts(since)
    events: list[tuple[float, str]] = []
    for ts, status in finished:
        moment = parse_ts(ts)
        if moment is None:
            continue
        try:
            if start is not None and moment < start:
                continue  # an earlier run: the chart shows the run the header describes
        except TypeError:
            continue
        events.append((moment.timestamp(), status))
    if not events:
        return '<p class="chart-empty">no finished jobs yet</p>'
    events.sort()
    t0 = start.timestamp() if start is not None else events[0][0]
    span = max(events[-1][0] - t0, 1e-3)
    ok_line, failed_line = _cumulative(events, t0, span)
    top = max(ok_line[-1], failed_line[-1], 1)
    return _chart_svg(ok_line, failed_line, top, span)


def _cumulative(
    events: Sequence[tuple[float, str]], t0: float, span: float
) -> tuple[list[int], list[int]]:
    """Counts at CHART_POINTS evenly spaced moments: one walk over the sorted events."""
    ok, failed, index = 0, 0, 0
    ok_line, failed_line = [0], [0]
    for step in range(1, CHART_POINTS + 1):
        until = t0 + span * step / CHART_POINTS
        while index < len(events) and events[index][0] <= until + 1e-9:
            if events[index][1] == "succeeded":
                ok += 1
            else:
                failed += 1
            index += 1
        ok_line.append(ok)
        failed_line.append(failed)
    return ok_line, failed_line


def _chart_svg(ok_line: list[int], failed_line: list[int], top: int, span: float) -> str:
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, 4

    def points(line: list[int]) -> str:
        step = (width - 2 * pad) / (len(line) - 1)
        return " ".join(
            f"{pad + i * step:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}"
            for i, v in enumerate(line)
        )

    ok_points = points(ok_line)
    area = f"{pad},{height - pad} {ok_points} {width - pad},{height - pad}"
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'role="img" '
        f'aria-label="jobs finished over time">'
        f"<title>{ok_line[-1]} succeeded, {failed_line[-1]} failed over "
        f"{html.escape(format_duration(span))}</title>"
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" '
        f'y2="{height - pad}"/>'
        f'<polygon class="ok-area" points="{area}"/>'
        f'<polyline class="ok" points="{ok_points}"/>'
        f'<polyline class="bad" points="{points(failed_line)}"/>'
        f"</svg>"
        f'<div class="chart-axis"><span>0</span><span>{ok_line[-1]} ok · '
        f"{failed_line[-1]} failed</span><span>{html.escape(format_duration(span))}</span></div>"
    )


def render_header(facts: RunFacts, view: LedgerView) -> str:
    esc = html.escape
    states = facts.states
    total = sum(states.values())
    unfinished = sum(states[s] for s in UNFINISHED)
    retries = sum(facts.retry_reasons.values())
    reasons = ", ".join(
        f"{esc(kind)} {count}" for kind, count in sorted(facts.retry_reasons.items())
    )
    subtitle = " · ".join(
        part
        for part in (
            esc(facts.manifest),
            esc(format_when(facts.started_at)),
            esc(format_duration(facts.duration)),
            f"exit {facts.exit_code}" if facts.exit_code is not None else "",
        )
        if part
    )
    failed = states["failed"]
    account = f"account: {esc(facts.account)}" if facts.account else "estimated"
    per_minute = f"jobs/min · {_maybe(facts.images_per_minute)} images/min"
    tiles = [
        _tile("Succeeded", f"{states['succeeded']:,}", f"of {total:,} jobs", "ok"),
        _tile(
            "Failed",
            f"{failed:,}",
            "listed first below" if failed else "none",
            "bad" if failed else "",
        ),
        _tile("Unfinished", f"{unfinished:,}", "resume to finish", "warn" if unfinished else ""),
        _tile("Skipped", _maybe(facts.skipped), "already done", ""),
        _tile("Retries", f"{retries:,}", reasons or "none", ""),
        _tile("Credits", _maybe(facts.credits), account, ""),
        _tile("Throughput", _maybe(facts.jobs_per_minute), per_minute, ""),
    ]
    notices = [f'<p class="notice stop">Stopped: {esc(facts.stopped)}</p>'] if facts.stopped else []
    notices += [f'<p class="notice">{esc(note)}</p>' for note in facts.notes]
    return (
        f'<header class="run"><div class="title"><h1>{esc(facts.title)}</h1>'
        f'<p class="subtitle">{subtitle}</p></div>'
        f'<div class="tiles">{"".join(tiles)}'
        f'<div class="tile chart-tile"><span class="tile-label">Progress</span>'
        f"{progress_chart(view.finished, facts.chart_since)}</div></div>"
        f"{''.join(notices)}</header>"
    )


def _tile(label: str, value: str, detail: str, tone: str) -> str:
    # `value` and `detail` are built from escaped text and numbers by the caller.
    return (
        f'<div class="tile {tone}"><span class="tile-label">{label}</span>'
        f'<span class="tile-value">{value}</span><span class="tile-detail">{detail}</span></div>'
    )


def _maybe(value: float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


# -- writing --------------------------------------------------------------------------------------


def embed_json(data: object) -> str:
    """JSON that is safe inside a <script> element: no `</script>`, no HTML-significant bytes."""
    text = orjson.dumps(data).decode()
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


class ThumbnailPrefetcher:
    """Makes each finished job's thumbnails while the run goes on, on one background thread.

    An event listener, like the ledger. The report written at the end of the run then finds
    them made (the same names, the same recipe) instead of making thousands of them after the
    last job, while nothing else is happening. Pillow releases the GIL while it decodes and
    encodes, so the workers barely notice.
    """

    def __init__(self, out_dir: Path) -> None:
        self._thumbs = Thumbnailer(out_dir)
        self._data = PageData(out_dir, self._thumbs)
        self._details: dict[str, dict[str, Any]] = {}  # jobs in flight: their started details
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnails")

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            job = event.planned.job
            image, mask = str(job.image), str(job.mask) if job.mask else None
            self._details[job.id] = {"feature": job.feature.value, "image": image, "mask": mask}
        elif isinstance(event, JobSucceeded):
            details = self._details.pop(event.job_id, None)
            if details is not None:
                self._prefetch(JobView(event.job_id, 0, "succeeded", details, [*event.outputs]))
        elif isinstance(event, JobFailed):
            self._details.pop(event.job_id, None)

    def _prefetch(self, view: JobView) -> None:
        self._data.plan([view])  # names the thumbnails and queues the missing ones
        tasks = list(self._thumbs.tasks.values())
        self._thumbs.tasks.clear()
        self._thumbs.existing.update(task.name for task in tasks)  # made or being made
        for task in tasks:
            self._pool.submit(self._thumbs.make, task)

    def close(self, finish: bool = False) -> None:
        """Stop; unless ``finish``, what is still queued is dropped: the report makes it, with
        more threads than this one."""
        self._pool.shutdown(wait=True, cancel_futures=not finish)


def build_report(out_dir: Path) -> str:
    """The page's HTML (thumbnails made on the way), without writing it."""
    view = read_ledger_view(out_dir / LEDGER_NAME)
    facts = run_facts(out_dir, view, read_summary(out_dir))
    thumbs = Thumbnailer(out_dir)
    data = PageData(out_dir, thumbs)
    jobs = data.plan(ordered(view.jobs.values()))
    thumbs.run()
    thumbs.prune()
    data.finish(jobs)
    payload = {
        "title": facts.title,
        # Rejections are remembered per run in the browser; this tells runs apart.
        "run_key": f"{facts.title}|{facts.started_at or ''}",
        "jobs": jobs,
    }
    return render_page(
        title=f"{facts.title} — run report",
        header=render_header(facts, view),
        data=embed_json(payload),
    )


def write_report(out_dir: Path) -> Path:
    """Write ``OUT/report.html`` (temp file, then rename) and return its path."""
    page = build_report(out_dir)
    path = out_dir / REPORT_NAME
    temp = out_dir / f".{REPORT_NAME}.{os.getpid()}.tmp"
    try:
        temp.write_text(page, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
