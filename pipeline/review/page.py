"""The review page: ``OUT/report.html`` and its data, written streaming, in pages of jobs.

The page's HTML, CSS and script are package data in ``static/``. ``report.html`` inlines them
with the run's *index*: the header, the number of jobs of each status and feature in every chunk
of ``CHUNK_ROWS`` jobs, and the decisions that stand; the jobs themselves are in chunk files
beside it (``report-data/<build>/<n>.js``, each a ``reportChunk(n, {...})`` call, which a
``file://`` page may load where it could not fetch JSON). The page loads the chunks a page of
cards needs, counts matches from the index where the filters allow, and reads chunks in order
for a search (``static/report.js``). ``pipeline review`` (``server.py``) serves the same index
and chunks (``/api/data``, ``/api/chunk/...``) and links the static files.

Writing is one pass in the page's order (failed, unfinished, succeeded, then the manifest's
jobs not run yet) over the ledger's compact fold (``view.read_report_fold``): each job's row is
made, thumbnails are asked for, and a chunk is written and dropped as it fills. Memory is the
fold (about 100 bytes a job) and one chunk, at any size of run, plus an int per job and each
product's name for the order.

Products: the jobs of one ``group`` are brought together where the first of them ranks
(``product_blocks``), and every chunk a product's jobs are in carries its whole summary
(``product_summary``: where it starts, how many jobs, their states, its images' checks per
channel), so a product cut by a chunk or a page boundary is still shown, and decided, as one.
Each output's marketplace verdicts (from its ledger line) are named once per chunk; the index
counts each chunk's jobs by status group, feature and check token (``check_token``), which is
what the page's filters count without loading the chunks.

A chunk's rows are arrays (``FIELDS``); its few distinct statuses, features and masks are named
once in its ``tables``; its sources, parameters, products and verdicts in its own lists, which
rows index.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import shutil
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

import orjson

from pipeline.durability import atomic_write
from pipeline.images.checks import Channel, ImageChecks
from pipeline.images.masks import MaskRecipe
from pipeline.layout import LEDGER_NAME, REPORT_DATA_DIR, REPORT_NAME, THUMBS_DIR
from pipeline.ledger import JobRef
from pipeline.ledger.compact import ByteIndex, as_bytes
from pipeline.ledger.decisions import Decision, read_decisions, standing
from pipeline.models import Job
from pipeline.review.mask_view import recipe_from_text, recipe_label
from pipeline.review.thumbs import Input, Thumbnailer, resolve_input, stat_file
from pipeline.review.view import (
    UNFINISHED,
    JobView,
    ReportFold,
    header_data,
    read_report_fold,
    read_summary,
)

CHUNK_ROWS = 2000  # jobs a chunk file: ~0.5 MB, parsed in a few ms; 500 files at a million
FIELDS = (
    "id", "status", "feature", "prompt", "params", "source", "mask", "outputs", "error",
    "attempts", "credits", "retries", "updated", "product", "checks",
)  # fmt: skip
PRODUCT_COLUMN = FIELDS.index("product")  # the job's product: an index into ``products``
CHANNELS = tuple(Channel)  # a verdict's lists of failures, in this order
# Columns whose few distinct values a chunk names once, in ``tables``, rows holding their index.
TABLED = ("status", "feature", "mask")
PENDING = "pending"
# (job_id, key, feature, image, mask, prompt[, group]): a manifest job, for pending ones on the
# page; the group is optional (callers that predate it pass six).
ManifestJob = (
    tuple[str, str | None, str, str | None, str | None, str]
    | tuple[str, str | None, str, str | None, str | None, str, str | None]
)
# A job's marketplace checks as one small number: CHECKED when its outputs were judged, and a
# bit per channel that one of them fails. The index counts jobs by it, so the page's filter by
# check counts matches on every page without loading them.
CHECKED = 1
FAILS = {channel: 2 << bit for bit, channel in enumerate(CHANNELS)}
ALL_PASS = "ok"  # the token of a job whose every output passes every channel


def manifest_rows(items: Iterable[object]) -> Iterator[ManifestJob]:
    """The page's row for each job of a manifest stream (problems in it are skipped). The
    content key is left out: it needs the inputs hashed, and the page matches jobs by id."""
    for job in items:
        if isinstance(job, Job):
            mask = str(job.mask) if job.mask else None
            yield (job.id, None, job.feature.value, str(job.image), mask, job.prompt, job.group)


def manifest_group(job: ManifestJob) -> str | None:
    rest = job[6:]
    return rest[0] if rest else None


def check_state(checks: Iterable[ImageChecks]) -> int:
    """``CHECKED`` and a bit per channel some output fails; 0 when nothing was judged."""
    state = 0
    for verdict in checks:
        state |= CHECKED
        for channel in CHANNELS:
            if not verdict.passes(channel):
                state |= FAILS[channel]
    return state


def check_token(state: int) -> str:
    """The index's name of a check state: "" not judged, "ok", or the failing channels
    ("amazon,google"); ``checksOk`` in ``static/report.js`` reads it."""
    if not state & CHECKED:
        return ""
    failing = [channel.value for channel in CHANNELS if state & FAILS[channel]]
    return ",".join(failing) or ALL_PASS


def wire_verdict(checks: ImageChecks) -> list[list[list[str]]]:
    """One output's verdicts as the page reads them: per channel (``CHANNELS``), its
    failures as [code, reason]; an empty list passes."""
    return [[[f.code, f.reason] for f in checks.failures(channel)] for channel in CHANNELS]


def product_summary(name: str, at: int, views: list[JobView]) -> dict[str, Any]:
    """What a product's header shows, for all its jobs (also those on other pages): where
    they start on the page and how many they are, their states, and per channel how many of
    their images pass of those judged."""
    checks = {channel.value: [0, 0] for channel in CHANNELS}
    for view in views:
        for verdict in view.checks:
            for channel in CHANNELS:
                tally = checks[channel.value]
                tally[0] += verdict.passes(channel)
                tally[1] += 1
    states = Counter(view.status for view in views)
    summary: dict[str, Any] = {"name": name, "at": at, "n": len(views), "states": dict(states)}
    if checks[CHANNELS[0].value][1]:
        summary["checks"] = checks
    return summary


def static_text(name: str) -> str:
    return resources.files("pipeline.review").joinpath("static", name).read_text("utf-8")


def safe_parts(relative: str) -> list[str] | None:
    """The parts of an output path relative to OUT, or None if it would point outside OUT."""
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if not parts or relative.startswith("/") or ".." in parts or "\0" in relative:
        return None
    return parts


_PLAIN = re.compile(r"^[A-Za-z0-9._~/-]*$")


def url_of(parts: Iterable[str]) -> str:
    joined = "/".join(parts)
    if _PLAIN.match(joined):  # the common case: nothing to escape, skip quote() per part
        return joined
    return "/".join(quote(part) for part in joined.split("/"))


class PageData:
    """Turns job views into the page's rows, asking for source thumbnails on the way."""

    thumbs: Thumbnailer

    def __init__(self, out_dir: Path, thumbs: Thumbnailer) -> None:
        self.root = os.path.abspath(out_dir)
        self.thumbs = thumbs
        # A catalog often shares one mask or backdrop between many jobs: stat each file once,
        # and describe each distinct (image, mask) pair once.
        self._stats: dict[str, os.stat_result | None] = {}
        # Rows refer to these tables by index: a 100,000-job payload names each once.
        self.sources: list[dict[str, Any]] = []
        self.params: list[dict[str, Any]] = []
        self.products: list[dict[str, Any]] = []  # the summaries of this chunk's products
        self.verdicts: list[list[list[list[str]]]] = []  # distinct verdicts on an image
        self._inputs: dict[tuple[object, object, object, bool], tuple[int, Input]] = {}
        self._params_index: dict[bytes, int] = {}
        self._products_index: dict[int, int] = {}  # a product's first position -> its index
        self._verdicts_index: dict[bytes, int] = {}

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

    def row(self, view: JobView, thumbs: bool = True) -> list[Any]:
        """The job's row (``FIELDS``); its source and parameters index this chunk's tables."""
        details = view.job
        parameters = details.get("parameters")
        parameters = dict(parameters) if isinstance(parameters, dict) else {}
        prompt = parameters.pop("prompt", "")
        source, mask = self._inputs_of(
            details.get("image"), details.get("mask"), details.get("mask_recipe"), thumbs
        )
        return [
            view.job_id,
            view.status,
            str(details.get("feature") or ""),
            str(prompt),
            self._params_of(parameters),
            source,
            None if mask.kind == "none" else [mask.kind, mask.label],
            [_wire_output(self._output(relative)) for relative in view.outputs],
            view.error,
            view.attempts,
            view.credits,
            dict(view.retries) or None,
            view.updated,
            None,  # the product, set by the builder (``product_of``)
            [self._verdict_of(checks) for checks in view.checks] or None,
        ]

    def product_of(self, summary: dict[str, Any]) -> int:
        """The index of a product's summary in this chunk (a product spanning two chunks is
        in both: each chunk's header shows it whole)."""
        at = summary["at"]
        if at not in self._products_index:
            self.products.append(summary)
            self._products_index[at] = len(self.products) - 1
        return self._products_index[at]

    def _verdict_of(self, checks: ImageChecks) -> int:
        wire = wire_verdict(checks)
        key = orjson.dumps(wire)
        if key not in self._verdicts_index:
            self.verdicts.append(wire)
            self._verdicts_index[key] = len(self.verdicts) - 1
        return self._verdicts_index[key]

    def next_chunk(self) -> None:
        """A chunk's tables start empty (its file names each source once); the stat cache
        starts over too, so a catalog of a million distinct photos holds a chunk's worth."""
        self.sources, self.params, self.products, self.verdicts = [], [], [], []
        self._inputs.clear()
        self._params_index.clear()
        self._products_index.clear()
        self._verdicts_index.clear()
        self._stats.clear()

    def _inputs_of(
        self, image: object, mask: object, recipe_text: object, thumbs: bool
    ) -> tuple[int, Input]:
        """The index of the page's source entry, and the mask (a generated one as its recipe):
        once per distinct (image, mask, recipe)."""
        key = (image, mask, recipe_text, thumbs)
        if key not in self._inputs:
            source, mask_input = resolve_input(image, self.stat), resolve_input(mask, self.stat)
            recipe = None
            if isinstance(recipe_text, str):
                recipe = recipe_from_text(recipe_text, mask_input.path)
            self.sources.append(self._source(source, mask_input, thumbs, recipe))
            if recipe is not None:
                mask_input = Input("recipe", recipe_label(recipe, mask_input.label))
            self._inputs[key] = (len(self.sources) - 1, mask_input)
        return self._inputs[key]

    def _params_of(self, parameters: dict[str, Any]) -> int | None:
        if not parameters:
            return None
        key = orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)
        if key not in self._params_index:
            self.params.append(parameters)
            self._params_index[key] = len(self.params) - 1
        return self._params_index[key]

    def _source(
        self, source: Input, mask: Input, thumbs: bool, recipe: MaskRecipe | None = None
    ) -> dict[str, Any]:
        image: dict[str, Any] = {"label": source.label, "kind": source.kind}
        if source.kind != "file":
            image["note"] = source.kind  # remote inputs are not fetched: shown as placeholders
            return image
        if source.path is None or not source.present:
            image["note"] = "missing"
            return image
        if not thumbs:
            image["note"] = "pending"
            return image
        if recipe is not None and mask.kind == "file" and not mask.present:
            recipe = None  # a modified file mask that is gone: nothing to draw
        plain, masked = self.thumbs.request(source, mask if mask.present else None, recipe)
        image["thumb"] = masked or plain
        if masked:
            image["plain"] = plain  # the card shows the mask tinted; the plain source a click away
        image["full"] = self.link(source.path)
        return image

    def _output(self, relative: str) -> list[Any]:
        """[label, url, note]: the output file itself, which the browser scales lazily."""
        parts = safe_parts(relative)
        label = parts[-1] if parts else relative
        path = os.path.join(self.root, *parts) if parts else None
        if path is None or self.stat(path) is None:
            return [label, None, "missing"]
        return [label, url_of(parts or []), None]

    def finish(self) -> None:
        """After the thumbnails were made: failures become placeholders, and so do those left
        for a later build (over its budget)."""
        deferred = self.thumbs.deferred
        for image in self.sources:
            if deferred and image.get("thumb") in deferred:
                image.pop("thumb", None)
                image.pop("plain", None)
                image["note"] = "deferred"
                continue
            if image.get("thumb") and self.thumbs.url(image["thumb"]) is None:
                plain = image.pop("plain", None)
                if plain and self.thumbs.url(plain):  # only the mask could not be drawn
                    image["thumb"] = plain
                    continue
                image.pop("thumb")
                image["note"] = "unreadable"


def pending_view(job: ManifestJob, order: int) -> JobView:
    job_id, key, feature, image, mask, prompt = job[:6]
    details = {"feature": feature, "image": image, "mask": mask, "parameters": {"prompt": prompt}}
    details["group"] = manifest_group(job)
    return JobView(job_id, order, "pending", key, details)


def _wire_output(output: list[Any]) -> Any:
    """A present output as its URL alone (its label is the URL's last part), others whole."""
    label, url, note = output
    if url is not None and note is None and unquote(url.rpartition("/")[2]) == label:
        return url
    return output


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


def render_page(title: str, data: str | None) -> str:
    """The document: inline style, script and index (static), or linked ones (served)."""
    shell = static_text("report.html")
    if data is None:
        style = '<link rel="stylesheet" href="static/report.css">'
        script = '<script src="static/report.js"></script>'
        csp = "default-src 'self'; img-src 'self' data: blob:"
    else:
        style = f"<style>{static_text('report.css')}</style>"
        script = (
            f'<script type="application/json" id="report-data">{data}</script>'
            f"<script>{static_text('report.js')}</script>"
        )
        # No network at all: images and the chunks of jobs come from the folder (file: for
        # browsers that give every local file its own origin), styles and the script are
        # inline, nothing else may load.
        csp = (
            "default-src 'none'; img-src 'self' file: data: blob:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self' file:"
        )
    return (
        shell.replace("{{csp}}", csp)
        .replace("{{title}}", html.escape(title))
        .replace("{{style}}", style)
        .replace("{{script}}", script)
    )


def group_of(status: str) -> str:
    """The page's status filter a job falls under (``groupOf`` in ``static/report.js``): a
    partial job (paid images missing) needs a person, as a failed one does."""
    if status in UNFINISHED:
        return "unfinished"
    return "failed" if status == "partial" else status


# -- the page's order ----------------------------------------------------------------------------


def product_blocks(fold: ReportFold) -> Iterator[tuple[str | None, list[int]]]:
    """The ledger's jobs in the page's order, as blocks: (group, its job numbers) for a
    product, (None, [number]) for a job without a group.

    The order is ``fold.ranked()`` (failed, unfinished, succeeded; first seen first), with
    each product's jobs brought together where its first job comes: a product with a failed
    job is listed with the failed ones, all its angles together, in the ledger's order (the
    manifest's, for one run). So a product spans one chunk, or two at a boundary, never
    scattered pages. Memory: an int per job, and each product's name once.
    """
    total = len(fold.state.table)
    groups = array("I", bytes(4 * total))  # a job's product number; 0: no group
    names: dict[str, int] = {}
    for number in range(total):
        name = fold.group(number)
        if name:
            groups[number] = names.setdefault(name, len(names) + 1)
    if not names:
        for number in fold.ranked():
            yield None, [number]
        return
    members, starts = _members_by_product(groups, len(names))
    labels = [""] * (len(names) + 1)
    for name, product in names.items():
        labels[product] = name
    names.clear()
    listed = bytearray(len(labels))
    for number in fold.ranked():
        product = groups[number]
        if not product:
            yield None, [number]
        elif not listed[product]:
            listed[product] = 1
            yield labels[product], list(members[starts[product] : starts[product + 1]])


def _members_by_product(groups: array[int], products: int) -> tuple[array[int], array[int]]:
    """Every product's job numbers, in order, as one array and where each product starts in
    it (a counting sort: no list per product)."""
    starts = array("I", bytes(4 * (products + 2)))
    for product in groups:
        starts[product + 1] += 1
    for product in range(1, products + 2):
        starts[product] += starts[product - 1]
    members = array("I", bytes(4 * len(groups)))
    filled = array("I", starts)
    for number, product in enumerate(groups):
        members[filled[product]] = number
        filled[product] += 1
    return members, starts


# -- writing the chunks ---------------------------------------------------------------------------


class ChunkSink(Protocol):
    """Where a build's chunks go: files beside report.html, or the server's folder."""

    def write(self, number: int, chunk: dict[str, Any]) -> None: ...


class StaticChunks:
    """``OUT/report-data/<build>/<n>.js``: ``reportChunk(n, {...});``, loadable from file://."""

    def __init__(self, out_dir: Path, build: str) -> None:
        self.root = out_dir / REPORT_DATA_DIR
        self.folder = self.root / build
        self.folder.mkdir(parents=True, exist_ok=True)

    def url(self) -> str:
        return f"{REPORT_DATA_DIR}/{self.folder.name}/{{n}}.js"

    def write(self, number: int, chunk: dict[str, Any]) -> None:
        text = f"reportChunk({number},{embed_json(chunk)});\n"
        (self.folder / f"{number}.js").write_text(text, encoding="utf-8")

    def remove_older(self) -> None:
        """Earlier builds' chunks: the page that pointed at them is replaced."""
        for entry in self.root.iterdir():
            if entry.name != self.folder.name and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class FolderChunks:
    """``<folder>/<n>.json``: the served page's chunks, read back per request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, number: int, chunk: dict[str, Any]) -> None:
        (self.folder / f"{number}.json").write_bytes(orjson.dumps(chunk))


class MemoryChunks:
    """Chunks kept in a list (``build_payload``: tests and small runs)."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, Any]] = []

    def write(self, number: int, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)


@dataclass
class ChunkMeta:
    rows: int = 0
    # "status group|feature|check token" -> jobs: what the page's filters count unloaded
    counts: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {"n": self.rows, "counts": dict(self.counts)}


class JobLocator:
    """Where each job is on the page, and what the decision rule needs of it, kept compactly
    (the server answers every reload's decisions from it): the ledger's fold, a position and
    a check state (``check_state``) per ledger job, and the pending jobs' ids, positions and
    features."""

    def __init__(self, fold: ReportFold) -> None:
        self.fold = fold
        self.positions = array("I", [0]) * len(fold.state.table)
        self.check_states = bytearray(len(fold.state.table))
        self.pending = ByteIndex()
        self.pending_positions = array("I")
        self.pending_features: list[str] = []
        self._features: dict[str, str] = {}

    def place(self, number: int, position: int, checks: int = 0) -> None:
        self.positions[number] = position
        self.check_states[number] = checks

    def add_pending(self, job_id: str, feature: str, position: int) -> None:
        self.pending.add(as_bytes(job_id))
        self.pending_positions.append(position)
        self.pending_features.append(self._features.setdefault(feature, feature))

    def locate(self, job_id: str) -> tuple[int, str | None, str, str, str, str] | None:
        """(position, key, updated, status group, feature, check token) of a job on the page,
        or None."""
        table = self.fold.state.table
        number = table.find(job_id)
        if number >= 0:
            job = JobRef(table, number)
            details = self.fold.details(number)
            feature = details.feature if details is not None else ""
            group = group_of(job.status.value)
            token = check_token(self.check_states[number])
            return self.positions[number], job.key or None, job.updated, group, feature, token
        pending = self.pending.find(as_bytes(job_id))
        if pending < 0:
            return None
        position, feature = self.pending_positions[pending], self.pending_features[pending]
        return position, None, "", PENDING, feature, ""

    def status_of(self, job_id: str) -> tuple[str, int] | None:
        """(status, images delivered) of a job of the ledger; None for others."""
        table = self.fold.state.table
        number = table.find(job_id)
        if number < 0:
            return None
        job = JobRef(table, number)
        return job.status.value, len(job.outputs)

    def key_of(self, job_id: str) -> tuple[bool, str | None]:
        """(known, current content key) of a job id: what a decision is recorded under."""
        table = self.fold.state.table
        number = table.find(job_id)
        if number >= 0:
            return True, table.key(number) or None
        return self.pending.find(as_bytes(job_id)) >= 0, None


@dataclass
class ReportIndex:
    """What a build leaves: the page's index (without decisions) and where every job is."""

    data: dict[str, Any]
    locator: JobLocator

    def with_decisions(self, decisions: dict[str, Decision]) -> dict[str, Any]:
        """The index with the decisions that stand now (``decisions.standing``): each with the
        chunk, status group, feature and check token of its job, so the page filters on them
        unloaded, and the pick (an image index, or None)."""
        standing_now: dict[str, list[Any]] = {}
        counts = {"approved": 0, "rejected": 0}
        for job_id, decision in decisions.items():
            place = self.locator.locate(job_id)
            if place is None:
                continue
            position, key, updated, group, feature, checks = place
            current = standing(decision, key, updated)
            if current is None:
                continue
            chunk = position // CHUNK_ROWS
            entry = [current.decision, current.note, current.ts, chunk, group, feature, checks]
            entry.append(current.pick)
            standing_now[job_id] = entry
            counts[current.decision] += 1
        header = {**self.data["header"], "decisions": counts}
        return {**self.data, "header": header, "decisions": standing_now}


class ReportBuilder:
    """One pass over the fold in the page's order, writing chunks as they fill."""

    def __init__(
        self,
        out_dir: Path,
        sink: ChunkSink,
        make_thumbs: bool = True,
        thumbnail_budget: int | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.sink = sink
        self.make_thumbs = make_thumbs
        self.thumbs = Thumbnailer(out_dir, create=make_thumbs, budget=thumbnail_budget)
        self.data = PageData(out_dir, self.thumbs)
        self.chunks: list[ChunkMeta] = []
        self._rows: list[list[Any]] = []
        self._position = 0

    def build(
        self, manifest_jobs: Iterable[ManifestJob] | None = None, live: bool = False
    ) -> ReportIndex:
        fold = read_report_fold(self.out_dir / LEDGER_NAME)
        try:
            header = header_data(self.out_dir, fold, read_summary(self.out_dir))
            locator = JobLocator(fold)
            for name, numbers in product_blocks(fold):
                views = [fold.view(number, with_checks=True) for number in numbers]
                product = None if name is None else product_summary(name, self._position, views)
                for number, view in zip(numbers, views, strict=True):
                    checks = check_state(view.checks)
                    locator.place(number, self._position, checks)
                    self._add(self.data.row(view), product, checks)
            pending = self._add_pending(manifest_jobs or (), locator)
            self._flush()
        finally:
            fold.close()
        if self.make_thumbs:
            self.thumbs.prune()
        header["pending"] = pending
        features = sorted({key.split("|")[1] for c in self.chunks for key in c.counts} - {""})
        data = {
            "header": header,
            "fields": FIELDS,
            "chunks": [chunk.as_json() for chunk in self.chunks],
            "chunk_rows": CHUNK_ROWS,
            "features": features,
            "channels": [channel.value for channel in CHANNELS],
            "thumbs": THUMBS_DIR + "/",
            "live": live,
            "run_key": f"{header['title']}|{header.get('started_at') or ''}",
        }
        return ReportIndex(data, locator)

    def _add_pending(self, manifest_jobs: Iterable[ManifestJob], locator: JobLocator) -> int:
        """The manifest's jobs the ledger does not know, in the manifest's order; a run of
        them with one group is shown as one product (they are not moved: the manifest is
        streamed, and its rows for a product are usually together)."""
        table = locator.fold.state.table
        block: list[ManifestJob] = []
        pending = 0
        for job in manifest_jobs:
            if table.find(job[0]) >= 0:
                continue  # in the ledger: listed above
            group = manifest_group(job)
            if block and (group is None or group != manifest_group(block[0])):
                self._add_pending_block(block, locator)
                block = []
            block.append(job)
            pending += 1
        if block:
            self._add_pending_block(block, locator)
        return pending

    def _add_pending_block(self, block: list[ManifestJob], locator: JobLocator) -> None:
        start = self._position
        views = [pending_view(job, start + offset) for offset, job in enumerate(block)]
        name = manifest_group(block[0])
        product = None if name is None else product_summary(name, start, views)
        for job, view in zip(block, views, strict=True):
            locator.add_pending(job[0], job[2], self._position)
            self._add(self.data.row(view, thumbs=False), product, 0)

    def _add(self, row: list[Any], product: dict[str, Any] | None, checks: int) -> None:
        if not self._rows:
            self.chunks.append(ChunkMeta())
        meta = self.chunks[-1]
        meta.rows += 1
        meta.counts[f"{group_of(row[1])}|{row[2]}|{check_token(checks)}"] += 1
        if product is not None:
            row[PRODUCT_COLUMN] = self.data.product_of(product)
        self._rows.append(row)
        self._position += 1
        if len(self._rows) == CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self.make_thumbs:
            self.thumbs.run()  # this chunk's sources: failures become placeholders below
            self.data.finish()
            self.thumbs.by_name.clear()
        rows, tables = _tabled(self._rows)
        chunk = {"rows": rows, "tables": tables, "sources": self.data.sources}
        chunk["params"] = self.data.params
        chunk["products"] = self.data.products
        chunk["verdicts"] = self.data.verdicts
        self.sink.write(len(self.chunks) - 1, chunk)
        self._rows = []
        self.data.next_chunk()


def _tabled(rows: list[list[Any]]) -> tuple[list[list[Any]], dict[str, list[Any]]]:
    """Rows with their status, feature and mask as indexes into the chunk's ``tables``."""
    column = {name: i for i, name in enumerate(FIELDS)}
    tables: dict[str, list[Any]] = {name: [] for name in TABLED}
    seen: dict[str, dict[Any, int]] = {name: {} for name in TABLED}
    places = [(column[name], tables[name], seen[name]) for name in TABLED]
    for row in rows:
        for at, values, index in places:
            value = row[at]
            if value is None:
                continue
            marker = tuple(value) if isinstance(value, list) else value
            if marker not in index:
                index[marker] = len(values)
                values.append(value)
            row[at] = index[marker]
    return rows, tables


# -- the static page ------------------------------------------------------------------------------


def write_report(
    out_dir: Path,
    manifest_jobs: Iterable[ManifestJob] | None = None,
    thumbnail_budget: int | None = None,
) -> Path:
    """Write ``OUT/report.html`` and its chunks (the page last: temp file, then rename); the
    chunks of earlier builds are removed once the new page is in place. ``thumbnail_budget``:
    at most this many thumbnails are made (the others show as deferred)."""
    chunks = StaticChunks(out_dir, secrets.token_hex(4))
    try:
        builder = ReportBuilder(out_dir, chunks, thumbnail_budget=thumbnail_budget)
        index = builder.build(manifest_jobs)
        data = {**index.with_decisions(read_decisions(out_dir)), "chunk_url": chunks.url()}
        title = f"{data['header']['title']} — run report"
        page = render_page(title, embed_json(data))
        path = out_dir / REPORT_NAME
        atomic_write(path, page.encode("utf-8"))
    except BaseException:
        chunks.discard()
        raise
    chunks.remove_older()
    return path


def build_payload(
    out_dir: Path,
    manifest_jobs: Iterable[ManifestJob] | None = None,
    make_thumbs: bool = True,
) -> tuple[dict[str, Any], Thumbnailer]:
    """The whole page's data as one payload (the index with every chunk's rows joined, their
    tables and lists renumbered): for tests and small runs; the page itself is paged."""
    sink = MemoryChunks()
    builder = ReportBuilder(out_dir, sink, make_thumbs)
    index = builder.build(manifest_jobs)
    payload = index.with_decisions(read_decisions(out_dir))
    joined: dict[str, Any] = {"jobs": [], "sources": [], "params": []}
    joined |= {"products": [], "verdicts": []}
    joined["tables"] = {name: [] for name in TABLED}
    column = {name: i for i, name in enumerate(FIELDS)}
    for chunk in sink.chunks:
        shift = {"source": len(joined["sources"]), "params": len(joined["params"])}
        shift["product"] = len(joined["products"])
        verdicts = len(joined["verdicts"])
        for row in chunk["rows"]:
            row = list(row)
            for name, values in chunk["tables"].items():
                if row[column[name]] is not None:
                    row[column[name]] = values[row[column[name]]]
            for name, offset in shift.items():
                if row[column[name]] is not None:
                    row[column[name]] += offset
            if row[column["checks"]] is not None:
                row[column["checks"]] = [index + verdicts for index in row[column["checks"]]]
            joined["jobs"].append(row)
        for name in ("sources", "params", "products", "verdicts"):
            joined[name] += chunk[name]
    joined["jobs"], joined["tables"] = _tabled(joined["jobs"])
    return {**payload, **joined}, builder.thumbs
