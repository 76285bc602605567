"""Runs the scenarios one after the other and writes the results, even when one of them fails."""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import REPO, ScenarioResult, log
from bench.report import render_markdown
from bench.scenarios import (
    account_rate,
    checks,
    distinct_inputs,
    imaging,
    memory,
    overhead,
    preflight,
    rate_control,
    ray_scale,
    remote_preflight,
    report,
    resume,
    startup,
    throughput,
)
from bench.scenarios.catalogs import CATALOGS

Scenario = Callable[[bool], ScenarioResult]
SCENARIOS: dict[str, Scenario] = {
    "preflight": preflight.run,
    "remote_preflight": remote_preflight.run,
    "distinct_inputs": distinct_inputs.run,
    "distinct_webp": distinct_inputs.run_webp,
    "overhead": overhead.run,
    "throughput": throughput.run,
    "rate_control": rate_control.run,
    "memory": memory.run,
    "startup": startup.run,
    "resume": resume.run,
    "imaging": imaging.run,
    "checks": checks.run,
    "report": report.run,
    "account_rate": account_rate.run,
    "ray_scale": ray_scale.run,
}
# Scenarios that mostly wait run in a thread beside another that mostly waits, to keep the
# suite under ten minutes: rate control (two calls a second, for two minutes) beside
# throughput (2 s latency). Neither figure depends on the CPU the other uses.
BESIDE = {"rate_control": "throughput"}
RESULTS = REPO / "bench" / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few jobs, one run each")
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="run only this (repeatable)"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for latest.json / latest.md"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = args.only or list(SCENARIOS)
    started = time.monotonic()
    try:
        results = _run_all(names, args.quick)
    finally:
        CATALOGS.cleanup()
    document = _document(results, args.quick, time.monotonic() - started)
    _write(args.results, document)
    failed = [r.name for r in results if r.error]
    log(f"done in {document['total_seconds']:.0f}s; results in {args.results}")
    return 1 if failed else 0


def _run_all(names: list[str], quick: bool) -> list[ScenarioResult]:
    """Every scenario in order; a background one runs in a thread beside its host."""
    results: dict[str, ScenarioResult] = {}
    for name in names:
        if BESIDE.get(name) in names:
            continue  # started with its host
        guests = [g for g, host in BESIDE.items() if host == name and g in names]
        threads = [
            threading.Thread(target=lambda g=g: results.__setitem__(g, _run_one(g, quick)), name=g)
            for g in guests
        ]
        for thread in threads:
            thread.start()
        results[name] = _run_one(name, quick)
        for thread in threads:
            thread.join()
    return [results[name] for name in names]


def _run_one(name: str, quick: bool) -> ScenarioResult:
    log(f"{name}: starting")
    started = time.monotonic()
    try:
        result = SCENARIOS[name](quick)
    except Exception as exc:  # a failed scenario is recorded; the others still run
        result = ScenarioResult(name, name, error=f"{type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc()[-4000:]
        log(f"{name}: FAILED: {result.error}")
    result.seconds = time.monotonic() - started
    log(f"{name}: done in {result.seconds:.0f}s")
    return result


def _document(results: list[ScenarioResult], quick: bool, seconds: float) -> dict[str, Any]:
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "total_seconds": round(seconds, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "scenarios": {result.name: result.to_dict() for result in results},
    }


def _write(folder: Path, document: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.json").write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    (folder / "latest.md").write_text(render_markdown(document), encoding="utf-8")
