"""The review page's data (one JSON payload: header + jobs) and the static ``OUT/report.html``.

The page's HTML, CSS and script are package data in ``static/``. The static report inlines them
with the payload, so it is one file that works from ``file://`` and can be shared; the served page
(``server.py``) links them and fetches the same payload. Jobs are compact rows (``FIELDS``) so a
100,000-job run stays small; the script turns them into objects and renders the header too.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson

from pipeline.durability import atomic_write
from pipeline.images.masks import MaskRecipe
from pipeline.layout import LEDGER_NAME, REPORT_NAME, THUMBS_DIR
from pipeline.ledger.decisions import Decision, read_decisions, standing
from pipeline.models import Job
from pipeline.review.mask_view import recipe_from_text, recipe_label
from pipeline.review.thumbs import Input, Thumbnailer, resolve_input, stat_file
from pipeline.review.view import (
    PENDING_RANK,
    STATUS_RANK,
    JobView,
    header_data,
    read_ledger_view,
    read_summary,
)

FIELDS = (
    "id", "status", "feature", "prompt", "params", "source", "mask", "outputs", "error",
    "attempts", "credits", "retries", "updated", "key", "decision",
)  # fmt: skip
# (job_id, key, feature, image, mask, prompt): a manifest job, for pending ones on the page.
ManifestJob = tuple[str, str | None, str, str | None, str | None, str]


def manifest_rows(items: Iterable[object]) -> Iterator[ManifestJob]:
    """The page's row for each job of a manifest stream (problems in it are skipped). The
    content key is left out: it needs the inputs hashed, and the page matches jobs by id."""
    for job in items:
        if isinstance(job, Job):
            mask = str(job.mask) if job.mask else None
            yield (job.id, None, job.feature.value, str(job.image), mask, job.prompt)


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

    def __init__(self, out_dir: Path, thumbs: Thumbnailer) -> None:
        self.root = os.path.abspath(out_dir)
        self.thumbs = thumbs
        # A catalog often shares one mask or backdrop between many jobs: stat each file once,
        # and describe each distinct (image, mask) pair once.
        self._stats: dict[str, os.stat_result | None] = {}
        # Rows refer to these tables by index: a 100,000-job payload names each once.
        self.sources: list[dict[str, Any]] = []
        self.params: list[dict[str, Any]] = []
        self._inputs: dict[tuple[object, object, object, bool], tuple[int, Input]] = {}
        self._params_index: dict[bytes, int] = {}

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

    def row(self, view: JobView, decision: Decision | None, thumbs: bool = True) -> list[Any]:
        details = view.job
        parameters = details.get("parameters")
        parameters = dict(parameters) if isinstance(parameters, dict) else {}
        prompt = parameters.pop("prompt", "")
        source, mask = self._inputs_of(
            details.get("image"), details.get("mask"), details.get("mask_recipe"), thumbs
        )
        current = standing(decision, view.key, view.updated)
        return [
            view.job_id,
            view.status,
            str(details.get("feature") or ""),
            str(prompt),
            self._params_of(parameters),
            source,
            None if mask.kind == "none" else [mask.kind, mask.label],
            [self._output(relative) for relative in view.outputs],
            view.error,
            view.attempts,
            view.credits,
            dict(view.retries) or None,
            view.updated,
            view.key,
            [current.decision, current.note, current.ts] if current else None,
        ]

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
        """After the thumbnails were made: failures become placeholders."""
        for image in self.sources:
            if image.get("thumb") and self.thumbs.url(image["thumb"]) is None:
                plain = image.pop("plain", None)
                if plain and self.thumbs.url(plain):  # only the mask could not be drawn
                    image["thumb"] = plain
                    continue
                image.pop("thumb")
                image["note"] = "unreadable"


def pending_view(job: ManifestJob, order: int) -> JobView:
    job_id, key, feature, image, mask, prompt = job
    details = {"feature": feature, "image": image, "mask": mask, "parameters": {"prompt": prompt}}
    return JobView(job_id, order, "pending", key, details)


def build_payload(
    out_dir: Path,
    manifest_jobs: Iterable[ManifestJob] | None = None,
    make_thumbs: bool = True,
    live: bool = False,
) -> tuple[dict[str, Any], Thumbnailer]:
    """The page's one JSON payload: ``{header, fields, jobs, sources, params, live}``.

    Thumbnails are named, and made when ``make_thumbs`` (the server makes them on request)."""
    view = read_ledger_view(out_dir / LEDGER_NAME)
    header = header_data(out_dir, view, read_summary(out_dir))
    decisions = read_decisions(out_dir)
    thumbs = Thumbnailer(out_dir, create=make_thumbs)
    data = PageData(out_dir, thumbs)
    ranked: list[tuple[int, int, list[Any]]] = []
    views, listed = view.jobs, set()
    for job_id in list(views):
        job = views.pop(job_id)  # freed as its row is made: a big run's report holds one form
        listed.add(job_id)
        row = data.row(job, decisions.get(job.job_id))
        ranked.append((STATUS_RANK.get(job.status, 1), job.order, row))
    order = len(listed)
    for manifest_job in manifest_jobs or ():
        if manifest_job[0] in listed:
            continue
        row = data.row(pending_view(manifest_job, order), decisions.get(manifest_job[0]), False)
        ranked.append((PENDING_RANK, order, row))
        order += 1
    ranked.sort(key=lambda item: (item[0], item[1]))
    rows = [row for _, _, row in ranked]
    if make_thumbs:
        thumbs.run()
        thumbs.prune()
        data.finish()
    header["pending"] = sum(1 for row in rows if row[1] == "pending")
    payload = {
        "header": header,
        "fields": FIELDS,
        "jobs": rows,
        "sources": data.sources,  # row[5] indexes this
        "params": data.params,  # row[4] indexes this (or is null)
        "thumbs": THUMBS_DIR + "/",
        "live": live,
        "run_key": f"{header['title']}|{header.get('started_at') or ''}",
    }
    apply_decisions(payload, decisions)
    return payload, thumbs


def apply_decisions(payload: dict[str, Any], decisions: dict[str, Decision]) -> None:
    """Put each job's standing decision (``decisions.standing``) into its row and the header."""
    counts = {"approved": 0, "rejected": 0}
    for row in payload["jobs"]:
        decision = standing(decisions.get(row[0]), row[13], row[12] or "")
        if decision is not None:
            row[14] = [decision.decision, decision.note, decision.ts]
            counts[decision.decision] += 1
        else:
            row[14] = None
    payload["header"]["decisions"] = counts


# Columns whose few distinct values are sent once, in ``tables``, rows holding their index.
TABLED = ("status", "feature", "mask")
# Not sent: the server records a decision under the job's current key itself.
UNSENT = ("key",)


def wire_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as the browser gets it: repeated values (status, feature, mask) named once
    in ``tables``, an output that is present as its URL alone (the label is its last part),
    no content keys. Loading and parsing the JSON is most of a large page's opening time: a
    100,000-job page is about half the bytes this way. ``payload`` itself is left as it is.
    """
    fields = list(payload["fields"])
    column = {name: i for i, name in enumerate(fields)}
    kept = [i for i, name in enumerate(fields) if name not in UNSENT]
    tables: dict[str, list[Any]] = {name: [] for name in TABLED}
    seen: dict[str, dict[Any, int]] = {name: {} for name in TABLED}
    tabled = [(column[name], tables[name], seen[name]) for name in TABLED]
    outputs_at = column["outputs"]
    rows = []
    for row in payload["jobs"]:
        row = list(row)
        for at, values, index in tabled:
            value = row[at]
            if value is None:
                continue
            marker = tuple(value) if isinstance(value, list) else value
            if marker not in index:
                index[marker] = len(values)
                values.append(value)
            row[at] = index[marker]
        row[outputs_at] = [_wire_output(output) for output in row[outputs_at]]
        rows.append([row[i] for i in kept])
    return {
        **payload,
        "fields": [fields[i] for i in kept],
        "jobs": rows,
        "tables": tables,
    }


def _wire_output(output: list[Any]) -> Any:
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
    """The document: inline style, script and data (static), or linked ones (served)."""
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
        # No network at all: images come from the folder (file: for browsers that give every
        # local file its own origin), styles and script are inline, nothing else may load.
        csp = (
            "default-src 'none'; img-src 'self' file: data: blob:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        )
    return (
        shell.replace("{{csp}}", csp)
        .replace("{{title}}", html.escape(title))
        .replace("{{style}}", style)
        .replace("{{script}}", script)
    )


def build_report(out_dir: Path, manifest_jobs: Iterable[ManifestJob] | None = None) -> str:
    """The static page's HTML (thumbnails made on the way), without writing it."""
    payload, _ = build_payload(out_dir, manifest_jobs)
    title = f"{payload['header']['title']} — run report"
    return render_page(title, embed_json(wire_payload(payload)))


def write_report(out_dir: Path, manifest_jobs: Iterable[ManifestJob] | None = None) -> Path:
    """Write ``OUT/report.html`` (temp file, then rename) and return its path."""
    page = build_report(out_dir, manifest_jobs)
    path = out_dir / REPORT_NAME
    atomic_write(path, page.encode("utf-8"))
    return path
