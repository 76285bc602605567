"""Scenario: the account's regime. The product's defaults against the request budget.

The emulator serves the live regime (``--profile live``: async honoured, a private result bucket,
the CDN's 100 s gateway; its limit of uploads in flight lifted, see ``UPLOADS_IN_FLIGHT``) with
the account's window of 180 API requests a minute over uploads, calls and polls together
(``--rpm-limit 180``), and edits of 20, 60 and 120 s (jitter +-20 %).
Every job edits its own photo (a background replacement of a distinct image: each edit costs an
upload). The client runs with the product's defaults (``--rpm 150``, ``--concurrency auto``),
with ``submit: auto`` (no flag), and with ``--sync`` and ``--async`` fixed.

Each run is measured over a steady window of ``STEADY_SECONDS`` after a warm-up of four edit
times, at least 90 s (a cold start sends its first records all at once; their polls and
replacements come in waves that take a few edit times to smooth out), and stopped (SIGINT) an
edit time and a bit after the window (the emulator logs a request when it answers it: a sync
call sent at the window's end is answered an edit later). The figures are taken over the
window, from the emulator's request log (arrival times), its charge log (money) and the
ledger (edits delivered):

- edits a minute / (``--rpm`` / requests an edit), the requests an edit being those the window
  needed (uploads, calls and polls sent in it over the edits delivered in it): the share of what
  the budget allows that the run reached (target 0.95). It equals requests a minute / ``--rpm``.
- polls an edit (target 1.3 with async calls), 429s to calls and polls (target 0: ``--rpm`` is
  under the window; 429s to uploads, the live API's limit of 5 in flight, are counted apart),
  edits paid twice (from the charge log: an image charged more than once).
- with edits of 20 s: ``auto`` edits a minute over ``--async``'s (target 1.4: sync calls after
  the first records cost two requests an edit, async ones three and more); at 120 s, sync calls
  ``auto`` sent (target 0: it stays async).

The nine runs mostly wait, so they run side by side in threads (each its own emulator process),
six at a time, the longest first.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from PIL import Image

from bench.common import Figure, ScenarioResult, log, scratch
from bench.emulator import EmulatorProcess
from bench.procs import Interrupt, probe_args, run_child

TITLE = "The account's regime (180 requests/min window, edits of 20/60/120 s, defaults)"
EDIT_SECONDS = (20.0, 60.0, 120.0)
JITTER = 0.2
WINDOW_LIMIT = 180  # the account's documented window, over every API request
RPM = 150.0  # the product's default --rpm
MODES = {"auto": (), "sync": ("--sync",), "async": ("--async",)}
WARM_EDITS = 4.0  # edit times before the steady window starts ...
WARM_MIN_SECONDS = 90.0  # ... and at least this long
# After the window the run goes on this long (edit times and seconds) before its SIGINT: the
# emulator logs a request when it is answered, and a sync call sent near the window's end is
# answered an edit later (a run stopped at once would lose the window's last calls).
TAIL_EDITS = 1.3
TAIL_SECONDS = 10.0
STEADY_SECONDS = 180.0
QUICK_STEADY_SECONDS = 60.0
MAX_EDITS_A_MINUTE = RPM / 2  # at the fewest requests an edit: an upload and a call
# The live API's limit of 5 uploads in flight, lifted until the client keeps under it itself
# (the live-regime client work): a slow machine has more in flight, each extra one's JSON 429
# reads as the account's window reached, and the pace is cut. Set it back to 5 then.
UPLOADS_IN_FLIGHT = 64
# Runs side by side: each is an emulator rendering every edit and a client (about a tenth of a
# core each at these rates), so six at a time leave room for the machine's other work.
MAX_PARALLEL = 6
START_STAGGER = 3.0  # seconds between starts
API_ROUTES = ("assets", "features", "results")
ROUTE_KIND = {"assets": "uploads", "features": "calls", "results": "polls"}


@dataclass
class Measured:
    """One run's steady window."""

    edit: float
    mode: str
    seconds: float = 0.0
    edits: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    limited: int = 0  # 429 answers to calls and polls over the whole run: the window's
    limited_uploads: int = 0  # 429 answers to uploads: more than 5 in flight
    paid_twice: int = 0  # images charged more than once (whole run)
    sync_charges: int = 0  # edits charged from a sync call (whole run)
    delivered: int = 0  # edits delivered over the whole run
    error: str | None = None

    @property
    def edits_per_minute(self) -> float:
        return self.edits / self.seconds * 60.0

    @property
    def requests_per_edit(self) -> float:
        return sum(self.requests.values()) / self.edits

    @property
    def share_of_budget(self) -> float:
        """Edits a minute over what --rpm allows at the requests an edit the window needed."""
        return self.edits_per_minute / (RPM / self.requests_per_edit)

    @property
    def label(self) -> str:
        return f"{self.edit:g} s edits, {self.mode}"


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("account_rate", TITLE)
    steady = QUICK_STEADY_SECONDS if quick else STEADY_SECONDS
    edits = EDIT_SECONDS[:1] if quick else EDIT_SECONDS
    result.params = {
        "edit_seconds": list(edits),
        "edit_jitter": JITTER,
        "window_limit_per_minute": WINDOW_LIMIT,
        "rpm": RPM,
        "modes": list(MODES),
        "warm_seconds": {f"{edit:g} s": warm_seconds(edit) for edit in edits},
        "steady_seconds": steady,
        "emulator_profile": "live",
    }
    result.notes += [
        "figures over the steady window of each run: from the warm-up's end (four edit times "
        "after its first request, at least 90 s), 180 s long; 429s, money and sync charges "
        "over the whole run",
        "edits a minute / (rpm / requests an edit) equals requests a minute / rpm: the budget's "
        "use; requests an edit are the window's (uploads + calls + polls) over its edits",
    ]
    load_before = os.getloadavg()[0]
    with scratch("account") as folder:
        runs = [Measured(edit, mode) for edit in edits for mode in MODES]
        slots = threading.Semaphore(MAX_PARALLEL)
        threads = [
            threading.Thread(
                target=_measure,
                args=(folder, item, steady, slots),
                name=f"{item.edit:g}s-{item.mode}",
            )
            # The longest first: the short ones fill in as the middle ones end.
            for item in sorted(runs, key=lambda item: -item.edit)
        ]
        for thread in threads:
            thread.start()
            time.sleep(START_STAGGER)  # nine emulators starting at once starve each other
        for thread in threads:
            thread.join()
    # The runs share the machine: a busy one (others' work) slows emulators and clients alike.
    result.details["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    result.notes.append(
        f"machine load average {load_before:.1f} before the runs, {os.getloadavg()[0]:.1f} "
        "after (2 CPUs): above about 6 the emulators and clients are starved and the figures low"
    )
    for item in runs:
        _figures(result, item)
    _comparisons(result, runs)
    result.details["runs"] = [
        {
            "edit_s": item.edit,
            "mode": item.mode,
            "error": item.error,
            "window_s": round(item.seconds, 1),
            "edits": item.edits,
            "requests": item.requests,
            "delivered": item.delivered,
            "limited_429": item.limited,
            "limited_429_uploads": item.limited_uploads,
            "paid_twice": item.paid_twice,
            "sync_charges": item.sync_charges,
        }
        for item in runs
    ]
    failed = [item.label for item in runs if item.error]
    if failed:  # the other runs' figures stay; the scenario is marked failed
        result.error = f"runs failed: {', '.join(failed)}"
    return result


def _measure(folder: Path, item: Measured, steady: float, slots: threading.Semaphore) -> None:
    with slots:
        try:
            _one_run(folder / f"{item.edit:g}-{item.mode}", item, steady)
        except Exception as exc:  # recorded: the other runs go on
            item.error = f"{type(exc).__name__}: {exc}"
            log(f"  {item.label}: FAILED: {item.error}")


def _one_run(folder: Path, item: Measured, steady: float) -> None:
    warm = warm_seconds(item.edit)
    tail = TAIL_EDITS * item.edit + TAIL_SECONDS
    jobs = int(MAX_EDITS_A_MINUTE * (warm + steady + tail) / 60.0 * 1.2) + 50
    manifest = distinct_photos(folder / "catalog", jobs)
    requests_log, charges_log = folder / "requests.jsonl", folder / "charges.jsonl"
    flags = ["--profile", "live", "--edit-seconds", str(item.edit), "--edit-jitter", str(JITTER)]
    flags += ["--rpm-limit", str(WINDOW_LIMIT), "--charge-log", str(charges_log)]
    flags += ["--upload-concurrency", str(UPLOADS_IN_FLIGHT)]
    with EmulatorProcess(*flags, request_log=requests_log) as emulator:
        out = folder / "out"
        args = ["run", str(manifest), "--out", str(out), "--no-progress", "--no-report"]
        args += list(MODES[item.mode])
        stop = Interrupt(after=warm + steady + tail, event="scheduler_start")
        timeout = warm + steady + tail + 2 * item.edit + 300
        child = run_child(
            probe_args(*args), folder=folder, env=emulator.env, timeout=timeout, interrupt=stop
        )
    if child.code not in (0, 130) and not child.interrupted:
        raise RuntimeError(f"run exited {child.code}: {child.tail()}")
    _read(item, requests_log, charges_log, out / "ledger.jsonl", warm, steady)
    log(
        f"  {item.label}: {item.edits_per_minute:.1f} edits/min, "
        f"{item.requests_per_edit:.2f} requests an edit, {item.share_of_budget:.3f} of the budget"
    )


def _read(
    item: Measured, requests_log: Path, charges_log: Path, ledger: Path, warm: float, steady: float
) -> None:
    entries = [orjson.loads(line) for line in requests_log.read_bytes().splitlines()]
    api = [entry for entry in entries if entry.get("route") in API_ROUTES]
    start = min(entry["arrived"] for entry in api) + warm
    end = start + steady
    delivered = _delivered(ledger)
    item.delivered = len(delivered)
    item.edits = sum(1 for moment in delivered if start <= moment < end)
    if not item.edits:
        raise RuntimeError("no edit delivered in the steady window")
    item.seconds = min(end, max(delivered)) - start  # all done early: up to the last one
    counts = dict.fromkeys(ROUTE_KIND.values(), 0)
    for entry in api:
        if start <= entry["arrived"] < end:
            counts[ROUTE_KIND[entry["route"]]] += 1
    item.requests = counts
    limited = [entry for entry in api if entry.get("status") == 429]
    item.limited_uploads = sum(1 for entry in limited if entry["route"] == "assets")
    item.limited = len(limited) - item.limited_uploads
    charges = [orjson.loads(line) for line in charges_log.read_bytes().splitlines()]
    by_image: dict[str, int] = {}
    for charge in charges:
        if charge["cost"] > 0:
            by_image[charge["image_url"]] = by_image.get(charge["image_url"], 0) + 1
    item.paid_twice = sum(1 for count in by_image.values() if count > 1)
    item.sync_charges = sum(1 for charge in charges if charge["answered"] == "sync")


def _delivered(ledger: Path) -> list[float]:
    """When each edit was delivered (its ``succeeded`` line), wall-clock seconds."""
    moments = []
    for raw in ledger.read_bytes().splitlines():
        record = orjson.loads(raw)
        if record["status"] == "succeeded":
            moments.append(datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp())
    return moments


def _figures(result: ScenarioResult, item: Measured) -> None:
    if item.error or not item.edits:
        return
    per_edit = item.requests_per_edit
    polls = item.requests["polls"] / item.edits
    note = (
        f"{item.edits_per_minute:.1f} edits/min; budget allows {RPM:g} / {per_edit:.2f} = "
        f"{RPM / per_edit:.1f}; per edit: uploads {item.requests['uploads'] / item.edits:.2f}, "
        f"calls {item.requests['calls'] / item.edits:.2f}, polls {polls:.2f}"
    )
    result.add(
        Figure(
            f"edits a minute / (rpm / requests an edit), {item.label}",
            item.share_of_budget,
            "",
            (">=", 0.95),
            [item.share_of_budget],
            note,
        )
    )
    result.add(Figure(f"requests an edit, {item.label}", per_edit, "", None, [per_edit]))
    async_calls = item.requests["calls"] and polls > 0.5  # most calls async: their polls count
    target = ("<=", 1.3) if async_calls else None
    result.add(Figure(f"polls an edit, {item.label}", polls, "", target, [polls]))
    result.add(
        Figure(
            f"429s of the window (calls, polls), {item.label}",
            float(item.limited),
            "",
            ("<=", 0),
            [],
            f"and {item.limited_uploads} 429s to uploads (the live API's 5 uploads in flight)",
        )
    )
    result.add(
        Figure(
            f"edits paid twice, {item.label}",
            float(item.paid_twice),
            "",
            None,
            [],
            f"{item.delivered} edits delivered in the whole run (from the charge log)",
        )
    )


def _comparisons(result: ScenarioResult, runs: list[Measured]) -> None:
    by_key = {(item.edit, item.mode): item for item in runs if not item.error and item.edits}
    auto, fixed_async = by_key.get((20.0, "auto")), by_key.get((20.0, "async"))
    if auto and fixed_async:
        ratio = auto.edits_per_minute / fixed_async.edits_per_minute
        note = f"{auto.edits_per_minute:.1f} / {fixed_async.edits_per_minute:.1f} edits a minute"
        result.add(
            Figure(
                "20 s edits: auto / --async edits a minute", ratio, "x", (">=", 1.4), [ratio], note
            )
        )
    slow = by_key.get((120.0, "auto"))
    if slow:
        result.add(
            Figure("120 s edits: sync calls auto sent", float(slow.sync_charges), "", ("<=", 0), [])
        )


def warm_seconds(edit: float) -> float:
    return max(WARM_MIN_SECONDS, WARM_EDITS * edit)


def distinct_photos(folder: Path, count: int) -> Path:
    """A catalog of ``count`` background replacements, each of its own small photo (so each
    edit costs an upload)."""
    images = folder / "img"
    images.mkdir(parents=True, exist_ok=True)
    lines = ["id,image,prompt"]
    for index in range(count):
        colour = (index % 256, index // 256 % 256, 160)
        Image.new("RGB", (64, 64), colour).save(images / f"p{index}.png")
        lines.append(f"sku-{index:05d},img/p{index}.png,white marble countertop")
    (folder / "catalog.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = folder / "catalog.yaml"
    manifest.write_text(
        "version: 1\nname: catalog\n"
        "defaults: {type: background, size: 1024x1024, quality: low}\n"
        "items: catalog.csv\n",
        encoding="utf-8",
    )
    return manifest
