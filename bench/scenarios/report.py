"""Scenario: the review page at catalog size (issues 15 and 24).

Figures beside their targets:

- thumbnail CPU per job: the CPU time (every thread of this process) of building the static
  report cold, over a catalog where every job has its own 1024 px source and all share one mask,
  as a catalog does; outputs get no thumbnails (the page shows them lazily). JPEG and PNG sources
  are measured apart (JPEG decodes at reduced scale, PNG cannot).
- the report of a 1,000,000-job run: ``pipeline report OUT`` in a child process, its peak
  memory and time (the page and its chunks written streaming);
- page open time: that ``report.html`` opened in headless Chromium (Playwright), from
  navigation to the script's ready mark (header and first cards drawn); the same for the served
  page (``pipeline review``); and on the opened page, the time a filter, a page turn and a
  search through every job take to draw.

The run data is synthetic (ledger lines written directly, outputs hard links of a few images).
Its jobs are products' angles, as a catalog's are: ``JOBS_PER_PRODUCT`` jobs a ``group``, so
the page's order brings them together and draws a header per product; every stored output
carries marketplace checks (one in three fails Amazon's), as a run writes them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, ImageDraw

from bench.common import Figure, ScenarioResult, log, median, scratch
from bench.procs import probe_args, run_child
from pipeline.images.checks import checks_from_facts
from pipeline.images.measure import ImageFacts
from pipeline.review.page import build_payload

TITLE = "Review page (thumbnail CPU per job, 1,000,000-job report written and opened)"
THUMB_TARGET_MS = 10.0
OPEN_TARGET_S = 2.0
REPORT_MEMORY_TARGET_MB = 200.0  # issue 24: the report of 1,000,000 jobs
SIDE = 1024
LINKS_PER_FILE = 50_000
WRITE_TIMEOUT = 1800.0
JOBS_PER_PRODUCT = 4  # a product's angles: the jobs of one group


def _verdicts(border_min: int) -> Any:
    """The checks a run stores on a 1024 px product shot whose border is ``border_min``."""
    facts = ImageFacts(
        1024,
        1024,
        900_000,
        "png",
        "RGB",
        provenance="trainedAlgorithmicMedia",
        border_min=border_min,
        border_alpha_min=255,
        fill=0.9,
        product=(60, 60, 964, 964),
    )
    return orjson.loads(checks_from_facts(facts).to_json())


# The verdicts a run stores on an output: one passing every channel, one off-white border.
PASSING = _verdicts(255)
OFF_WHITE = _verdicts(247)


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("report", TITLE)
    thumb_jobs = 60 if quick else 300
    page_jobs = 100_000 if quick else 1_000_000
    result.params = {"thumbnail_jobs": thumb_jobs, "page_jobs": page_jobs, "source_side": SIDE,
                     "jobs_per_product": JOBS_PER_PRODUCT}  # fmt: skip
    with scratch("report") as folder:
        for fmt in ("JPEG", "PNG"):
            per_job = _thumbnail_cpu(folder / f"thumbs-{fmt.lower()}", thumb_jobs, fmt)
            target = ("<=", THUMB_TARGET_MS) if fmt == "JPEG" else None
            result.add(Figure(f"thumbnail CPU per job, {fmt} sources", per_job, "ms", target))
        out = folder / "page"
        started = time.perf_counter()
        _synthetic_run(out, page_jobs, distinct_sources=50, fmt="JPEG")
        log(f"  wrote a {page_jobs:,}-job run in {time.perf_counter() - started:.1f}s")
        label = f"{page_jobs:,} jobs"
        child = run_child(probe_args("report", str(out)), folder=folder / "report-child",
                          timeout=WRITE_TIMEOUT)  # fmt: skip
        if child.code != 0:
            raise RuntimeError(f"pipeline report failed ({child.code}): {child.tail()}")
        result.add(Figure(f"report written, {label}", child.wall, "s",
                          note="thumbnails of 50 sources included"))  # fmt: skip
        result.add(Figure(f"report written, {label}: peak memory", child.maxrss_mb, "MB",
                          ("<=", REPORT_MEMORY_TARGET_MB)))  # fmt: skip
        chunks = list((out / "report-data").glob("*/*.js"))
        result.details["report_html_bytes"] = (out / "report.html").stat().st_size
        result.details["chunk_files"] = len(chunks)
        result.details["chunk_bytes"] = sum(chunk.stat().st_size for chunk in chunks)
        static, live, actions = _open_times(out, 1 if quick else 3)
        result.add(Figure(f"page open, static report.html, {label}", median(static), "s",
                          ("<", OPEN_TARGET_S), static))  # fmt: skip
        result.add(Figure(f"page open, served (pipeline review), {label}", median(live), "s",
                          ("<", OPEN_TARGET_S), live))  # fmt: skip
        for action, seconds in actions.items():
            result.add(Figure(f"on the static page: {action}", median(seconds), "s",
                              runs=seconds))  # fmt: skip
    result.notes.append(
        "thumbnail CPU includes the ledger read and page data; outputs are not thumbnailed "
        "(the page loads the output files lazily at their shown size)"
    )
    return result


def _source(path: Path, fmt: str, seed: int) -> None:
    image = Image.new("RGB", (SIDE, SIDE), (200 - seed % 50, 190, 180))
    draw = ImageDraw.Draw(image)
    for i in range(12):  # some detail, so the encoder and decoder have real work
        x = (seed * 37 + i * 83) % SIDE
        draw.ellipse((x, i * 70, x + 160, i * 70 + 140), fill=(i * 20, 90 + seed % 100, 60))
    image.save(path, fmt, **({"quality": 88} if fmt == "JPEG" else {}))


def _synthetic_run(out: Path, jobs: int, distinct_sources: int | None, fmt: str) -> None:
    """A ledger of ``jobs`` inpaint jobs (one in 100 failed, the rest succeeded), written as
    it goes; sources distinct unless a count is given; outputs where the store puts them."""
    inputs = out.parent / f"{out.name}-inputs"
    inputs.mkdir(parents=True)
    bases = out / ".bench-outputs"
    bases.mkdir(parents=True)
    ext = "jpg" if fmt == "JPEG" else "png"
    mask = inputs / "mask.png"
    mask_image = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(mask_image).ellipse((200, 200, 800, 800), fill=255)
    mask_image.save(mask)
    for b in range((jobs + LINKS_PER_FILE - 1) // LINKS_PER_FILE):  # ~65,000 links a file
        Image.new("RGB", (SIDE, SIDE), (90, 120, 200 - b)).save(bases / f"base-{b}.png")
    sources = distinct_sources or jobs
    for s in range(sources):
        _source(inputs / f"src-{s}.{ext}", fmt, s)
    with (out / "ledger.jsonl").open("wb") as ledger:
        for j in range(jobs):
            ledger.write(_job_lines(out, j, inputs / f"src-{j % sources}.{ext}", mask, bases))


def _job_lines(out: Path, j: int, source: Path, mask: Path, bases: Path) -> bytes:
    job_id = f"sku-{j:07d}"
    second, millis = divmod(j, 1000)
    ts = f"2026-12-01T{10 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    ts += f".{millis:03d}Z"
    details = {
        "feature": "IMAGE_INPAINTER",
        "image": str(source),
        "mask": str(mask),
        "parameters": {"prompt": f"studio shot {j}", "size": "1024x1024", "n": 1},
        "group": f"product-{j // JOBS_PER_PRODUCT:06d}",
    }
    common = {"ts": ts, "job_id": job_id, "key": f"{j:064x}"}
    lines: list[dict[str, object]] = [{**common, "status": "started", "job": details}]
    if j % 100 == 7:
        error = {"kind": "bad_request", "message": "rejected", "http_status": 400}
        lines.append({**common, "status": "failed", "error": error, "attempts": 1})
    else:
        output = f"{job_id}/0.png"
        (out / job_id).mkdir()
        os.link(bases / f"base-{j // LINKS_PER_FILE}.png", out / output)
        checks = [OFF_WHITE if j % 3 == 0 else PASSING]
        lines.append({**common, "status": "succeeded", "outputs": [output], "attempts": 1,
                      "credits": 6, "checks": checks})  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _thumbnail_cpu(folder: Path, jobs: int, fmt: str) -> float:
    out = folder / "out"
    _synthetic_run(out, jobs, None, fmt)
    started = time.process_time()
    build_payload(out)
    return (time.process_time() - started) * 1000 / jobs


def _open_times(out: Path, runs: int) -> tuple[list[float], list[float], dict[str, list[float]]]:
    from tests.browser.playwright_helpers import launched, served, wait_ready

    static: list[float] = []
    live: list[float] = []
    names = ("a feature filter drawn", "the next page drawn", "a status filter drawn",
             "a check filter drawn (fails amazon)",
             "a search through every job, counted")  # fmt: skip
    actions: dict[str, list[float]] = {name: [] for name in names}
    with launched() as browser, served(out, start_timeout=WRITE_TIMEOUT) as url:
        for _ in range(runs):
            for target, times in (((out / "report.html").as_uri(), static), (url, live)):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                started = time.perf_counter()
                page.goto(target, wait_until="commit")
                wait_ready(page)
                times.append(time.perf_counter() - started)
                if times is static:
                    _act(page, actions)
                page.close()
    return static, live, actions


DRAWN = "() => !document.body.dataset.busy"
COUNTED = "() => !document.querySelector('#count').textContent.includes('searching')"


def _act(page: Any, actions: dict[str, list[float]]) -> None:
    """Filters, a page turn and a search on the opened page, each to its cards drawn."""
    steps = (
        ("a feature filter drawn", lambda: page.select_option("#feature", "IMAGE_INPAINTER")),
        ("the next page drawn", lambda: page.click("#next")),
        ("a status filter drawn", lambda: page.click('#status button[data-status="failed"]')),
        ("a check filter drawn (fails amazon)",
         lambda: page.select_option("#check", "fails:amazon")),
    )  # fmt: skip
    for name, step in steps:
        started = time.perf_counter()
        step()
        page.wait_for_function(DRAWN)
        actions[name].append(time.perf_counter() - started)
    page.click('#status button[data-status="all"]')
    page.wait_for_function(DRAWN)
    page.select_option("#check", "all")
    page.wait_for_function(DRAWN)
    started = time.perf_counter()
    page.fill("#query", "studio shot 4242")
    page.wait_for_function(COUNTED, timeout=600_000)
    actions["a search through every job, counted"].append(time.perf_counter() - started)
