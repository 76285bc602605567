"""Scenario 3, rate control: a server that admits N requests a minute, a client set to 4N.

The emulator (``--rpm-limit N``) answers 429 beyond N calls in any rolling 60 s, with a Retry-After
saying when a slot frees; the client runs with ``--rpm 4N``. From the emulator's request log, over
the window after the first minute (the client's start-up burst is the first minute's business): 429s
as a share of API-host requests, and accepted requests a minute over N. API-host requests are
uploads, feature calls and result polls, whichever of them the emulator's window counts (feature
calls only, or all of them): the catalog shares a handful of inputs, so uploads are a few at the
start and feature calls are nearly all the rest either way. The client's own 429 rule
(docs/api.md#429-too-many-requests) makes the lone first 429 of each refill cost only its call, and
pauses every worker once they come together; this shows that it still settles at the limit. The
window is one minute: the server's own period, so a client that fills every slot the server frees
scores 1.0 whatever the shape of its bursts. The run is cut off with SIGINT when the window is over.
``--quick`` runs 40 s only: too short for the figures to mean anything.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.common import Figure, ScenarioResult, scratch
from bench.emulator import EmulatorProcess
from bench.procs import Interrupt, probe_args, run_child
from bench.scenarios.catalogs import CATALOGS

TITLE = "Rate control (server admits N/min, client set to 4N)"
LIMIT = 120  # N, API-host requests a minute
LATENCY = 0.2
CONCURRENCY = 8
SHARE_429_TARGET = 0.01
RATE_TARGET = 0.85
# The emulator's request-log routes of requests to the API host (not the asset host or S3).
API_ROUTES = frozenset({"assets", "features", "results"})


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("rate_control", TITLE)
    warmup, window = (10.0, 30.0) if quick else (60.0, 60.0)
    jobs = int(4 * LIMIT * (warmup + window) / 60) + 100  # more than the client could send
    result.params = {
        "rpm_limit": LIMIT,
        "client_rpm": 4 * LIMIT,
        "latency_s": LATENCY,
        "concurrency": CONCURRENCY,
        "measured_after_s": warmup,
        "window_s": window,
        "jobs": jobs,
    }
    with scratch("rate") as folder:
        log_path = folder / "requests.jsonl"
        started = _run(folder, jobs, log_path, warmup + window)
        calls = _api_requests(log_path)
    measured = [(ts, status) for ts, status in calls if ts >= started + warmup]
    share = _share_429(measured)
    accepted = sum(1 for _, status in measured if status == 200)
    rate = accepted / (window / 60) / LIMIT
    result.details["calls"] = {"all": len(calls), "window": len(measured), "accepted": accepted}
    share_target = None if quick else ("<", SHARE_429_TARGET)
    rate_target = None if quick else (">=", RATE_TARGET)
    result.add(Figure("429s / API requests after the first minute", share, "", share_target))
    result.add(Figure("accepted requests a minute / N", rate, "", rate_target))
    result.add(Figure("429s / API requests, whole run", _share_429(calls), ""))
    return result


def _run(folder: Path, jobs: int, log_path: Path, seconds: float) -> float:
    """Run until ``seconds`` after the first feature call; the wall time of that call."""
    manifest = CATALOGS.catalog(jobs)
    args = probe_args(
        "run",
        str(manifest),
        "--out",
        str(folder / "out"),
        "--concurrency",
        str(CONCURRENCY),
        "--rpm",
        str(4 * LIMIT),
        "--no-progress",
        "--no-report",
    )
    flags = ["--rpm-limit", str(LIMIT), "--latency", str(LATENCY)]
    with EmulatorProcess(*flags, request_log=log_path) as emulator:
        child = run_child(
            args,
            folder=folder / "run",
            env=emulator.env,
            timeout=seconds + 300,
            interrupt=Interrupt(seconds, "first_feature"),
        )
    first = child.events.get("first_feature")
    if child.code != 130 or first is None:
        raise RuntimeError(f"run exited {child.code} (expected 130 on the cut): {child.tail()}")
    return float(first["t"])


def _api_requests(log_path: Path) -> list[tuple[float, int]]:
    calls = []
    for raw in log_path.read_bytes().splitlines():
        entry = orjson.loads(raw)
        if entry["route"] in API_ROUTES and entry["status"] is not None:
            calls.append((float(entry["ts"]), int(entry["status"])))
    return calls


def _share_429(calls: list[tuple[float, int]]) -> float | None:
    return sum(1 for _, status in calls if status == 429) / len(calls) if calls else None
