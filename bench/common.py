"""What every scenario shares: the result rows, medians, progress lines and scratch folders."""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
_STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since the suite started.

    Lines of a scenario running in a background thread carry its name.
    """
    thread = threading.current_thread()
    who = "" if thread is threading.main_thread() else f"({thread.name}) "
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {who}{message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


@dataclass
class Figure:
    """One reported number, beside its target when it has one.

    ``target`` is ``(op, bound)`` with op ``<=``, ``<``, ``>=`` or ``>``; ``runs`` are the
    individual values the median was taken of.
    """

    name: str
    value: float | None
    unit: str = ""
    target: tuple[str, float] | None = None
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        op, bound = self.target
        checks = {
            "<=": self.value <= bound,
            "<": self.value < bound,
            ">=": self.value >= bound,
            ">": self.value > bound,
        }
        return checks[op]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = f"{self.target[0]} {self.target[1]:g}" if self.target else None
        data["met"] = self.met
        return data


@dataclass
class ScenarioResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        met = {True: "meets target", False: "MISSES target", None: ""}[figure.met]
        target = f" (target {figure.target[0]} {figure.target[1]:g})" if figure.target else ""
        log(f"  {figure.name}: {_fmt(figure.value)} {figure.unit}{target} {met}".rstrip())
        return figure

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "params": self.params,
            "figures": [figure.to_dict() for figure in self.figures],
            "notes": self.notes,
            "details": self.details,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder removed afterwards, whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cpu_ms(work: Callable[[], object], repeats: int) -> list[float]:
    """CPU milliseconds of each of ``repeats`` calls of ``work``, after one warm-up call."""
    work()  # warm: first-touch allocations are not the steady state
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        runs.append((time.process_time() - started) * 1000)
    return runs
