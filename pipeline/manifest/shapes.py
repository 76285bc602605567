"""The CSV fast path's rules: which rows of a file may share one checked job shape.

A row's *key* is its cells with the id cell blank (and the prompt cell ``LIFTED`` when the
prompt is lifted out too): rows with equal keys build jobs equal in everything but their id,
location and lifted prompt. That holds when nothing but the job's id reads the
id's column (no other field mapped to it, no default's template naming it), likewise for a
lifted prompt, and when no cell of the key is a template (``RowLayout.shareable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipeline.manifest.build import placeholders
from pipeline.manifest.schema import GROUP_COLUMN

if TYPE_CHECKING:
    from pipeline.manifest.sources import ItemsSource


@dataclass(frozen=True, eq=False)
class RowLayout:
    """A CSV file whose rows may take the fast path: it has an ``id`` column that nothing else
    reads (no other field maps to it, no default's template names it)."""

    display: str
    columns: list[tuple[int, str]]
    names: list[str]
    width: int  # cells in the header: only rows of exactly this width take the fast path
    id_index: int
    prompt_index: int = -1  # a prompt column nothing else reads: lifted out of the key too

    @cached_property
    def input_indexes(self) -> tuple[int, ...]:
        """The cells that name an image or a mask (their URLs are fetched ahead)."""
        return tuple(index for index, name in self.columns if name in ("image", "mask"))

    @staticmethod
    def shareable(key: tuple[str, ...]) -> bool:
        """Whether rows of this key build one job but for the id: not if a cell is a template
        (it might name the id's column)."""
        return not any("{" in cell or "}" in cell for cell in key)


# (layout, the row's cells with the id cell blank, the id, the row number, the prompt when it
# was lifted out of the key, its cell then LIFTED)
Row = tuple[RowLayout, tuple[str, ...], str, int, str | None]
LIFTED = "\x00"  # in a key: the prompt cell was set and is the Row's own (no cell holds NUL)


def fast_layout(
    source: ItemsSource,
    columns: list[tuple[int, str]],
    names: list[str],
    width: int,
    defaults: Mapping[str, Any],
) -> RowLayout | None:
    if source.skip_empty:
        return None
    id_columns = [index for index, name in columns if name == "id"]
    if len(id_columns) != 1 or sum(1 for index, _ in columns if index == id_columns[0]) != 1:
        return None
    id_index = id_columns[0]
    id_name = names[id_index]
    if any(id_name in placeholders(value) for value in defaults.values()):
        return None
    if id_name in _implicit_group_column(columns, names, defaults):
        return None
    return RowLayout(
        source.path.name, columns, names, width, id_index, _prompt_index(columns, names, defaults)
    )


def _prompt_index(
    columns: list[tuple[int, str]], names: list[str], defaults: Mapping[str, Any]
) -> int:
    """The prompt's column if its text is the job's prompt and nothing else's, else -1."""
    found = [index for index, name in columns if name == "prompt"]
    if len(found) != 1 or sum(1 for index, _ in columns if index == found[0]) != 1:
        return -1
    name = names[found[0]]
    if any(name in placeholders(value) for value in defaults.values()):
        return -1
    if name in _implicit_group_column(columns, names, defaults):
        return -1
    return found[0]


def _implicit_group_column(
    columns: list[tuple[int, str]], names: list[str], defaults: Mapping[str, Any]
) -> frozenset[str]:
    """The column a job's ``group`` is read from by default (``Handle``), when it is: no group
    mapped or defaulted. A cell read so is a field of the job like any other."""
    if "group" in defaults or any(name == "group" for _, name in columns):
        return frozenset()
    return frozenset({GROUP_COLUMN}) if GROUP_COLUMN in names else frozenset()


def plain_cell(cell: str) -> bool:
    """An id cell the fast path takes as it is: set, no surrounding spaces (pydantic would strip
    them) and no braces (it would be a template)."""
    return bool(cell) and cell == cell.strip() and "{" not in cell and "}" not in cell
