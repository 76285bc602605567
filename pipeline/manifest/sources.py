"""The sources of jobs: the jobs list, glob entries, CSV and JSONL items, read as streams."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from pipeline.errors import Problem
from pipeline.manifest.build import build_job
from pipeline.manifest.globs import GlobWalk
from pipeline.manifest.schema import (
    JOB_FIELDS,
    os_reason,
    type_name,
    unknown_field_message,
    validate_fields,
)
from pipeline.manifest.shapes import LIFTED, Row, fast_layout, plain_cell
from pipeline.models import Job

# --- the header -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobEntry:
    """One ``glob:`` entry: a pattern and the job fields every matching file gets."""

    pattern: str
    fields: Mapping[str, Any]
    location: str


@dataclass(frozen=True, slots=True)
class ItemsSource:
    """One ``items:`` file and how its columns become job fields
    (docs/manifest.md#mapped-exports)."""

    path: Path
    columns: Mapping[str, str] | None = None  # job field → column name; None: names are fields
    skip_empty: tuple[str, ...] = ()  # rows where one of these fields is empty are skipped
    ignore_unknown: bool = False  # columns that are not fields are template data, not errors


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
    items: Sequence[ItemsSource] = ()
    display_name: str = ""  # the file name as messages show it
    # Called with each job built and its row's cells (its template data), when set: export fills
    # templates over columns no job field keeps (a Shopify row's alt text). Every CSV row then
    # takes the full path, since a shared shape has no row of its own.
    on_row: Callable[[Job, Mapping[str, str]], None] | None = None

    def iter_jobs(self) -> Iterator[Job | Problem]:
        """Every job in manifest order, defaults applied (``size`` may still be ``auto``)."""
        for item in self.iter_entries():
            if type(item) is tuple:
                yield from self.build_row(item)
            else:
                yield item  # type: ignore[misc]

    def iter_entries(self) -> Iterator[Job | Problem | Row]:
        """``iter_jobs``, except that a CSV row whose job only its id tells apart from other
        rows comes as a ``Row``: no Job is built for it (``build_row`` does, on demand).

        Rows with equal ``Row`` keys build jobs equal in everything but their id, location and
        lifted prompt, so a caller checks one of them and each id (the fast path of a big
        catalog).
        """
        for index, entry in enumerate(self.jobs):
            line = self.job_lines[index] if index < len(self.job_lines) else None
            where = f"{self.display_name}:{line}" if line else self.display_name
            yield from self._job_from_entry(entry, f"{where} job {index + 1}")
        for entry in self.globs:
            yield from self._iter_glob(entry)
        for source in self.items:
            if source.path.suffix.lower() == ".csv":
                yield from self._iter_csv(source)
            else:
                yield from self._iter_jsonl(source)

    # -- sources --

    def _iter_glob(self, entry: GlobEntry) -> Iterator[Job | Problem]:
        # Inside the manifest's folder only, and bounded (pipeline.manifest.globs).
        walk = GlobWalk(entry.pattern, str(self.base_dir))
        matches = walk.matches()
        if walk.stopped is not None:  # refused, or too large a walk: nothing of it runs
            yield Problem(None, "pattern", walk.stopped, entry.location)
            return
        if not matches:
            yield Problem(None, "pattern", f"{entry.pattern!r} matches no file", entry.location)
        for match in matches:
            stem = PurePosixPath(match.replace("\\", "/")).stem
            own = {**entry.fields, "image": match.replace("{", "{{").replace("}", "}}")}
            # A name in another encoding is refused by its job's image check; shown escaped.
            shown = match.encode("utf-8", "backslashreplace").decode("utf-8")
            location = f"{entry.location} ({shown})"
            yield from self._job_from_fields(own, frozenset(), location, {"stem": stem})

    def _iter_csv(self, source: ItemsSource) -> Iterator[Job | Problem | Row]:
        path = source.path
        display = path.name
        row_number = 0
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    yield Problem(None, None, "items file is empty: no header row", display)
                    return
                columns, header_problems = _csv_columns(header, display, source)
                yield from header_problems
                if header_problems and source.columns is not None:
                    return  # a mapping naming a missing column would fail every row
                names = [cell.strip() for cell in header]
                layout = None
                if self.on_row is None:
                    layout = fast_layout(source, columns, names, len(header), self.defaults)
                for row_number, cells in enumerate(reader, start=1):
                    if layout is not None and len(cells) == layout.width:
                        job_id = cells[layout.id_index]
                        if plain_cell(job_id):
                            cells[layout.id_index] = ""
                            prompt = None
                            if layout.prompt_index >= 0:
                                prompt = cells[layout.prompt_index]
                                if plain_cell(prompt):  # set, no spaces around, no template
                                    cells[layout.prompt_index] = LIFTED
                                else:
                                    prompt = None  # stays in the key: its own shape
                            yield (layout, tuple(cells), job_id, row_number, prompt)
                            continue
                    if not any(cell.strip() for cell in cells):
                        continue
                    if _skipped(cells, columns, source.skip_empty):
                        continue
                    yield from self._csv_row(cells, row_number, display, columns, names)
        except UnicodeDecodeError:
            message = f"not UTF-8 text (after row {row_number}); save the file as UTF-8 CSV"
            yield Problem(None, None, message, display)
        except csv.Error as exc:
            yield Problem(None, None, f"not valid CSV after row {row_number}: {exc}", display)
        except OSError as exc:
            yield Problem(None, None, f"cannot read items file: {os_reason(exc)}", display)

    def _csv_row(
        self,
        cells: list[str],
        row_number: int,
        display: str,
        columns: list[tuple[int, str]],
        names: list[str],
    ) -> Iterator[Job | Problem]:
        location = f"{display} row {row_number}"
        if len(cells) > len(names):
            message = f"has {len(cells)} cells but the header names {len(names)}"
            yield Problem(None, None, message, location)
            return
        raw = {name: cells[i] for i, name in columns if i < len(cells) and cells[i].strip()}
        data = {name: cells[i] for i, name in enumerate(names) if name and i < len(cells)}
        yield from self._job_from_entry(raw, location, data)

    def build_row(self, row: Row) -> Iterator[Job | Problem]:
        """What ``iter_jobs`` yields for a row that ``iter_entries`` yielded as a ``Row``."""
        layout, key, job_id, row_number, prompt = row
        cells = list(key)
        cells[layout.id_index] = job_id
        if prompt is not None:
            cells[layout.prompt_index] = prompt
        yield from self._csv_row(cells, row_number, layout.display, layout.columns, layout.names)

    def _iter_jsonl(self, source: ItemsSource) -> Iterator[Job | Problem]:
        path = source.path
        display = path.name
        try:
            with path.open("rb") as handle:
                for line_number, line in enumerate(handle, start=1):
                    # A byte-order mark is fine at the start; orjson would refuse it.
                    text = line.removeprefix(b"\xef\xbb\xbf") if line_number == 1 else line
                    if not text.strip():
                        continue
                    location = f"{display} line {line_number}"
                    try:
                        raw = orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        yield Problem(None, None, f"not valid JSON: {exc}", location)
                        continue
                    mapped = _mapped_object(raw, source)
                    if mapped is None:
                        continue  # skip_empty
                    own, data = mapped
                    yield from self._job_from_entry(own, location, data)
        except OSError as exc:
            yield Problem(None, None, f"cannot read items file: {os_reason(exc)}", display)

    # -- one job --

    def _job_from_entry(
        self, raw: Any, location: str, data: Mapping[str, str] | None = None
    ) -> Iterator[Job | Problem]:
        if not isinstance(raw, Mapping):
            message = f"a job is a mapping of fields (image, prompt, ...), got {type_name(raw)}"
            yield Problem(None, None, message, location)
            return
        own, invalid, problems = validate_fields(raw, location)
        yield from problems
        literal = data is None
        if data is None:  # a jobs entry: its own fields are its template data
            data = {str(k): str(v) for k, v in raw.items() if isinstance(v, str | int | float)}
        yield from self._job_from_fields(own, invalid, location, data, literal)

    def _job_from_fields(
        self,
        own: Mapping[str, Any],
        invalid: frozenset[str],
        location: str,
        data: Mapping[str, str] | None = None,
        own_literal: bool = False,
    ) -> Iterator[Job | Problem]:
        result = build_job(own, self.defaults, self.base_dir, location, invalid, data, own_literal)
        # A job with a bad field is still built from its good ones and passed on, so preflight
        # reports its other problems (an unsafe id, a mask of the wrong size) in the same run
        # instead of one at a time. Its problems keep the run from starting.
        if isinstance(result, Job):
            if self.on_row is not None:
                self.on_row(result, data or {})
            yield result
        else:
            yield from result


def _csv_columns(
    header: list[str], display: str, source: ItemsSource | None = None
) -> tuple[list[tuple[int, str]], list[Problem]]:
    """The (index, field) pairs to read from each row, and problems with the header itself.

    Without ``columns`` the header names fields (letter case ignored); with it only the mapped
    columns are fields and every other column is data for templates, so Shopify's ``Type`` is
    not the job's type unless mapped. ``ignore_unknown`` makes unknown names data, not errors.
    """
    location = f"{display} header"
    ignore = source is not None and source.ignore_unknown
    if source is not None and source.columns is not None:
        mapped_columns, mapped_problems = _mapped_columns(header, source.columns, location)
        if not ignore:
            mapped = set(source.columns.values())
            for cell in header:
                name = cell.strip()
                if name and name not in mapped and name.lower() not in JOB_FIELDS:
                    message = (
                        f"column {name!r} is not mapped (ignore_unknown: true keeps it as data)"
                    )
                    mapped_problems.append(Problem(None, name, message, location))
        return mapped_columns, mapped_problems
    columns: list[tuple[int, str]] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, cell in enumerate(header):
        name = cell.strip().lower()
        if not name:
            continue  # spreadsheets export trailing unnamed columns
        if name not in JOB_FIELDS:
            if not ignore:
                problems.append(Problem(None, name, unknown_field_message(name), location))
        elif name in seen:
            problems.append(Problem(None, name, "column appears twice", location))
        else:
            seen.add(name)
            columns.append((index, name))
    return columns, problems


def _mapped_columns(
    header: list[str], mapping: Mapping[str, str], location: str
) -> tuple[list[tuple[int, str]], list[Problem]]:
    positions = {cell.strip(): index for index, cell in reversed(list(enumerate(header)))}
    columns: list[tuple[int, str]] = []
    problems: list[Problem] = []
    for field_name, column in mapping.items():
        if column in positions:
            columns.append((positions[column], field_name))
            continue
        close = difflib.get_close_matches(column, list(positions), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"maps to column {column!r}, which is not in the header{hint}"
        problems.append(Problem(None, f"columns.{field_name}", message, location))
    return columns, problems


def _skipped(cells: list[str], columns: list[tuple[int, str]], skip_empty: tuple[str, ...]) -> bool:
    if not skip_empty:
        return False
    for index, name in columns:
        if name in skip_empty and not (index < len(cells) and cells[index].strip()):
            return True
    mapped = {name for _index, name in columns}
    return any(name not in mapped for name in skip_empty)


def _mapped_object(raw: Any, source: ItemsSource) -> tuple[Any, dict[str, str]] | None:
    """A JSONL object's job fields and template data, by the same rules as a CSV row."""
    if not isinstance(raw, Mapping):
        return raw, {}
    data = {str(k): str(v) for k, v in raw.items() if isinstance(v, str | int | float)}
    if source.columns is not None:
        own = {name: raw[column] for name, column in source.columns.items() if column in raw}
    elif source.ignore_unknown:
        own = {k: v for k, v in raw.items() if str(k).strip().lower() in JOB_FIELDS}
    else:
        own = dict(raw)
    for name in source.skip_empty:
        value = own.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
    return own, data
