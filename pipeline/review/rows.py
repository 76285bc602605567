"""The manifest rows behind exported jobs: what export's templates read beyond the ledger.

The ledger keeps what a job is (its fields and its group), not the row it was made from: a
Shopify row has some forty columns, and a catalog's started lines would carry them all. So
export reads the rows it needs from the manifest the folder's last run recorded in
``summary.json`` (or the one given), once, streaming, keeping only the cells its templates name
for the jobs it exports. A row edited since the run (a better alt text) is read as it is now.

Without a readable manifest export still works: a template that names a column is an error
naming the job and the column, and the channel files fall back (positions in job order, no alt
text) with a note saying why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ExportError, ManifestError
from pipeline.manifest import load_manifest
from pipeline.manifest.build import expand_template, placeholders
from pipeline.models import Job
from pipeline.reporting.status import recorded_manifest

POSITION_COLUMN = "Image Position"  # a Shopify row's place among its product's images
ALT_TEXT_COLUMN = "Image Alt Text"  # a Shopify row's description of its image


@dataclass
class ManifestRows:
    """The wanted cells of each job's row, and the jobs' order in the manifest."""

    cells: dict[str, dict[str, str]] = field(default_factory=dict)  # job id -> column -> cell
    order: dict[str, int] = field(default_factory=dict)  # job id -> place in the manifest
    note: str | None = None  # why there are no rows (no manifest recorded, unreadable)

    def row(self, job_id: str) -> Mapping[str, str]:
        return self.cells.get(job_id, {})


def read_rows(
    out_dir: Path,
    manifest: Path | None,
    columns: Collection[str],
    jobs: Collection[str],
) -> ManifestRows:
    """The ``columns`` of the rows of ``jobs`` (ids), from ``manifest`` or the recorded one.

    Raises ``ExportError`` when a manifest given explicitly cannot be read; a recorded one that
    cannot be read (moved, deleted) gives no rows and a note.
    """
    path = manifest or recorded_manifest(out_dir)
    if path is None:
        return ManifestRows(note=f"no manifest recorded in {out_dir} (pass --manifest)")
    try:
        loaded = load_manifest(path)
    except ManifestError as exc:
        if manifest is not None:
            raise ExportError(f"cannot read the manifest {path}: {exc}") from None
        return ManifestRows(note=f"cannot read the manifest {path} (pass --manifest)")
    rows = ManifestRows()
    wanted = frozenset(columns)

    def keep(job: Job, data: Mapping[str, str]) -> None:
        if job.id in jobs and job.id not in rows.order:
            rows.order[job.id] = len(rows.order)
            rows.cells[job.id] = {name: data[name] for name in wanted if name in data}

    for _ in dataclasses.replace(loaded, on_row=keep).iter_jobs():
        pass  # ``keep`` sees every job built; problems are preflight's to report, not export's
    return rows


def fill(template: str, row: Mapping[str, str], fields: Mapping[str, str], what: str) -> str:
    """``template`` filled from the row's cells and the job's own ``fields`` (``{id}``,
    ``{group}``, ...), by the manifest's rules (``{Column}``, ``{{`` and ``}}`` literal).

    Raises ``ExportError`` naming ``what`` (the option and the job) for a placeholder neither has.
    """
    text, missing = expand_template(template, {**row, **fields})
    if missing:
        known = ", ".join(sorted({*row, *fields})) or "none"
        raise ExportError(
            f"{what}: {{{missing[0]}}} names no column of the job's row nor a field of it "
            f"(known: {known})"
        )
    return text


def template_columns(template: str | None) -> frozenset[str]:
    """The names a ``{Column}`` template reads (none for no template)."""
    return placeholders(template) if template else frozenset()
