"""Merge the scenarios of other result files into ``bench/results/latest.*``.

A full ``make bench`` takes over an hour on two shared cores; a change that touches some
scenarios re-runs those (``python -m bench --only NAME --results DIR``) and merges them here:
each merged scenario gets a note saying when it was measured, so the table says which of its
figures are this version's.

    .venv/bin/python -m bench.merge DIR [DIR ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.report import render_markdown

RESULTS = Path(__file__).resolve().parent / "results"


def merge(into: dict[str, Any], source: dict[str, Any]) -> list[str]:
    """Put ``source``'s scenarios into ``into``; the names merged."""
    names = []
    for name, scenario in source["scenarios"].items():
        scenario.setdefault("notes", []).append(
            f"measured {source['generated']} (merged from a run of this scenario alone)"
        )
        into["scenarios"][name] = scenario
        names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    folders = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    document = orjson.loads((RESULTS / "latest.json").read_bytes())
    for folder in folders:
        names = merge(document, orjson.loads((folder / "latest.json").read_bytes()))
        print(f"{folder}: {', '.join(names)}")
    (RESULTS / "latest.json").write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    (RESULTS / "latest.md").write_text(render_markdown(document), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
