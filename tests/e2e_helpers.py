"""Building blocks for end-to-end tests: a catalog on disk and the real CLI to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent


def write_catalog(
    folder: Path, count: int, *, images: int = 3, n: int = 1, prompt: str = "studio shot"
) -> Path:
    """A manifest of ``count`` inpaint jobs over ``images`` distinct photos (shared inputs)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.new("RGB", (96, 64), (40 * i % 255, 120, 200)).save(folder / "img" / f"p{i}.png")
        mask = Image.new("L", (96, 64), 0)
        mask.paste(255, (20, 10, 70, 50))
        mask.save(folder / "img" / f"m{i}.png")
    jobs = [
        {
            "id": f"sku-{j:04d}",
            "image": f"img/p{j % images}.png",
            "mask": f"img/m{j % images}.png",
            "prompt": f"{prompt} {j}",
        }
        for j in range(count)
    ]
    manifest = {
        "version": 1,
        "name": "e2e",
        "defaults": {"type": "inpaint", "n": n, "quality": "low"},
        "jobs": jobs,
    }
    path = folder / "catalog.yaml"
    path.write_text(json.dumps(manifest))  # JSON is YAML
    return path


def run_cli(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """The real CLI, in this process (fast); the environment is the user's."""
    monkeypatch.delenv("ONEMIN_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return main(args)


def spawn_cli(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """The real CLI as its own process, for kill -9 and signals."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        env=full_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def ledger_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "ledger.jsonl"
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue  # a torn line from a killed run
    return lines


def latest_states(out: Path) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in ledger_lines(out):
        if line["status"] != "uploaded":
            states[line["job_id"]] = line["status"]
    return states


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def assert_outputs_whole(out: Path, job_ids: list[str], n: int, size: tuple[int, int]) -> None:
    for job_id in job_ids:
        files = sorted(p for p in (out / job_id).iterdir() if p.is_file() and p.name[0] != ".")
        assert [p.stem for p in files] == [str(i) for i in range(n)], job_id
        for path in files:
            with Image.open(path) as image:
                image.load()
                assert image.size == size
