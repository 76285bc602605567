"""``pipeline export OUT DEST``: delivered images to a folder or object store, in the shop's names.

Every target is planned first (names from the template, collisions checked) and only then written,
so a bad template copies nothing. A target already at DEST with the same bytes (size, then
sha256) is left alone: a second export copies nothing. Copies are byte for byte, so the XMP
provenance the store wrote stays; a converted image gets it added again
(``images.provenance``).

Which images of a job: a job a reviewer picked a variant of delivers the pick alone; with a
channel profile (``review.channels``) a job is one image of its product, so an unpicked job
delivers its first image; ``all_variants`` delivers every image (the job's own first). Each
delivered image is described in ``export.csv`` with its marketplace verdicts: the ones its
ledger line kept when the bytes are the stored file's, else judged here (a line older than the
checks, a converted copy).
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
from typing import Any, Protocol

import fsspec
from PIL import Image

from pipeline.errors import DestinationError, ExportError, ImageCheckError
from pipeline.images import provenance
from pipeline.images.checks import (
    RULES_VERSION,
    Channel,
    ImageChecks,
    checks_from_facts,
    marketplace_checks,
)
from pipeline.layout import EXPORT_CSV_NAME, LEDGER_NAME
from pipeline.ledger.decisions import APPROVED, REJECTED, Decision, read_decisions, standing
from pipeline.manifest.schema import PARAMETERS
from pipeline.review.delivered import DeliveredImages, copy_image, read_image, same_image
from pipeline.review.page import safe_parts
from pipeline.review.rows import ManifestRows, read_rows
from pipeline.review.view import JobView, read_ledger_view

DEFAULT_NAME = "{id}_{index}.{ext}"
FORMATS = {"jpeg": ("JPEG", "jpg"), "png": ("PNG", "png"), "webp": ("WEBP", "webp")}
CREATOR_TOOL = "onemin-pipeline export"
CSV_COLUMNS = ("id", "index", "file", "source", "prompt", "group", *Channel)
PASS = "pass"  # a channel's column in export.csv when the image passes its checks
# What a --name template may use without reading the manifest's rows.
JOB_FIELDS = frozenset({"id", "index", "ext", "feature", "prompt", "stem", *PARAMETERS})


@dataclass(frozen=True, slots=True)
class Target:
    job_id: str
    index: int
    source: str  # absolute path of the delivered file in OUT
    name: str  # relative to DEST, "/"-separated
    prompt: str
    input: str  # the job's source image reference
    group: str = ""  # the product: the job's group, or its id
    main: bool = True  # the job's own image (its pick, else its first); False: another variant
    checks: ImageChecks | None = None  # what its ledger line kept of the stored file, if any
    order: int = 0  # the job's place in the ledger


@dataclass
class ExportResult:
    copied: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # notes: rejected, missing files, ...
    channel_file: str | None = None  # with a profile: the channel file's name in DEST
    placed: int = 0  # images in the channel file
    products: int = 0  # products (groups) in the channel file
    fitted: int = 0  # images re-framed on white by --fit
    left_out: list[str] = field(default_factory=list)  # images and products kept out, and why
    products_left_out: int = 0  # products with no image in the channel file

    def line(self) -> str:
        copied = f"{self.copied} copied, {self.unchanged} unchanged"
        if self.channel_file is None:
            return copied
        fitted = f", {self.fitted} fitted" if self.fitted else ""
        left = ""
        if self.left_out:
            images = _count(len(self.left_out) - self.products_left_out, "image")
            left = f"; left out: {images}, {_count(self.products_left_out, 'product')}"
        placed = f"{_count(self.placed, 'image')} of {_count(self.products, 'product')}"
        return f"{copied}; {self.channel_file}: {placed}{fitted}{left}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@dataclass
class ExportPlan:
    """What an export delivers, and what it does not and why."""

    targets: list[Target]
    notes: list[str]
    members: dict[str, list[str]] = field(default_factory=dict)  # group -> its job ids
    excluded: dict[str, str] = field(default_factory=dict)  # job id -> why it delivers nothing
    rows: ManifestRows = field(default_factory=ManifestRows)


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ExportError(f"--name {template!r} is not a valid template: {exc}") from None


def job_fields(
    view: JobView, index: int, ext: str, row: dict[str, str] | None = None
) -> dict[str, Any]:
    """What a name template may use: the manifest row's fields, the job's, then id/index/ext."""
    details = view.job
    row = row if row is not None else _mapping(details.get("row"))
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
    plan = plan_delivery(out_dir, template, approved_only, fmt)
    return plan.targets, plan.notes


def plan_delivery(
    out_dir: Path,
    template: str = DEFAULT_NAME,
    approved_only: bool = False,
    fmt: str | None = None,
    *,
    one_image: bool = False,
    all_variants: bool = False,
    row_columns: frozenset[str] = frozenset(),
    manifest: Path | None = None,
) -> ExportPlan:
    """``plan_export``, with what a channel file needs: the groups and why jobs are left out.

    ``one_image``: a job delivers one image (its pick, else its first) unless ``all_variants``.
    ``row_columns``: the manifest row's cells to read for the delivered jobs (templates over
    them, the channel files' position and alt text).
    """
    ledger = out_dir / LEDGER_NAME
    if not ledger.is_file():
        raise ExportError(f"no ledger in {out_dir}: is this a run's output folder?")
    named = frozenset(template_fields(template)) - JOB_FIELDS
    view = read_ledger_view(ledger)
    decisions = read_decisions(out_dir)
    plan = ExportPlan([], [])
    delivering: list[tuple[JobView, list[int]]] = []
    images = DeliveredImages(out_dir)  # a folder's files, or a bucket run's objects
    for job in view.jobs.values():
        group = str(job.job.get("group") or job.job_id)
        plan.members.setdefault(group, []).append(job.job_id)
        current = standing(decisions.get(job.job_id), job.key, job.updated)
        why = _left_out(job, current, approved_only)
        if why is not None:
            plan.excluded[job.job_id] = why
            if why == REJECTED:
                plan.notes.append(f"{job.job_id}: rejected, not exported")
            continue
        pick = current.pick if current is not None else None
        indexes = chosen_images(len(job.outputs), pick, one_image, all_variants)
        plan.notes += _variant_notes(job, pick, one_image and not all_variants)
        delivering.append((job, indexes))
    if named or row_columns:
        wanted = {job.job_id for job, _ in delivering}
        plan.rows = read_rows(out_dir, manifest, named | row_columns, wanted)
        if named and plan.rows.note:
            raise ExportError(
                f"--name uses {{{min(named)}}}: not a job field, and the manifest's rows "
                f"cannot be read ({plan.rows.note})"
            )
    seen: dict[str, str] = {}
    for job, indexes in delivering:
        for index in indexes:
            target = _target(images, job, index, indexes[0], template, fmt, plan)
            if target is None:
                continue
            if target.name in seen:
                raise ExportError(
                    f"--name {template!r} gives {target.name!r} to both {seen[target.name]} "
                    f"and {job.job_id}#{index}: add {{id}} or {{index}} to the template"
                )
            seen[target.name] = f"{job.job_id}#{index}"
            plan.targets.append(target)
    return plan


def _left_out(job: JobView, current: Decision | None, approved_only: bool) -> str | None:
    """Why a job delivers nothing (None: it delivers)."""
    if job.status != "succeeded":
        return "failed" if job.status == "failed" else "not done"
    if current is not None and current.decision == REJECTED:
        return REJECTED
    if approved_only and (current is None or current.decision != APPROVED):
        return "not approved"
    return None


def _variant_notes(job: JobView, pick: int | None, one_image: bool) -> list[str]:
    count = len(job.outputs)
    if pick is not None and pick >= count:
        return [f"{job.job_id}: picked image {pick} is not among its outputs"]
    if pick is None and one_image and count > 1:
        return [
            f"{job.job_id}: {count} images and no pick: its first is delivered "
            "(pipeline review --pick ID:INDEX chooses; --all-variants delivers them all)"
        ]
    return []


def chosen_images(count: int, pick: int | None, one_image: bool, all_variants: bool) -> list[int]:
    """The indexes a job delivers, its own image first: the pick (when it names one of its
    images), else its first. The others only with ``all_variants``, or when nothing asks for
    one image (an unpicked job in a plain export delivers every image)."""
    if count == 0:
        return []
    main = pick if pick is not None and pick < count else 0
    if all_variants or (pick is None and not one_image):
        return [main, *(index for index in range(count) if index != main)]
    return [main]


def _target(
    images: DeliveredImages,
    job: JobView,
    index: int,
    main: int,
    template: str,
    fmt: str | None,
    plan: ExportPlan,
) -> Target | None:
    relative = job.outputs[index]
    path = images.locate(relative)
    if path is None:
        plan.notes.append(f"{job.job_id}: output {relative} is missing")
        plan.excluded.setdefault(job.job_id, "output missing")
        return None
    ext = FORMATS[fmt][1] if fmt else os.path.splitext(path)[1].lstrip(".").lower()
    name = render_name(
        template, job_fields(job, index, ext, dict(plan.rows.row(job.job_id))), job.job_id
    )
    prompt = str((job.job.get("parameters") or {}).get("prompt") or "")
    checks = job.checks[index] if len(job.checks) == len(job.outputs) else None
    return Target(
        job.job_id,
        index,
        path,
        name,
        prompt,
        str(job.job.get("image") or ""),
        group=str(job.job.get("group") or job.job_id),
        main=index == main,
        checks=checks,
        order=job.order,
    )


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
    *,
    all_variants: bool = False,
    manifest: Path | None = None,
) -> ExportResult:
    """Deliver every planned target to DEST (a path or an fsspec URL) and write export.csv.

    A channel's file as well: ``review.channels.export_channel``."""
    plan = plan_delivery(
        out_dir, template, approved_only, fmt, all_variants=all_variants, manifest=manifest
    )
    fs, root = dest_fs(dest)
    result, _ = deliver(plan, fs, root, dest, fmt, quality, progress)
    return result


class Gate(Protocol):
    """What a channel decides about each image before it is copied (``review.channels``)."""

    def admit(
        self, target: Target, data: bytes, checks: ImageChecks
    ) -> tuple[bytes, ImageChecks] | None:
        """The bytes to deliver and their checks (a fitted copy), or None: left out."""
        ...


@dataclass(frozen=True, slots=True)
class Delivered:
    target: Target
    checks: ImageChecks  # of the bytes at DEST


def dest_fs(dest: str) -> tuple[Any, str]:
    """DEST's file system (fsspec) and root path; nothing is created yet."""
    try:
        fs, root = fsspec.core.url_to_fs(dest)
    except (OSError, ValueError, ImportError) as exc:
        raise ExportError(f"cannot write to {dest}: {exc}") from None
    return fs, str(root)


def deliver(
    plan: ExportPlan,
    fs: Any,
    root: str,
    dest: str,
    fmt: str | None = None,
    quality: int | None = None,
    progress: Callable[[str], None] | None = None,
    gate: Gate | None = None,
) -> tuple[ExportResult, list[Delivered]]:
    """Copy (or convert) the plan's targets into DEST and write export.csv; ``gate`` decides
    what each image becomes first (a channel's checks and fit)."""
    try:
        fs.makedirs(root, exist_ok=True)
    except Exception as exc:  # an object store's errors are not all OSErrors (botocore's)
        raise DestinationError(f"cannot write to {dest}: {_reason(exc)}") from None
    result = ExportResult(skipped=plan.notes)
    delivered: list[Delivered] = []
    for target in plan.targets:
        converted = fmt is not None and (
            FORMATS[fmt][1] != _ext(target.source) or quality is not None
        )
        # A plain copy is streamed from OUT (a folder or a bucket), never held whole; the bytes
        # are read only to convert them, to check them, or for a channel's gate (its fit).
        data: bytes | None = None
        if fmt is not None and converted:
            data = convert(read_image(target.source), fmt, quality)
        elif gate is not None or target.checks is None:
            data = read_image(target.source)
        checks = judged(target, data, converted)
        if gate is not None:
            assert data is not None
            admitted = gate.admit(target, data, checks)
            if admitted is None:
                continue
            data, checks = admitted
        delivered.append(Delivered(target, checks))
        path = f"{root.rstrip('/')}/{target.name}"
        try:
            same = same_image(fs, path, target.source) if data is None else _same(fs, path, data)
            if same:
                result.unchanged += 1
                continue
            parent = path.rsplit("/", 1)[0]
            fs.makedirs(parent, exist_ok=True)
            if data is None:
                copy_image(target.source, fs, path)
            else:
                fs.pipe_file(path, data)
        except ExportError:
            raise
        except Exception as exc:  # as above
            raise DestinationError(f"cannot write {path}: {_reason(exc)}") from None
        result.copied += 1
        if progress is not None:
            progress(target.name)
    write_if_changed(fs, f"{root.rstrip('/')}/{EXPORT_CSV_NAME}", _csv(delivered))
    return result, delivered


def judged(target: Target, data: bytes | None, changed: bool) -> ImageChecks:
    """The marketplace checks of ``data``: its ledger line's when the bytes are the stored
    file's (judged again from the kept facts if the rules changed since), else measured here
    (``data`` is then the bytes: None only when the stored checks stand)."""
    stored = target.checks
    if stored is not None and not changed:
        return stored if stored.rules == RULES_VERSION else checks_from_facts(stored.facts)
    assert data is not None
    try:
        return marketplace_checks(data)
    except ImageCheckError as exc:
        raise ExportError(f"{target.job_id}: {target.source} cannot be checked: {exc}") from None


def verdict(checks: ImageChecks, channel: Channel) -> str:
    """``pass``, or the failures' codes (``fill_low border_not_white``)."""
    return " ".join(checks.codes(channel)) or PASS


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


def _csv(delivered: Iterable[Delivered]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in delivered:
        target = item.target
        verdicts = [verdict(item.checks, channel) for channel in Channel]
        row = [target.job_id, target.index, target.name, target.input, target.prompt]
        writer.writerow([*row, target.group, *verdicts])
    return buffer.getvalue().encode("utf-8")


def write_if_changed(fs: Any, path: str, data: bytes) -> None:
    """Write a small file into DEST unless it already holds exactly ``data``."""
    try:
        if not _same(fs, path, data):
            fs.pipe_file(path, data)
    except Exception as exc:  # as in ``deliver``
        raise DestinationError(f"cannot write {path}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """One line: the error's own words, or its type when it has none (``NoCredentialsError``)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
