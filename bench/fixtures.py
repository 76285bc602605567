"""Inputs the scenarios run on: noisy big PNGs, small shared images, catalogs, a long ledger.

Everything is deterministic (seeded) and written into a scratch folder the caller removes.
"""

from __future__ import annotations

import csv
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from PIL import Image, ImageDraw

from pipeline.manifest import load_manifest
from pipeline.models import PlannedJob
from pipeline.plan.prepare import scan

SIZE = (1024, 1024)  # an allowed output size, so results come back at the input's size
# Noise of this many levels per channel keeps a 1024x1024 PNG at about 2 MB whatever zlib does.
NOISE_LEVELS = 26
NOISE_FLOOR = 100
PROMPT = "studio shot, soft daylight"


# -- images -------------------------------------------------------------------------------------


def noisy_png_variants(folder: Path, count: int, seed: int = 1) -> list[Path]:
    """``count`` distinct ~2 MB noisy PNGs (1024x1024 RGB).

    The noise is encoded once; each variant adds a different ``tEXt`` chunk before ``IEND``. So
    every file has its own bytes (its own digest: uploaded, rendered and stored as a distinct
    image by client and emulator alike) for the price of one encode.
    """
    folder.mkdir(parents=True, exist_ok=True)
    noise = random.Random(seed).randbytes(SIZE[0] * SIZE[1] * 3)
    levels = bytes(NOISE_FLOOR + value % NOISE_LEVELS for value in range(256))
    base = folder / "base.png"
    Image.frombytes("RGB", SIZE, noise.translate(levels)).save(base, compress_level=1)
    data = base.read_bytes()
    base.unlink()
    body, iend = data[:-12], data[-12:]
    paths = []
    for index in range(count):
        path = folder / f"photo-{index:05d}.png"
        path.write_bytes(body + _png_chunk(b"tEXt", b"bench\x00variant %d" % index) + iend)
        paths.append(path)
    return paths


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def edit_mask(path: Path, size: tuple[int, int] = SIZE) -> Path:
    """Black (keep) with a small white square (edit): the result keeps most source pixels."""
    mask = Image.new("L", size, 0)
    width, height = size
    ImageDraw.Draw(mask).rectangle(
        (width * 7 // 16, height * 7 // 16, width * 9 // 16, height * 9 // 16), fill=255
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path)
    return path


def small_images(folder: Path, count: int, side: int = 64) -> list[tuple[Path, Path]]:
    """``count`` small (image, mask) pairs: cheap for the emulator to render, tiny to move."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(count):
        image = folder / f"p{index}.png"
        colour = (40 + index * 37 % 200, 120, 200 - index * 11 % 150)
        Image.new("RGB", (side, side), colour).save(image)
        pairs.append((image, edit_mask(folder / f"m{index}.png", (side, side))))
    return pairs


# -- manifests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    image: str
    mask: str
    prompt: str = PROMPT


def write_catalog(folder: Path, rows: Iterator[Row], name: str = "bench") -> Path:
    """``folder/NAME.yaml`` with ``items: NAME.csv`` (inpaint, 1024x1024); the rows streamed."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.csv").open("w", encoding="utf-8", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(("id", "image", "mask", "prompt"))
        writer.writerows((row.id, row.image, row.mask, row.prompt) for row in rows)
    manifest = folder / f"{name}.yaml"
    manifest.write_text(
        f"version: 1\nname: {name}\n"
        "defaults: {type: inpaint, size: 1024x1024, quality: low}\n"
        f"items: {name}.csv\n",
        encoding="utf-8",
    )
    return manifest


def shared_rows(count: int, pairs: list[tuple[Path, Path]], base: Path) -> Iterator[Row]:
    """``count`` jobs cycling over a handful of shared (image, mask) pairs."""
    names = [(image.relative_to(base), mask.relative_to(base)) for image, mask in pairs]
    for index in range(count):
        image, mask = names[index % len(names)]
        yield Row(f"sku-{index:07d}", image.as_posix(), mask.as_posix())


def write_profile(path: Path, **groups: dict[str, object]) -> Path:
    """A ``--config`` settings profile (YAML; JSON is YAML)."""
    path.write_bytes(orjson.dumps(groups))
    return path


# -- a long ledger ------------------------------------------------------------------------------


def planned_jobs(manifest: Path, limit: int) -> list[PlannedJob]:
    """The first ``limit`` jobs as the pipeline plans them (their content keys)."""
    jobs: list[PlannedJob] = []
    for item in scan(load_manifest(manifest)):
        if isinstance(item, PlannedJob):
            jobs.append(item)
            if len(jobs) == limit:
                break
    return jobs


DONE_FILES = 1024  # real output files the done jobs of a fabricated ledger are links to


def write_done_ledger(path: Path, templates: list[PlannedJob], lines: int) -> int:
    """A ledger of ``lines`` lines as a run writes them: started, submitted, succeeded per job.

    Job ``sku-N`` gets the content key of ``templates[N % len(templates)]``, which must be the
    planned jobs of a catalog made by ``shared_rows`` over the same pairs (job N uses pair
    N % k, and ids do not enter the key). Returns how many jobs it marks done.

    Each done job's output is where the store puts it (``<id>/0.png``) and is there, a hard
    link to one of ``DONE_FILES`` files, as after a real run: a resume finds its outputs and has
    nothing to fetch again, and the fold keeps them as the store's rule, not as text.
    """
    keys = [planned.key for planned in templates]
    done = lines // 3
    bases = path.parent / ".bench-outputs"
    bases.mkdir(exist_ok=True)
    for number in range(DONE_FILES):
        (bases / f"{number:04d}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with path.open("wb") as sink:
        for index in range(done):
            job_id = f"sku-{index:07d}"
            folder = path.parent / job_id
            folder.mkdir(exist_ok=True)
            os.link(bases / f"{index % DONE_FILES:04d}.png", folder / "0.png")
            sink.write(_job_lines(job_id, keys[index % len(keys)], index))
        for extra in range(lines - done * 3):  # pad with started lines of the next job
            sink.write(_line(f"sku-{done:07d}", "started", keys[done % len(keys)], extra))
    return done


def _line(job_id: str, status: str, key: str, index: int, **fields: object) -> bytes:
    ts = f"2025-01-01T00:{index // 60_000 % 60:02d}:{index // 1000 % 60:02d}.{index % 1000:03d}Z"
    record = {"ts": ts, "job_id": job_id, "status": status, "key": key, **fields}
    return orjson.dumps(record) + b"\n"


def _job_lines(job_id: str, key: str, index: int) -> bytes:
    result = f"development/images/2025_01_01_00_00_00_000_{index}_inpainted.png"
    url = f"http://127.0.0.1:1/s3/asset.1min.ai/{result}?X-Amz-Signature={index:064d}"
    uuid = f"{index:08x}-0000-4000-8000-{index:012x}"  # the API's records are uuids
    return b"".join(
        (
            _line(job_id, "started", key, index, job={"feature": "IMAGE_INPAINTER"}),
            _line(
                job_id,
                "submitted",
                key,
                index,
                attempt=1,
                credits=1000,
                uuid=uuid,
                result_paths=[result],
                temporary_url=url,
                used_credit=index * 1000,
                credit_limit=10**15,
            ),
            _line(
                job_id,
                "succeeded",
                key,
                index,
                outputs=[f"{job_id}/0.png"],
                attempts=1,
                credits=1000,
                uuid=uuid,
                timings={"upload": 0.01, "feature": 2.0, "download": 0.02, "total": 2.03},
            ),
        )
    )
