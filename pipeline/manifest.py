"""Manifest: a YAML file (plus CSV / JSONL items and glob entries) → a header and a stream of Jobs.

Layout (SPEC §3)::

    version: 1
    name: spring-catalog        # optional, default: the file's stem; names the output folder
    defaults: {type: inpaint, size: auto, quality: medium}
    jobs:  [{id, type, image, mask, prompt, size, n, quality, output_format,
             output_compression, background}, ...]
    glob:  [{pattern: "images/*.jpg", prompt: "studio shot of {stem}", type: background}, ...]
    items: catalog.csv          # or .jsonl, or a list of them: one job per row, same field names

Jobs come out in that order: ``jobs``, then ``glob`` matches (sorted), then ``items`` rows.

Rules a user relies on:

- A job's own value beats ``defaults``. Empty (or blank) CSV cells and ``null`` mean "not set";
  an explicit ``""`` in YAML or JSON is a value (so ``prompt: ""`` is reported as empty).
- ``type`` takes ``IMAGE_INPAINTER`` / ``inpaint`` or ``BACKGROUND_REPLACER`` / ``background``,
  in any letter case.
- Fields for one feature only (``mask``, ``n``, ``output_format``, ``output_compression`` for the
  inpainter; ``background`` for the replacer) are a problem when written on a job of the other
  feature, and silently ignored when they come from ``defaults``, which both features share.
- ``id`` defaults to the image's file stem. Checking that it is unique and safe as a folder name
  is preflight's work; the manifest name is checked here because the header names the run folder.
- ``image`` / ``mask``: ``http(s)://...`` is a URL, ``asset:<path>`` an already uploaded asset,
  anything else a file path, relative to the manifest's folder (``~`` expands). Paths are
  normalised lexically only; preflight resolves symbolic links and applies the folder policy.
- A glob entry makes one job per matching file (hidden files excluded, ``**`` recurses); in its
  text fields ``{stem}`` becomes the file's stem, e.g. ``mask: masks/{stem}.png``.
- CSV: UTF-8 (a byte-order mark is fine), the first row names the columns (letter case and
  surrounding spaces ignored, unnamed columns ignored). JSONL: one object per line, blank lines
  skipped. Both are read as a stream, so a file of a million rows never sits in memory.

Rows are validated with pydantic v2 (a ``TypedDict`` schema): its Rust core checks a row in about
a microsecond, reports every bad field of a row at once with the field as its location, and its
lax mode turns CSV strings such as ``"2"`` into ints. Range and cross-file checks are preflight's.
"""

from __future__ import annotations

import csv
import difflib
import glob as globlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before 3.12

from pipeline.errors import ManifestError, Problem
from pipeline.models import Feature, InputRef, Job

VERSION = 1
HEADER_FIELDS = ("version", "name", "defaults", "jobs", "glob", "items")
JOB_FIELDS = (
    "id",
    "type",
    "image",
    "mask",
    "prompt",
    "size",
    "n",
    "quality",
    "output_format",
    "output_compression",
    "background",
)
INPAINT_ONLY = ("mask", "n", "output_format", "output_compression")
BACKGROUND_ONLY = ("background",)
_PARAMETERS = ("size", "n", "quality", "output_format", "output_compression", "background")

FEATURE_ALIASES: Mapping[str, Feature] = {
    "image_inpainter": Feature.INPAINT,
    "inpainter": Feature.INPAINT,
    "inpaint": Feature.INPAINT,
    "inpainting": Feature.INPAINT,
    "background_replacer": Feature.BACKGROUND,
    "background": Feature.BACKGROUND,
    "replace_background": Feature.BACKGROUND,
}
OUTPUT_FORMAT_ALIASES: Mapping[str, str] = {"jpg": "jpeg"}
# Names people reach for that difflib would not match to ours.
FIELD_HINTS: Mapping[str, str] = {
    "feature": "type",
    "kind": "type",
    "count": "n",
    "num_images": "n",
    "compression": "output_compression",
    "format": "output_format",
    "image_url": "image",
    "imageurl": "image",
    "mask_url": "mask",
    "maskurl": "mask",
}

TYPE_CHOICES = "IMAGE_INPAINTER (inpaint) or BACKGROUND_REPLACER (background)"
ITEM_SUFFIXES = (".csv", ".jsonl", ".ndjson")
MAX_NAME_LENGTH = 200
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{port}{i}" for port in ("com", "lpt") for i in range(1, 10)}
)
_NOT_IN_FOLDER_NAMES = re.compile(r'[/\\<>:"|?*]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PATH_CACHE_SIZE = 65_536
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Report = Callable[[str, str], None]  # report(field, message) about the job being built


# --- the row schema -------------------------------------------------------------------------


def _whole_number(value: Any) -> int:
    # Lax pydantic would take `true` as 1 and "2.5" as an error worded for programmers.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError(
        "whole_number", "must be a whole number, got {value}", {"value": repr(value)}
    )


# Text fields: numbers are fine as text (YAML reads `id: 1001` as an int), surrounding spaces
# go. Choice fields are lower-cased too. Both are done by pydantic's core, not per-row Python.
Text = str
Choice = Annotated[str, StringConstraints(to_lower=True)]
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


@with_config(ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True))
class JobFields(TypedDict, total=False):
    """The fields a job, a defaults block or a glob entry may set; every one optional here."""

    id: Text
    type: Text
    image: Text
    mask: Text
    prompt: Text
    size: Choice
    n: WholeNumber
    quality: Choice
    output_format: Choice
    output_compression: WholeNumber
    background: Choice


_JOB_FIELDS_ADAPTER: TypeAdapter[JobFields] = TypeAdapter(JobFields)


# --- the header -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobEntry:
    """One ``glob:`` entry: a pattern and the job fields every matching file gets."""

    pattern: str
    fields: Mapping[str, Any]
    location: str


@dataclass(frozen=True)
class Manifest:
    """A checked manifest header; ``iter_jobs`` streams the jobs (read again on every call)."""

    path: Path
    base_dir: Path
    name: str
    version: int
    defaults: Mapping[str, Any]
    jobs: Sequence[Any] = ()  # the raw ``jobs:`` entries, checked one by one while streaming
    job_lines: Sequence[int | None] = ()  # 1-based line of each entry, for messages
    globs: Sequence[GlobEntry] = ()
    items: Sequence[Path] = ()
    display_name: str = ""  # the file name as messages show it

    def iter_jobs(self, wanted: Callable[[int], bool] | None = None) -> Iterator[Job | Problem]:
        """Every job in manifest order, defaults applied (``size`` may still be ``auto``).

        Each entry (a ``jobs`` item, a glob match, an items row) has an ordinal, ``Job.entry``;
        with ``wanted``, entries it refuses are skipped before any validation, so a second pass
        over a catalog that is mostly done costs little more than reading the rows.
        """
        entries = _Entries(wanted)
        for index, entry in enumerate(self.jobs):
            if (ordinal := entries.next()) is None:
                continue
            line = self.job_lines[index] if index < len(self.job_lines) else None
            where = f"{self.display_name}:{line}" if line else self.display_name
            yield from self._job_from_entry(entry, f"{where} job {index + 1}", ordinal)
        for entry in self.globs:
            yield from self._iter_glob(entry, entries)
        for items_path in self.items:
            if items_path.suffix.lower() == ".csv":
                yield from self._iter_csv(items_path, entries)
            else:
                yield from self._iter_jsonl(items_path, entries)

    # -- sources --

    def _iter_glob(self, entry: GlobEntry, entries: _Entries) -> Iterator[Job | Problem]:
        matches = sorted(
            match
            for match in globlib.glob(entry.pattern, root_dir=self.base_dir, recursive=True)
            if os.path.isfile(os.path.join(self.base_dir, match))
        )
        if not matches:
            yield Problem(None, "pattern", f"{entry.pattern!r} matches no file", entry.location)
        for match in matches:
            if (ordinal := entries.next()) is None:
                continue
            stem = PurePosixPath(match.replace("\\", "/")).stem
            own = {
                name: value.replace("{stem}", stem) if isinstance(value, str) else value
                for name, value in entry.fields.items()
            }
            own["image"] = match
            location = f"{entry.location} ({match})"
            yield from self._job_from_fields(own, frozenset(), location, ordinal)

    def _iter_csv(self, path: Path, entries: _Entries) -> Iterator[Job | Problem]:
        display = path.name
        row_number = 0
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    yield Problem(None, None, "items file is empty: no header row", display)
                    return
                columns, header_problems = _csv_columns(header, display)
                yield from header_problems
                for row_number, cells in enumerate(reader, start=1):
                    if not any(cell.strip() for cell in cells):
                        continue
                    if (ordinal := entries.next()) is None:
                        continue
                    location = f"{display} row {row_number}"
                    if len(cells) > len(header):
                        message = f"has {len(cells)} cells but the header names {len(header)}"
                        yield Problem(None, None, message, location)
                        continue
                    raw = {
                        name: cells[i] for i, name in columns if i < len(cells) and cells[i].strip()
                    }
                    yield from self._job_from_entry(raw, location, ordinal)
        except UnicodeDecodeError:
            message = f"not UTF-8 text (after row {row_number}); save the file as UTF-8 CSV"
            yield Problem(None, None, message, display)
        except csv.Error as exc:
            yield Problem(None, None, f"not valid CSV after row {row_number}: {exc}", display)
        except OSError as exc:
            yield Problem(None, None, f"cannot read items file: {_os_reason(exc)}", display)

    def _iter_jsonl(self, path: Path, entries: _Entries) -> Iterator[Job | Problem]:
        display = path.name
        try:
            with path.open("rb") as handle:
                for line_number, line in enumerate(handle, start=1):
                    # A byte-order mark is fine at the start; orjson would refuse it.
                    text = line.removeprefix(b"\xef\xbb\xbf") if line_number == 1 else line
                    if not text.strip():
                        continue
                    if (ordinal := entries.next()) is None:
                        continue
                    location = f"{display} line {line_number}"
                    try:
                        raw = orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        yield Problem(None, None, f"not valid JSON: {exc}", location)
                        continue
                    yield from self._job_from_entry(raw, location, ordinal)
        except OSError as exc:
            yield Problem(None, None, f"cannot read items file: {_os_reason(exc)}", display)

    # -- one job --

    def _job_from_entry(self, raw: Any, location: str, entry: int) -> Iterator[Job | Problem]:
        if not isinstance(raw, Mapping):
            message = f"a job is a mapping of fields (image, prompt, ...), got {_kind(raw)}"
            yield Problem(None, None, message, location)
            return
        own, invalid, problems = _validate_fields(raw, location)
        yield from problems
        yield from self._job_from_fields(own, invalid, location, entry)

    def _job_from_fields(
        self,
        own: Mapping[str, Any],
        invalid: frozenset[str],
        location: str,
        entry: int,
    ) -> Iterator[Job | Problem]:
        result = build_job(own, self.defaults, self.base_dir, location, invalid, entry)
        # A job with a bad field is still built from its good ones and passed on, so preflight
        # reports its other problems (an unsafe id, a mask of the wrong size) in the same run
        # instead of one at a time. Its problems keep the run from starting.
        if isinstance(result, Job):
            yield result
        else:
            yield from result


class _Entries:
    """Numbers the manifest's entries in stream order and says which ones to read."""

    def __init__(self, wanted: Callable[[int], bool] | None) -> None:
        self._wanted = wanted
        self._next = 0

    def next(self) -> int | None:
        """The next entry's ordinal, or None if it is to be skipped."""
        ordinal = self._next
        self._next += 1
        if self._wanted is not None and not self._wanted(ordinal):
            return None
        return ordinal


def _csv_columns(header: list[str], display: str) -> tuple[list[tuple[int, str]], list[Problem]]:
    """The (index, field) pairs to read from each row, and problems with the header itself."""
    columns: list[tuple[int, str]] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, cell in enumerate(header):
        name = cell.strip().lower()
        if not name:
            continue  # spreadsheets export trailing unnamed columns
        if name not in JOB_FIELDS:
            problems.append(Problem(None, name, _unknown_field_message(name), f"{display} header"))
        elif name in seen:
            problems.append(Problem(None, name, "column appears twice", f"{display} header"))
        else:
            seen.add(name)
            columns.append((index, name))
    return columns, problems


def _validate_fields(
    raw: Mapping[Any, Any], location: str, name_jobs: bool = True
) -> tuple[dict[str, Any], frozenset[str], list[Problem]]:
    """Typed fields of one entry, the names that were invalid, and a problem per bad field.

    ``name_jobs``: name the job in problems (False for defaults and glob entries).
    """
    cleaned = {str(key): value for key, value in raw.items() if value is not None}
    try:
        return dict(_JOB_FIELDS_ADAPTER.validate_python(cleaned)), frozenset(), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    job_name = _name_hint(raw) if name_jobs else None
    problems = [_problem_from_error(error, job_name, location) for error in errors]
    invalid = frozenset(str(error["loc"][0]) for error in errors if error["loc"])
    # Validate the rest again so the remaining checks (missing prompt, ...) report at once.
    rest = {name: value for name, value in cleaned.items() if name not in invalid}
    try:
        fields = dict(_JOB_FIELDS_ADAPTER.validate_python(rest))
    except ValidationError:
        fields = {}
    return fields, invalid, problems


def _problem_from_error(error: Any, job_name: str | None, location: str) -> Problem:
    name = str(error["loc"][0]) if error["loc"] else None
    if error["type"] == "extra_forbidden" and name is not None:
        return Problem(job_name, name, _unknown_field_message(name), location)
    if error["type"] == "string_type":
        return Problem(job_name, name, f"must be text, got {error['input']!r}", location)
    return Problem(job_name, name, str(error["msg"]), location)


def _unknown_field_message(
    name: str, known: Sequence[str] = JOB_FIELDS, hints: Mapping[str, str] = FIELD_HINTS
) -> str:
    message = f"unknown field {name!r}"
    lowered = name.strip().lower()
    suggestion = hints.get(lowered)
    if suggestion is None:
        close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    if suggestion is not None and suggestion != name:
        return f"{message} (did you mean {suggestion!r}?)"
    return f"{message} (known: {', '.join(known)})"


def _name_hint(raw: Mapping[Any, Any]) -> str | None:
    """The job's id for messages about an entry that failed validation, if one can be told."""
    job_id = raw.get("id")
    if isinstance(job_id, str | int) and not isinstance(job_id, bool) and str(job_id).strip():
        return str(job_id).strip()
    image = raw.get("image")
    if isinstance(image, str):
        return _stem_of(image) or None
    return None


# --- building a Job -------------------------------------------------------------------------


def build_job(
    own: Mapping[str, Any],
    defaults: Mapping[str, Any],
    base_dir: Path,
    location: str,
    invalid: frozenset[str] = frozenset(),
    entry: int = -1,
) -> Job | list[Problem]:
    """Apply defaults to one entry's typed fields and make a Job, or say what is wrong.

    ``invalid`` names fields already reported as bad, so they are not reported again as missing.
    """
    merged = {**defaults, **own}
    # An explicit id is kept as written, even "" (preflight says what is wrong with it).
    job_id = merged["id"] if "id" in merged else _stem_of(merged.get("image", "")) or None
    problems: list[Problem] = []

    def problem(name: str, message: str) -> None:
        problems.append(Problem(job_id, name, message, location))

    feature = _feature_of(merged.get("type"), "type" in invalid, problem)
    if feature is not None:
        unused = INPAINT_ONLY if feature is Feature.BACKGROUND else BACKGROUND_ONLY
        for name in unused:
            if name in own:
                problem(name, f"applies only to {_other(feature).value}, not {feature.value}")
            merged.pop(name, None)

    image = _required_ref(merged, "image", base_dir, invalid, problem)
    mask = _ref_field(merged, "mask", base_dir, problem)
    if "prompt" not in merged and "prompt" not in invalid:
        problem("prompt", "required: describe the edit")
    if job_id is None and image is not None:
        problem("id", "cannot be derived from the image; set an id")
    # Fields already reported as invalid are left out (their defaults apply), so the job can
    # still be checked for everything else; the reported problems keep it from running.
    if problems or feature is None or image is None or "prompt" not in merged:
        return problems
    parameters = {name: merged[name] for name in _PARAMETERS if name in merged}
    if "output_format" in parameters:
        fmt = parameters["output_format"]
        parameters["output_format"] = OUTPUT_FORMAT_ALIASES.get(fmt, fmt)
    return Job(
        id=str(job_id),
        feature=feature,
        image=image,
        mask=mask,
        prompt=merged["prompt"],
        location=location,
        entry=entry,
        **parameters,
    )


def _feature_of(value: Any, already_reported: bool, problem: _Report) -> Feature | None:
    if value is None:
        if not already_reported:
            problem("type", f"required: {TYPE_CHOICES}")
        return None
    feature = parse_feature(value)
    if feature is None:
        problem("type", f"{value!r} is not {TYPE_CHOICES}")
    return feature


def parse_feature(value: str) -> Feature | None:
    """``IMAGE_INPAINTER``, ``inpaint``, ``Background``, ... → Feature; None if unknown."""
    return FEATURE_ALIASES.get(value.strip().lower().replace("-", "_").replace(" ", "_"))


def _other(feature: Feature) -> Feature:
    return Feature.INPAINT if feature is Feature.BACKGROUND else Feature.BACKGROUND


def _required_ref(
    merged: Mapping[str, Any], name: str, base_dir: Path, invalid: frozenset[str], problem: _Report
) -> InputRef | None:
    if name not in merged:
        if name not in invalid:
            problem(name, "required: a file path, an http(s) URL or asset:<path>")
        return None
    return _ref_field(merged, name, base_dir, problem)


def _ref_field(
    merged: Mapping[str, Any], name: str, base_dir: Path, problem: _Report
) -> InputRef | None:
    text = merged.get(name)
    if text is None:
        return None
    ref = input_ref(text, str(base_dir))
    if isinstance(ref, str):
        problem(name, ref)
        return None
    return ref


@lru_cache(maxsize=_PATH_CACHE_SIZE)
def input_ref(text: str, base_dir: str) -> InputRef | str:
    """Where an image or mask comes from; a message (str) when it cannot be used.

    Cached: a catalog names the same few files many times.
    """
    text = text.strip()
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return InputRef("url", text)
    if lowered.startswith("asset:"):
        path = text[len("asset:") :].strip()
        return InputRef("asset", path) if path else "asset: needs a path after the colon"
    scheme = _URL_SCHEME.match(text)
    if scheme:
        return (
            f"{scheme.group(1)}:// is not supported; use a file path, an http(s) URL "
            "or asset:<path>"
        )
    if not text:
        return "is empty"
    expanded = os.path.expanduser(text)
    return InputRef("file", os.path.normpath(os.path.join(base_dir, expanded)))


def _stem_of(text: str) -> str:
    """The file stem an id defaults to: ``images/chair.jpg`` and URLs → ``chair``."""
    text = text.strip()
    if text.lower().startswith(("http://", "https://")):
        text = urlsplit(text).path
    elif text.lower().startswith("asset:"):
        text = text[len("asset:") :]
    return PurePosixPath(text.replace("\\", "/")).stem


# --- loading --------------------------------------------------------------------------------


def load_manifest(path: Path) -> Manifest:
    """Read and check the header; the jobs are checked while ``iter_jobs`` streams them.

    Raises ManifestError with every header problem found.
    """
    path = Path(os.path.abspath(path))
    display = path.name
    data, node = _read_yaml(path, display)
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        message = "a manifest is a mapping with version, jobs, items or glob"
        raise ManifestError([Problem(None, None, f"{message}; got {_kind(data)}", display)])
    for key in data:
        if key not in HEADER_FIELDS:
            problems.append(
                Problem(
                    None, str(key), _unknown_field_message(str(key), HEADER_FIELDS, {}), display
                )
            )
    base_dir = path.parent
    version = _version(data, display, problems)
    name = _manifest_name(data, path, problems)
    defaults = _defaults(data.get("defaults"), display, problems)
    jobs = _jobs_list(data.get("jobs"), display, problems)
    globs = _glob_entries(data.get("glob"), node, display, problems)
    items = _items_paths(data.get("items"), base_dir, display, problems)
    if not (jobs or globs or items) and not problems:
        problems.append(Problem(None, "jobs", "no jobs: add jobs, glob or items", display))
    if problems:
        raise ManifestError(problems)
    return Manifest(
        path=path,
        base_dir=base_dir,
        name=name,
        version=version,
        defaults=defaults,
        jobs=jobs,
        job_lines=_entry_lines(node, "jobs"),
        globs=globs,
        items=items,
        display_name=display,
    )


def _read_yaml(path: Path, display: str) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = Problem(None, None, "not UTF-8 text", f"{display} byte {exc.start}")
        raise ManifestError([problem]) from None
    except OSError as exc:
        problem = Problem(None, None, f"cannot read manifest: {_os_reason(exc)}", str(path))
        raise ManifestError([problem]) from None
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ManifestError([_yaml_problem(exc, display)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(None, None, f"not valid YAML: {exc}", display)]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ManifestError([Problem(None, None, "manifest is empty", display)])
    return data, node


def _yaml_problem(exc: yaml.MarkedYAMLError, display: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    location = f"{display}:{mark.line + 1}:{mark.column + 1}" if mark else display
    reason = " ".join(part for part in (exc.context, exc.problem) if part)
    return Problem(None, None, f"not valid YAML: {reason}", location)


def _version(data: Mapping[str, Any], display: str, problems: list[Problem]) -> int:
    version = data.get("version")
    if version is None:
        problems.append(Problem(None, "version", f"missing: add `version: {VERSION}`", display))
    elif isinstance(version, bool) or version != VERSION:
        message = f"{version!r} is not supported; this pipeline reads version {VERSION}"
        problems.append(Problem(None, "version", message, display))
    return VERSION


def _manifest_name(data: Mapping[str, Any], path: Path, problems: list[Problem]) -> str:
    name = data.get("name", path.stem)
    if not isinstance(name, str | int) or isinstance(name, bool):
        problems.append(Problem(None, "name", f"must be text, got {_kind(name)}", path.name))
        return path.stem
    name = str(name).strip()
    reason = folder_name_problem(name)
    if reason:
        message = f"{name!r} cannot name the output folder: {reason}"
        problems.append(Problem(None, "name", message, path.name))
    return name


def _defaults(raw: Any, display: str, problems: list[Problem]) -> dict[str, Any]:
    if raw is None:
        return {}
    location = f"{display} defaults"
    if not isinstance(raw, Mapping):
        problems.append(Problem(None, "defaults", f"must be a mapping, got {_kind(raw)}", display))
        return {}
    fields, _invalid, found = _validate_fields(raw, location, name_jobs=False)
    problems.extend(found)
    if "id" in fields:
        problems.append(
            Problem(None, "id", "cannot have a default: every job has its own", location)
        )
    if "type" in fields and parse_feature(fields["type"]) is None:
        message = f"{fields['type']!r} is not {TYPE_CHOICES}"
        problems.append(Problem(None, "type", message, location))
    return fields


def _jobs_list(raw: Any, display: str, problems: list[Problem]) -> tuple[Any, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem(None, "jobs", f"must be a list of jobs, got {_kind(raw)}", display))
        return ()
    return tuple(raw)


def _glob_entries(
    raw: Any, node: yaml.Node | None, display: str, problems: list[Problem]
) -> tuple[GlobEntry, ...]:
    if raw is None:
        return ()
    entries = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list):
        message = f"must be a mapping or a list of them, got {_kind(raw)}"
        problems.append(Problem(None, "glob", message, display))
        return ()
    lines = _entry_lines(node, "glob") if isinstance(raw, list) else (_key_line(node, "glob"),)
    result = []
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else None
        location = f"{display}:{line} glob {index + 1}" if line else f"{display} glob {index + 1}"
        parsed = _glob_entry(entry, location, problems)
        if parsed is not None:
            result.append(parsed)
    return tuple(result)


def _glob_entry(entry: Any, location: str, problems: list[Problem]) -> GlobEntry | None:
    if not isinstance(entry, Mapping):
        message = f"a glob entry is a mapping with a pattern, got {_kind(entry)}"
        problems.append(Problem(None, "glob", message, location))
        return None
    fields_only = {key: value for key, value in entry.items() if key != "pattern"}
    fields, _invalid, found = _validate_fields(fields_only, location, name_jobs=False)
    problems.extend(found)
    pattern = entry.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        problems.append(Problem(None, "pattern", "required: e.g. images/*.jpg", location))
        return None
    if "image" in fields:
        message = "a glob entry takes its images from the pattern; remove image"
        problems.append(Problem(None, "image", message, location))
    return GlobEntry(os.path.expanduser(pattern.strip()), fields, location)


def _items_paths(
    raw: Any, base_dir: Path, display: str, problems: list[Problem]
) -> tuple[Path, ...]:
    if raw is None:
        return ()
    names = raw if isinstance(raw, list) else [raw]
    paths = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            message = f"must be the path of a CSV or JSONL file, got {_kind(name)}"
            problems.append(Problem(None, "items", message, display))
            continue
        path = base_dir / os.path.expanduser(name.strip())
        reason = _items_file_problem(path)
        if reason:
            problems.append(Problem(None, "items", f"{name}: {reason}", display))
        else:
            paths.append(path)
    return tuple(paths)


def _items_file_problem(path: Path) -> str | None:
    if path.suffix.lower() not in ITEM_SUFFIXES:
        return "an items file ends in .csv or .jsonl"
    if not path.exists():
        return f"no such file ({path})"
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _entry_lines(node: yaml.Node | None, key: str) -> tuple[int | None, ...]:
    """1-based line of each item of the top-level sequence ``key``, for messages."""
    value = _top_level_value(node, key)
    if not isinstance(value, yaml.SequenceNode):
        return ()
    return tuple(item.start_mark.line + 1 for item in value.value)


def _key_line(node: yaml.Node | None, key: str) -> int | None:
    value = _top_level_value(node, key)
    return value.start_mark.line + 1 if value is not None else None


def _top_level_value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if getattr(key_node, "value", None) == key:
            return value_node
    return None


# --- small helpers --------------------------------------------------------------------------


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` cannot safely name a folder (a job id, the run name), or None.

    Beyond escaping the output folder (``/``, ``..``) this refuses what breaks on Windows or
    macOS (reserved device names, ``:`` and friends, trailing dots and spaces), since output
    folders get copied and synced between systems.
    """
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_NAME_LENGTH}"
    if _CONTROL.search(name):
        return "contains a control character"
    if _NOT_IN_FOLDER_NAMES.search(name):
        forbidden = sorted(set(_NOT_IN_FOLDER_NAMES.findall(name)))
        return f"contains {' '.join(forbidden)}, not allowed in a folder name"
    if name.startswith("."):
        return "starts with '.' (a hidden or parent folder)"
    if ".." in name:
        return "contains '..'"
    if name != name.strip() or name.endswith("."):
        return "starts or ends with a space, or ends with '.'"
    if name.split(".")[0].lower() in _WINDOWS_DEVICES:
        return "is a reserved device name on Windows"
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 40 else "a text"
    names = {dict: "a mapping", list: "a list", bool: "a true/false", int: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
