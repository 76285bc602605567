"""The spool: the jobs the plan's one pass found to run, kept on disk until the run reads them.

Rows of a shared shape (``plan.onepass``) are stored as their template's number, id and row
number (and their prompt and content key when these are their own), and the template (the
shape's first PlannedJob) once: a row costs a few bytes and no pickled dataclass. Jobs
checked one by one are stored whole. Records are pickled in batches to an anonymous temporary
file, read back once, in order, and rebuilt into PlannedJobs as the run asks for them; the
file is deleted by the system when closed, or when the process dies.
"""

from __future__ import annotations

import dataclasses
import operator
import pickle
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.images.upload import Recipe
from pipeline.models import InputRef, Job, PlannedJob, UnreadImage

BATCH = 4096  # records per pickle: large enough that pickling is all C, small in memory

_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_ID, _PROMPT, _LOCATION, _IMAGE = (
    _JOB_FIELDS.index(name) for name in ("id", "prompt", "location", "image")
)
_job_values = operator.attrgetter(*_JOB_FIELDS)
_planned_values = operator.attrgetter(*(f.name for f in dataclasses.fields(PlannedJob)))

# Records: a PlannedJob; (template, id, row[, prompt, key]) a row of a template;
# (PlannedJob, location prefix) the next template; None: templates so far are not used again
# (the pass's shape cache started over).
Record = PlannedJob | tuple[Any, ...] | None


def with_identity(
    planned: PlannedJob,
    job_id: str,
    location: str,
    prompt: str | None = None,
    key: str | None = None,
    image: str | None = None,
    image_digest: str | None = None,
) -> PlannedJob:
    """``planned`` for another row: its id and location, and its prompt, content key and
    local image file (with its digest) if given; everything else shared."""
    values = list(_job_values(planned.job))
    values[_ID], values[_LOCATION] = job_id, location
    if prompt is not None:
        values[_PROMPT] = prompt
    if image is not None:
        values[_IMAGE] = InputRef("file", image)
    rest = _planned_values(planned)[1:]
    if key is not None:
        rest = (key, *rest[1:])
    if image_digest is not None:
        rest = (rest[0], image_digest, *rest[2:])
    return PlannedJob(Job(*values), *rest)


class Spool:
    """Planned jobs written to an anonymous temporary file, read back once, in order."""

    def __init__(self) -> None:
        # Not a `with`: the file lives from the first pass to the end of the run.
        self._file = tempfile.TemporaryFile(prefix="pipeline-plan-")  # noqa: SIM115
        self._pickler = pickle.Pickler(self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._pickler.dispatch_table = _REDUCERS
        self._batch: list[Record] = []
        self._templates = 0
        self.count = 0  # jobs (not templates)

    def add(self, planned: PlannedJob) -> None:
        """A job of its own."""
        self._append(planned)
        self.count += 1

    def template(self, planned: PlannedJob, location_prefix: str) -> int:
        """Store a shape's first PlannedJob; its number, for ``add_row``."""
        self._append((planned, location_prefix))
        self._templates += 1
        return self._templates - 1

    def add_row(
        self,
        template: int,
        job_id: str,
        number: int,
        prompt: str | None = None,
        key: str | None = None,
    ) -> None:
        """A job of a template's shape: its id and row number (and its prompt and content key
        when they are its own)."""
        if prompt is None:
            self._batch.append((template, job_id, number))
        else:
            self._batch.append((template, job_id, number, prompt, key))
        self.count += 1
        if len(self._batch) >= BATCH:
            self._flush()

    def forget_templates(self) -> None:
        """Templates stored so far get no more rows: the reader may drop them."""
        self._append(None)
        self._templates = 0

    def _append(self, record: Record) -> None:
        self._batch.append(record)
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._pickler.dump(self._batch)
            self._pickler.clear_memo()  # each batch stands alone: the memo must not grow
            self._batch = []

    def __iter__(self) -> Iterator[PlannedJob]:
        self._flush()
        handle = self._file
        handle.flush()
        handle.seek(0)
        templates: list[tuple[PlannedJob, str]] = []
        try:
            left = self.count
            while left:
                for record in pickle.load(handle):
                    if record is None:
                        templates = []
                    elif type(record) is PlannedJob:
                        left -= 1
                        yield record
                    elif len(record) == 2:
                        templates.append(record)
                    else:
                        left -= 1
                        planned, prefix = templates[record[0]]
                        location = f"{prefix}{record[2]}"
                        yield with_identity(planned, record[1], location, *record[3:])
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


def _by_fields(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    # attrgetter collects every field in C, in declaration order: the constructor's arguments,
    # rather than dataclasses' own __getstate__, which was most of the cost of a big plan.
    fields_of = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))

    def reduce(value: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, fields_of(value)

    return reduce


_REDUCERS: dict[type, Any] = {
    cls: _by_fields(cls) for cls in (PlannedJob, Job, InputRef, Recipe, UnreadImage)
}
