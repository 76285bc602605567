"""Suite-wide tallies for the closing report: faults injected, crash points, hostile inputs.

Tests add to ``FIGURES``; ``conftest.py`` prints it at the end of the session. Counting here never
decides a test: each test asserts its own facts, these numbers only say how much was tried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

FIGURES: Counter[str] = Counter()


def tally_faults(log: Iterable[dict[str, Any]]) -> None:
    """Count every fault the emulator logged, by route and kind (``fault/features/429``)."""
    for entry in log:
        if entry.get("fault"):
            FIGURES[f"fault/{entry['route']}/{entry['fault']}"] += 1
        FIGURES["requests/served"] += 1


def tally(name: str, amount: int = 1) -> None:
    FIGURES[name] += amount


def report_lines() -> list[str]:
    """The figures grouped by their first path segment, for the terminal summary."""
    if not FIGURES:
        return []
    lines = []
    for group in sorted({name.split("/", 1)[0] for name in FIGURES}):
        names = sorted(name for name in FIGURES if name.split("/", 1)[0] == group)
        total = sum(FIGURES[name] for name in names)
        lines.append(f"{group}: {total}")
        lines.extend(f"    {name.split('/', 1)[-1]}: {FIGURES[name]}" for name in names)
    return lines
