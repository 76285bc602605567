"""The sources of jobs: the jobs list, glob entries, CSV and JSONL items, read as streams."""

from __future__ import annotations

import csv
import glob as globlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from pipeline.errors import Problem
from pipeline.manifest.build import (
    build_job,
)
from pipeline.manifest.schema import (
    JOB_FIELDS,
    _kind,
    _os_reason,
    _unknown_field_message,
    _validate_fields,
)
from pipeline.models import Job

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
