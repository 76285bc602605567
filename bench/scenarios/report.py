"""Scenario: the review page at catalog size (issue 15).

Two figures beside their targets:

- thumbnail CPU per job: the CPU time (every thread of this process) of building the static
  report cold, over a catalog where every job has its own 1024 px source and all share one mask,
  as a catalog does; outputs get no thumbnails (the page shows them lazily). JPEG and PNG sources
  are measured apart (JPEG decodes at reduced scale, PNG cannot).
- page open time: a 100,000-job run's ``report.html`` opened in headless Chromium (Playwright),
  from navigation to the script's ready mark (header and first cards drawn); the same for the
  served page, whose data comes from ``/api/data``.

The run data is synthetic (ledger lines written directly, outputs hard links of one image).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
from PIL import Image, ImageDraw

from bench.common import Figure, ScenarioResult, log, median, scratch
from pipeline.review.page import build_payload, write_report

TITLE = "Review page (thumbnail CPU per job, 100,000-job page open)"
THUMB_TARGET_MS = 10.0
OPEN_TARGET_S = 2.0
SIDE = 1024
LINKS_PER_FILE = 50_000


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("report", TITLE)
    thumb_jobs = 60 if quick else 300
    page_jobs = 100_000
    result.params = {"thumbnail_jobs": thumb_jobs, "page_jobs": page_jobs, "source_side": SIDE}
    with scratch("report") as folder:
        for fmt in ("JPEG", "PNG"):
            per_job = _thumbnail_cpu(folder / f"thumbs-{fmt.lower()}", thumb_jobs, fmt)
            target = ("<=", THUMB_TARGET_MS) if fmt == "JPEG" else None
            result.add(Figure(f"thumbnail CPU per job, {fmt} sources", per_job, "ms", target))
        out = folder / "page"
        started = time.perf_counter()
        _synthetic_run(out, page_jobs, distinct_sources=50, fmt="JPEG")
        log(f"  wrote a {page_jobs:,}-job run in {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        report = write_report(out)
        result.add(Figure("report build, 100,000 jobs", time.perf_counter() - started, "s"))
        result.details["report_bytes"] = report.stat().st_size
        static, live = _open_times(out, 1 if quick else 3)
        result.add(Figure("page open, static report.html", median(static), "s",
                          ("<", OPEN_TARGET_S), static))  # fmt: skip
        result.add(Figure("page open, served (pipeline review)", median(live), "s",
                          ("<", OPEN_TARGET_S), live))  # fmt: skip
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
    """A ledger of ``jobs`` succeeded inpaint jobs; sources distinct unless a count is given."""
    inputs = out.parent / f"{out.name}-inputs"
    inputs.mkdir(parents=True)
    (out / "o").mkdir(parents=True)
    ext = "jpg" if fmt == "JPEG" else "png"
    mask = inputs / "mask.png"
    mask_image = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(mask_image).ellipse((200, 200, 800, 800), fill=255)
    mask_image.save(mask)
    bases = (jobs + LINKS_PER_FILE - 1) // LINKS_PER_FILE
    for b in range(bases):  # one output image hard-linked per job (a file takes ~65,000 links)
        Image.new("RGB", (SIDE, SIDE), (90, 120, 200 - b)).save(out / "o" / f"base-{b}.png")
    sources = distinct_sources or jobs
    for s in range(sources):
        _source(inputs / f"src-{s}.{ext}", fmt, s)
    lines: list[dict[str, object]] = []
    for j in range(jobs):
        job_id = f"sku-{j:06d}"
        output = f"o/{job_id}.png"
        os.link(out / "o" / f"base-{j // LINKS_PER_FILE}.png", out / output)
        ts = f"2026-12-01T10:{j // 60000 % 60:02d}:{j // 1000 % 60:02d}.{j % 1000:03d}+00:00"
        details = {
            "feature": "IMAGE_INPAINTER",
            "image": str(inputs / f"src-{j % sources}.{ext}"),
            "mask": str(mask),
            "parameters": {"prompt": f"studio shot {j}", "size": "1024x1024", "n": 1},
        }
        lines.append({"ts": ts, "job_id": job_id, "status": "started", "key": f"k{j}",
                      "job": details})  # fmt: skip
        lines.append({"ts": ts, "job_id": job_id, "status": "succeeded", "key": f"k{j}",
                      "outputs": [output], "attempts": 1, "credits": 6})  # fmt: skip
    (out / "ledger.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def _thumbnail_cpu(folder: Path, jobs: int, fmt: str) -> float:
    out = folder / "out"
    _synthetic_run(out, jobs, None, fmt)
    started = time.process_time()
    build_payload(out)
    return (time.process_time() - started) * 1000 / jobs


def _open_times(out: Path, runs: int) -> tuple[list[float], list[float]]:
    from tests.browser.playwright_helpers import launched, served, wait_ready

    static: list[float] = []
    live: list[float] = []
    with launched() as browser, served(out) as url:
        for _ in range(runs):
            for target, times in (((out / "report.html").as_uri(), static), (url, live)):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                started = time.perf_counter()
                page.goto(target, wait_until="commit")
                wait_ready(page)
                times.append(time.perf_counter() - started)
                page.close()
    return static, live
