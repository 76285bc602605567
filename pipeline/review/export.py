"""``pipeline export OUT DEST``: delivered images to a folder or object store, in the shop's names.

Every target is planned first (names from the template, collisions checked) and only then written,
so a bad template copies nothing. A target already at DEST with the same bytes (size, then
sha256) is left alone: a second export copies nothing. Copies are byte for byte, so the XMP
provenance the store wrote stays; a converted image gets it added again
(``images.provenance``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from PIL import Image

from pipeline.errors import ExportError
from pipeline.images import provenance
from pipeline.layout import EXPORT_CSV_NAME, LEDGER_NAME
from pipeline.ledger.decisions import read_decisions, standing
from pipeline.review.delivered import DeliveredImages, copy_image, read_image, same_image
from pipeline.review.page import safe_parts
from pipeline.review.view import JobView, read_ledger_view

DEFAULT_NAME = "{id}_{index}.{ext}"
FORMATS = {"jpeg": ("JPEG", "jpg"), "png": ("PNG", "png"), "webp": ("WEBP", "webp")}
CREATOR_TOOL = "onemin-pipeline export"


@dataclass(frozen=True, slots=True)
class Target:
    job_id: str
    index: int
    source: str  # the delivered file: its absolute path in OUT, or its URL in a bucket OUT
    name: str  # relative to DEST, "/"-separated
    prompt: str
    input: str  # the job's source image reference


@dataclass
class ExportResult:
    copied: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # notes: rejected, missing files, ...

    def line(self) -> str:
        return f"{self.copied} copied, {self.unchanged} unchanged"


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ExportError(f"--name {template!r} is not a valid template: {exc}") from None


def job_fields(view: JobView, index: int, ext: str) -> dict[str, Any]:
    """What a name template may use: the manifest row's fields, the job's, then id/index/ext."""
    details = view.job
    row = _mapping(details.get("row"))
    parameters = _mapping(details.get("parameters"))
    image = str(details.get("image") or "")
    fields: dict[str, Any] = {**row, **parameters}
    fields.update(
        id=view.job_id,
        index=index,
        ext=ext,
        feature=str(details.get("feature") or ""),
        prompt=str(parameters.get("prompt") or ""),
        stem=PurePosixPath(image.replace("\\", "/")).stem,
    )
    return fields


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def render_name(template: str, fields: dict[str, Any], job_id: str) -> str:
    try:
        name = template.format_map(fields)
    except KeyError as exc:
        known = ", ".join(sorted(str(k) for k in fields))
        raise ExportError(
            f"--name uses {{{exc.args[0]}}}, which job {job_id!r} does not have (known: {known})"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ExportError(f"--name {template!r} cannot be filled for {job_id!r}: {exc}") from None
    parts = safe_parts(name.replace("\\", "/"))
    if parts is None:
        raise ExportError(f"--name gives {name!r} for job {job_id!r}: not a path inside DEST")
    return "/".join(parts)


def plan_export(
    out_dir: Path,
    template: str = DEFAULT_NAME,
    approved_only: bool = False,
    fmt: str | None = None,
) -> tuple[list[Target], list[str]]:
    """Every file to deliver and its name at DEST; notes on what was left out."""
    ledger = out_dir / LEDGER_NAME
    if not ledger.is_file():
        raise ExportError(f"no ledger in {out_dir}: is this a run's output folder?")
    template_fields(template)
    view = read_ledger_view(ledger)
    decisions = read_decisions(out_dir)
    targets: list[Target] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    images = DeliveredImages(out_dir)
    for job in view.jobs.values():
        if job.status != "succeeded":
            continue
        current = standing(decisions.get(job.job_id), job.key, job.updated)
        if current is not None and current.decision == "rejected":
            notes.append(f"{job.job_id}: rejected, not exported")
            continue
        if approved_only and (current is None or current.decision != "approved"):
            continue
        for index, relative in enumerate(job.outputs):
            path = images.locate(relative)
            if path is None:
                notes.append(f"{job.job_id}: output {relative} is missing")
                continue
            ext = FORMATS[fmt][1] if fmt else os.path.splitext(path)[1].lstrip(".").lower()
            name = render_name(template, job_fields(job, index, ext), job.job_id)
            if name in seen:
                raise ExportError(
                    f"--name {template!r} gives {name!r} to both {seen[name]} and "
                    f"{job.job_id}#{index}: add {{id}} or {{index}} to the template"
                )
            seen[name] = f"{job.job_id}#{index}"
            prompt = str((job.job.get("parameters") or {}).get("prompt") or "")
            targets.append(
                Target(job.job_id, index, path, name, prompt, str(job.job.get("image") or ""))
            )
    return targets, notes


def convert(data: bytes, fmt: str, quality: int | None) -> bytes:
    """The image re-encoded as ``fmt``; XMP provenance added again when the module is here."""
    pil_format = FORMATS[fmt][0]
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image: Image.Image = opened
        if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")  # JPEG has no alpha
        buffer = io.BytesIO()
        options: dict[str, Any] = {}
        if quality is not None and pil_format != "PNG":
            options["quality"] = quality
        image.save(buffer, pil_format, **options)
    return add_provenance(buffer.getvalue())


def add_provenance(data: bytes) -> bytes:
    """A converted image gets the XMP provenance the store wrote into the original again."""
    return provenance.add_provenance(data, creator_tool=CREATOR_TOOL)


def export(
    out_dir: Path,
    dest: str,
    template: str = DEFAULT_NAME,
    approved_only: bool = False,
    fmt: str | None = None,
    quality: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Deliver every planned target to DEST (a path or an fsspec URL) and write export.csv."""
    targets, notes = plan_export(out_dir, template, approved_only, fmt)
    try:
        fs, root = fsspec.core.url_to_fs(dest)
        fs.makedirs(root, exist_ok=True)
    except (OSError, ValueError, ImportError) as exc:
        raise ExportError(f"cannot write to {dest}: {exc}") from None
    result = ExportResult(skipped=notes)
    for target in targets:
        data = None  # a copy: streamed from OUT (a folder or a bucket), never held whole
        if fmt and (FORMATS[fmt][1] != _ext(target.source) or quality is not None):
            data = convert(read_image(target.source), fmt, quality)
        path = f"{root.rstrip('/')}/{target.name}"
        try:
            same = same_image(fs, path, target.source) if data is None else _same(fs, path, data)
            if same:
                result.unchanged += 1
                continue
            parent = path.rsplit("/", 1)[0]
            fs.makedirs(parent, exist_ok=True)
            if data is not None:
                fs.pipe_file(path, data)
            else:
                copy_image(target.source, fs, path)
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {exc}") from None
        result.copied += 1
        if progress is not None:
            progress(target.name)
    _write_csv(fs, f"{root.rstrip('/')}/{EXPORT_CSV_NAME}", targets)
    return result


def _ext(path: str) -> str:
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    return "jpg" if ext == "jpeg" else ext


def _same(fs: Any, path: str, data: bytes) -> bool:
    """True when DEST already holds exactly these bytes (size first: cheap on object stores)."""
    try:
        info = fs.info(path)
    except (FileNotFoundError, OSError):
        return False
    if info.get("size") != len(data):
        return False
    existing = fs.cat_file(path)
    return hashlib.sha256(existing).digest() == hashlib.sha256(data).digest()


def _write_csv(fs: Any, path: str, targets: Iterable[Target]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "index", "file", "source", "prompt"])
    for target in targets:
        writer.writerow([target.job_id, target.index, target.name, target.input, target.prompt])
    data = buffer.getvalue().encode("utf-8")
    try:
        if not _same(fs, path, data):
            fs.pipe_file(path, data)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}") from None
