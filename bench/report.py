"""``latest.md``: one table of every figure beside its target, then the notes."""

from __future__ import annotations

from typing import Any

MARKS = {True: "yes", False: "**NO**", None: ""}


def render_markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"{document['generated']}, {machine['cpus']} CPUs, Python {machine['python']}, "
        f"{document['total_seconds']:.0f} s in all" + (" (--quick)" if document["quick"] else ""),
        "",
        "| scenario | figure | value | target | met | runs |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for name, scenario in document["scenarios"].items():
        if scenario["error"]:
            error = " ".join(scenario["error"].split())[:300].replace("|", "/")
            lines.append(f"| {name} | ERROR: {error} | | | **NO** | |")
        for figure in scenario["figures"]:
            lines.append(_row(name, figure))
    lines += ["", "## Notes", ""]
    for name, scenario in document["scenarios"].items():
        for note in scenario["notes"]:
            lines.append(f"- {name}: {note}")
    return "\n".join(lines) + "\n"


def _row(name: str, figure: dict[str, Any]) -> str:
    value = _number(figure["value"])
    unit = f" {figure['unit']}" if figure["unit"] else ""
    runs = ", ".join(_number(v) for v in figure["runs"]) if len(figure["runs"]) > 1 else ""
    note = f" ({figure['note']})" if figure["note"] else ""
    return (
        f"| {name} | {figure['name']}{note} | {value}{unit} | {figure['target'] or ''} "
        f"| {MARKS[figure['met']]} | {runs} |"
    )


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
