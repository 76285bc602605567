"""Synthetic run folders for the report tests: real ledger lines, real images, no network.

The ledger lines come from ``pipeline.ledger.record_for`` fed with real events, and the summary
from ``RunStats.summary``, so the shapes stay those of a real run. Only the timestamps are made
up (evenly spaced), so the progress chart has something to draw.

The pictures are drawn with Pillow: a "product" on a studio backdrop as the source, a mask over
part of it, and outputs that really differ from the source where an edit would (the masked area
for the inpainter, the backdrop for the background replacer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, ImageDraw

from pipeline.events import (
    Event,
    FeatureSubmitted,
    JobFailed,
    JobRetrying,
    JobStarted,
    JobSucceeded,
)
from pipeline.images.checks import marketplace_checks
from pipeline.layout import LEDGER_NAME
from pipeline.ledger import record_for, to_dict
from pipeline.models import ErrorInfo, Feature, FeatureResult, InputRef, Job, PlannedJob
from pipeline.reporting.stats import RunStats

PRODUCTS = ("chair", "lamp", "vase", "mug", "sofa", "plant")


@dataclass
class SyntheticJob:
    """One job of a synthetic run and how it ends."""

    job_id: str
    prompt: str = "modern pendant light, brushed metal"
    feature: Feature = Feature.INPAINT
    outcome: str = "succeeded"  # "succeeded" | "failed" | "started" (interrupted)
    n: int = 1
    product: str = "chair"
    retries: Sequence[ErrorInfo] = ()
    error: ErrorInfo = field(default_factory=lambda: ErrorInfo("bad_request", "rejected", 400))
    image: str | None = None  # an input reference to use as is (URL, "asset:..."); else drawn
    mask: str | None = None
    output_format: str = "png"
    credits: int = 6
    group: str | None = None  # the product (the manifest's ``group``)
    checks: bool = True  # judge the outputs (marketplace checks) as a run stores them


@dataclass
class SyntheticRun:
    out_dir: Path
    inputs_dir: Path
    jobs: list[SyntheticJob]
    lines: int = 0


def build_run(
    out_dir: Path,
    jobs: Iterable[SyntheticJob],
    *,
    inputs_dir: Path | None = None,
    side: int = 48,
    summary: bool = True,
    name: str = "demo",
    step_seconds: float = 2.5,
) -> SyntheticRun:
    """Draw inputs and outputs, write the ledger (and summary.json unless told not to)."""
    jobs = list(jobs)
    inputs_dir = inputs_dir or out_dir.parent / "inputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs_dir.mkdir(parents=True, exist_ok=True)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    clock = _Clock(start, step_seconds)
    stats = RunStats(clock=lambda: 0.0)
    records = []
    for job in jobs:
        for event in _events(job, out_dir, inputs_dir, side):
            stats(event)
            record = record_for(event)
            if record is not None:
                records.append({**to_dict(record), "ts": clock.tick()})
    (out_dir / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    if summary:
        write_synthetic_summary(out_dir, stats, name, start, clock.now)
    return SyntheticRun(out_dir, inputs_dir, jobs, len(records))


class _Clock:
    def __init__(self, start: datetime, step: float) -> None:
        self.now = start
        self.step = timedelta(seconds=step)

    def tick(self) -> str:
        self.now += self.step / 4  # four ledger lines per job on average
        return self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_synthetic_summary(
    out_dir: Path, stats: RunStats, name: str, start: datetime, end: datetime
) -> None:
    stats.started_at = start.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    summary = stats.summary(
        manifest=f"/somewhere/jobs/{name}.yaml",
        name=name,
        out_dir=str(out_dir),
        exit_code=1 if stats.failed else 0,
        settings={"concurrency": 4, "rpm": 60, "max_attempts": 4, "emulator": True},
    )
    wall = (end - start).total_seconds()
    summary["finished_at"] = end.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    summary["wall_seconds"] = wall
    done = summary["counts"]["succeeded"]
    summary["throughput"] = {
        "jobs_per_minute": round(done / wall * 60, 2),
        "images_per_minute": round(stats.counters["images/written"] / wall * 60, 2),
    }
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def _events(job: SyntheticJob, out_dir: Path, inputs_dir: Path, side: int) -> Iterable[Event]:
    planned = _planned(job, inputs_dir, side)
    key = planned.key
    yield JobStarted(planned)
    attempt = 1
    for error in job.retries:
        yield JobRetrying(job.job_id, key, "feature", attempt, error, delay=1.5 * attempt)
        if error.kind != "rate_limited":
            attempt += 1  # flow control does not use up attempts
    if job.outcome == "started":
        return
    if job.outcome == "failed":
        yield JobFailed(job.job_id, key, job.error, attempt)
        return
    result = FeatureResult(
        uuid=f"uuid-{job.job_id}",
        result_paths=tuple(f"results/{job.job_id}/{i}.png" for i in range(job.n)),
        used_credit=100,
        credit_limit=10_000,
    )
    yield FeatureSubmitted(job.job_id, key, attempt, result, job.credits)
    outputs = _draw_outputs(job, planned.job, out_dir, side)
    checks = tuple(marketplace_checks(out_dir / output) for output in outputs) if job.checks else ()
    yield JobSucceeded(
        job.job_id,
        key,
        tuple(outputs),
        attempt,
        job.credits,
        result.uuid,
        timings={"upload": 0.2, "feature": 3.1, "download": 0.4},
        checks=checks,
    )


def _planned(job: SyntheticJob, inputs_dir: Path, side: int) -> PlannedJob:
    image = _input(job.image) or InputRef("file", str(_draw_source(job, inputs_dir, side)))
    mask = None
    if job.feature is Feature.INPAINT:
        mask = _input(job.mask) or InputRef("file", str(_draw_mask(job, inputs_dir, side)))
    spec = Job(
        id=job.job_id,
        feature=job.feature,
        image=image,
        prompt=job.prompt,
        mask=mask,
        n=job.n if job.feature is Feature.INPAINT else 1,
        output_format=job.output_format,
        group=job.group,
    )
    key = hashlib.sha256(f"{job.job_id}|{job.prompt}".encode()).hexdigest()
    return PlannedJob(spec, key)


def _input(value: str | None) -> InputRef | None:
    if value is None:
        return None
    if value.startswith(("http://", "https://")):
        return InputRef("url", value)
    if value.startswith("asset:"):
        return InputRef("asset", value.removeprefix("asset:"))
    return InputRef("file", value)


# -- pictures -------------------------------------------------------------------------------------


def _draw_source(job: SyntheticJob, inputs_dir: Path, side: int) -> Path:
    path = inputs_dir / f"{job.job_id.replace('/', '_')}.png"
    scene = _backdrop(side, (236, 232, 224), (205, 198, 186))
    _draw_product(scene, job.product)
    scene.save(path)
    return path


def _draw_mask(job: SyntheticJob, inputs_dir: Path, side: int) -> Path:
    path = inputs_dir / f"{job.job_id.replace('/', '_')}.mask.png"
    mask = Image.new("L", (side, side), 0)
    box = _edit_area(side)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    mask.save(path)
    return path


def _edit_area(side: int) -> tuple[int, int, int, int]:
    """Where the inpainter edits: the upper middle, above the product."""
    return (side * 3 // 10, side // 20, side * 7 // 10, side * 9 // 20)


def _draw_outputs(job: SyntheticJob, spec: Job, out_dir: Path, side: int) -> list[str]:
    folder = out_dir / job.job_id
    folder.mkdir(parents=True, exist_ok=True)
    if spec.image.kind == "file":
        source = Image.open(spec.image.value).convert("RGB")
    else:  # a remote input: edit a stand-in, since nothing is fetched here
        source = _backdrop(side, (236, 232, 224), (205, 198, 186))
    outputs = []
    for index in range(spec.expected_outputs):
        color = _color(f"{index}|{job.prompt}")
        if spec.feature is Feature.INPAINT:
            mask = Image.new("L", (side, side), 0)
            if spec.mask is not None and spec.mask.kind == "file":
                mask = Image.open(spec.mask.value).convert("L")
            fill = _backdrop(side, color, tuple(c // 2 for c in color))
            _draw_pendant(fill, side, color)
            result = Image.composite(fill, source, mask)
        else:
            light = tuple(min(255, c + 70) for c in color)
            result = _backdrop(side, light, tuple(c * 2 // 3 for c in color))
            _draw_product(result, job.product)
        name = f"{index}.{ {'jpeg': 'jpg'}.get(job.output_format, job.output_format) }"
        result.save(folder / name)
        outputs.append(f"{job.job_id}/{name}")
    return outputs


def _color(text: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(text.encode()).digest()
    return (60 + digest[0] % 170, 60 + digest[1] % 170, 60 + digest[2] % 170)


def _backdrop(side: int, top: Sequence[int], bottom: Sequence[int]) -> Image.Image:
    """A wall fading to a floor: a 2-pixel strip stretched, cheap at any size."""
    horizon = side * 7 // 10
    wall = Image.new("RGB", (1, 2))
    wall.putdata([tuple(top), tuple((t + b) // 2 for t, b in zip(top, bottom, strict=True))])
    scene = wall.resize((side, horizon), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (side, side), tuple(bottom))
    canvas.paste(scene, (0, 0))
    return canvas


def _draw_pendant(image: Image.Image, side: int, color: Sequence[int]) -> None:
    """A hanging lamp in the edit area, its shade tinted by the prompt's color."""
    draw = ImageDraw.Draw(image)
    x = side // 2
    draw.line((x, 0, x, side // 5), fill=(40, 40, 40), width=max(1, side // 160))
    shade = tuple(min(255, c + 60) for c in color)
    draw.pieslice(
        (x - side // 9, side // 5, x + side // 9, side * 3 // 10 + side // 9), 180, 360, fill=shade
    )
    draw.ellipse(
        (x - side // 22, side * 5 // 18, x + side // 22, side * 6 // 18), fill=(255, 236, 170)
    )


def _draw_product(image: Image.Image, product: str) -> None:
    """A flat illustration of a product standing on the floor, on a 100x100 grid."""
    draw = ImageDraw.Draw(image)
    unit = image.size[0] / 100
    radius = max(1, round(2 * unit))

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return (round(x0 * unit), round(y0 * unit), round(x1 * unit), round(y1 * unit))

    def points(*xy: tuple[float, float]) -> list[tuple[int, int]]:
        return [(round(x * unit), round(y * unit)) for x, y in xy]

    draw.ellipse(box(28, 82, 72, 88), fill=(150, 142, 130))  # its shadow on the floor
    wood, dark = (150, 98, 58), (98, 62, 36)
    if product == "chair":
        draw.rectangle(box(34, 50, 38, 86), fill=dark)
        draw.rectangle(box(62, 50, 66, 86), fill=dark)
        draw.rounded_rectangle(box(30, 58, 70, 64), radius=radius, fill=wood)
        draw.rectangle(box(32, 40, 36, 60), fill=dark)
        draw.rounded_rectangle(box(32, 38, 68, 46), radius=radius, fill=wood)
    elif product == "lamp":
        draw.rectangle(box(48, 44, 52, 84), fill=(70, 70, 76))
        draw.ellipse(box(38, 80, 62, 88), fill=(60, 60, 66))
        draw.polygon(points((36, 46), (64, 46), (58, 28), (42, 28)), fill=(238, 214, 150))
    elif product == "vase":
        draw.ellipse(box(36, 46, 64, 86), fill=(64, 110, 160))
        draw.rectangle(box(44, 34, 56, 52), fill=(64, 110, 160))
        draw.line(points((50, 34), (42, 16)), fill=(70, 130, 70), width=max(1, radius))
        draw.ellipse(box(36, 10, 48, 22), fill=(225, 96, 110))
    elif product == "mug":
        draw.rounded_rectangle(box(36, 54, 60, 86), radius=radius, fill=(230, 90, 60))
        draw.ellipse(box(54, 60, 70, 78), outline=(230, 90, 60), width=max(1, 2 * radius))
    elif product == "sofa":
        draw.rounded_rectangle(box(18, 50, 82, 80), radius=3 * radius, fill=(86, 120, 110))
        draw.rounded_rectangle(box(22, 40, 78, 58), radius=3 * radius, fill=(98, 136, 124))
        draw.rectangle(box(22, 80, 26, 86), fill=dark)
        draw.rectangle(box(74, 80, 78, 86), fill=dark)
    else:  # a potted plant
        draw.polygon(points((38, 64), (62, 64), (58, 86), (42, 86)), fill=(190, 110, 70))
        for dx, dy in ((-14, -22), (0, -30), (14, -22), (-8, -12), (8, -12)):
            x, y = 50 + dx, 64 + dy
            draw.ellipse(box(x - 7, y - 7, x + 7, y + 7), fill=(60, 140, 80))


def tiny_png(path: Path, color: tuple[int, int, int] = (200, 80, 40), side: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), color).save(path)
    return path


def demo_jobs() -> list[SyntheticJob]:
    """A demo-like catalog: six jobs, one failed, one that needed retries."""
    rate_limited = ErrorInfo("rate_limited", "429 Too Many Requests", 429)
    server = ErrorInfo("server_error", "502 Bad Gateway", 502)
    return [
        SyntheticJob(
            "sku-1001-chair",
            "modern pendant light, brushed metal",
            n=2,
            product="chair",
            retries=(rate_limited,),
        ),
        SyntheticJob(
            "sku-1002-lamp",
            "white marble countertop, soft daylight",
            feature=Feature.BACKGROUND,
            product="lamp",
        ),
        SyntheticJob(
            "sku-1003-vase",
            "warm sunset window light, linen tablecloth",
            feature=Feature.BACKGROUND,
            product="vase",
            retries=(server,),
        ),
        SyntheticJob("sku-1004-mug", "brass pendant lamp with a warm glow", n=3, product="mug"),
        SyntheticJob(
            "sku-1005-sofa",
            "scandinavian living room, oak floor, green plants",
            feature=Feature.BACKGROUND,
            product="sofa",
            outcome="failed",
            retries=(server, server),
            error=ErrorInfo("server_error", "Bad Gateway: the upstream model timed out", 502),
        ),
        SyntheticJob(
            "sku-1006-plant",
            "concrete shelf, morning light, minimal",
            feature=Feature.BACKGROUND,
            product="plant",
        ),
    ]


def records(out_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out_dir / LEDGER_NAME).read_bytes().splitlines()]
