"""The one set of end-to-end building blocks: catalogs on disk, the real CLI (in this process or
as its own), and checks of what a run left in OUT (outputs, ledger, secrets). The reliability
suite adds its fault accounting in ``tests/reliability/harness.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import orjson
import pytest
import yaml
from PIL import Image, ImageDraw

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
# A settings file that polls records at once and often (the emulator's edits are short): test
# runs pass it with --config unless they bring their own profile (``write_profile``).
QUICK_POLLS = Path(__file__).resolve().parent / "quick_polls.yaml"


class PollTimeouts(TypedDict):
    """Quick polls as Timeouts fields (typed, so ``Timeouts(**QUICK_POLL_TIMEOUTS)`` checks)."""

    poll_initial: float
    poll_max: float


QUICK_POLL_TIMEOUTS: PollTimeouts = {"poll_initial": 0.05, "poll_max": 0.2}


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


def spawn_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The real CLI as its own process, for kill -9 and signals."""
    return spawn_module("pipeline", args, env)


def summary(out: Path) -> dict[str, Any]:
    """The last run that sent anything, as ``OUT/summary.json`` records it."""
    run: dict[str, Any] = folder_summary(out)["last_run"]
    return run


def folder_summary(out: Path) -> dict[str, Any]:
    """``OUT/summary.json``: the folder as a whole (every manifest job, all runs)."""
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return data


SIZES = ((1024, 1024), (1024, 1536), (1536, 1024))
FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class Expected:
    """What one job must leave in OUT: ``n`` whole images of ``size``."""

    n: int
    size: tuple[int, int]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def streams(self) -> str:
        return self.stdout + self.stderr


# -- inputs ------------------------------------------------------------------------------------


def _unique_image(path: Path, j: int) -> None:
    """A 64x64 photo whose bytes are unique to job ``j`` (so no upload is shared by content)."""
    image = Image.new("RGB", (64, 64), (230, 230, 225))
    ImageDraw.Draw(image).rectangle((16, 16, 48, 48), fill=(40 + j % 200, 90, 160))
    image.putpixel((0, 0), (j % 256, j // 256 % 256, 7))
    image.save(path)


def _unique_mask(path: Path, j: int) -> None:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((8 + j % 16, 8, 40 + j % 16, 50), fill=255)
    mask.putpixel((63, 63), j % 200)  # unique bytes; far too small to change the edit
    mask.save(path)


def write_mixed_catalog(
    folder: Path, count: int, *, n: int = 1
) -> tuple[Path, dict[str, Expected]]:
    """A mixed catalog: two thirds inpaint (n images), one third background; sizes and
    formats vary. Every job has its own input bytes. Returns the manifest and what each job
    must produce."""
    (folder / "in").mkdir(parents=True, exist_ok=True)
    jobs, expected = [], {}
    for j in range(count):
        job_id = f"sku-{j:04d}"
        _unique_image(folder / "in" / f"p{j}.png", j)
        width, height = SIZES[j % len(SIZES)]
        job: dict[str, Any] = {
            "id": job_id,
            "image": f"in/p{j}.png",
            "prompt": f"studio shot {j}",
            "size": f"{width}x{height}",
        }
        if j % 3 == 2:
            job["type"] = "background"
            expected[job_id] = Expected(1, (width, height))
        else:
            _unique_mask(folder / "in" / f"m{j}.png", j)
            job |= {"mask": f"in/m{j}.png", "n": n, "output_format": FORMATS[j % 3]}
            expected[job_id] = Expected(n, (width, height))
        jobs.append(job)
    manifest = {
        "version": 1,
        "name": "reliability",
        "defaults": {"type": "inpaint", "quality": "low"},
        "jobs": jobs,
    }
    path = folder / "catalog.yaml"
    path.write_text(json.dumps(manifest))  # JSON is YAML
    return path, expected


def write_profile(
    folder: Path,
    *,
    feature: float = 10.0,
    download: float = 10.0,
    upload: float = 10.0,
    **extra: Any,
) -> Path:
    """A ``--config`` profile with millisecond backoff and the given timeouts.

    ``retry_after_max`` is small too: an announced Retry-After (the emulator says 1 s, or an
    HTTP date a second or two ahead) is honoured but capped, so the suite does not sleep.
    """
    timeouts = {"connect": 2.0, "upload": upload, "feature": feature, "download": download}
    timeouts |= QUICK_POLL_TIMEOUTS | extra.pop("timeouts", {})
    profile = {
        "retry": {
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "retry_after_max": 0.05,
            "jitter": 0.5,
            **extra.pop("retry", {}),
        },
        "timeouts": timeouts,
        **extra,
    }
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def run_inprocess(
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> CliResult:
    """The real CLI in this process, with its streams captured and checked for tracebacks."""
    capsys.readouterr()  # drop whatever came before
    code = run_cli(args, env, monkeypatch)
    captured = capsys.readouterr()
    result = CliResult(code, captured.out, captured.err)
    assert "Traceback" not in result.streams, result.streams
    return result


def spawn_module(module: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m module args`` from the repository root, streams piped."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=full_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes], timeout: float) -> CliResult:
    stdout, stderr = process.communicate(timeout=timeout)
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


# -- checking outputs --------------------------------------------------------------------------


def assert_outputs_whole(out: Path, expected: dict[str, Expected]) -> None:
    """Every listed job has exactly ``0..n-1`` images, each decoding at the requested size."""
    for job_id, want in expected.items():
        files = sorted(p for p in (out / job_id).iterdir() if p.is_file() and p.name[0] != ".")
        assert [p.stem for p in files] == [str(i) for i in range(want.n)], job_id
        for path in files:
            assert_decodes(path, want.size)


def assert_decodes(path: Path, size: tuple[int, int] | None = None) -> None:
    with Image.open(path) as image:
        image.load()  # a truncated file fails here, not at open()
        if size is not None:
            assert image.size == size, path


def assert_no_partial_final_files(out: Path) -> int:
    """Every file at a final name (``OUT/<id>/<n>.<ext>``) decodes; returns how many."""
    count = 0
    for path in out.glob("*/*.*"):
        if path.is_file() and not path.name.startswith(".") and path.stem.isdigit():
            assert_decodes(path)
            count += 1
    return count


def records(out: Path) -> list[dict[str, Any]]:
    """The ledger's well-formed records; torn, garbage and non-record lines are skipped.

    Independent of pipeline.ledger on purpose: the suite checks the ledger, not with it.
    Torn, garbage and non-record lines are skipped.
    """
    found = []
    for raw in (out / "ledger.jsonl").read_bytes().splitlines():
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("job_id"), str):
            found.append(record)
    return found


def purchases(out: Path) -> list[str]:
    """The job of each feature call the ledger says was paid: one per record, however many
    ``submitted`` lines it has (an async record has a second one once it finished)."""
    paid = {
        (line["job_id"], line.get("uuid") or f"line-{number}")
        for number, line in enumerate(records(out))
        if line["status"] == "submitted"
    }
    return sorted(job_id for job_id, _ in paid)


def states(out: Path) -> dict[str, str]:
    """Each job's latest status (``uploaded`` lines say nothing about where a job stands)."""
    latest: dict[str, str] = {}
    for record in records(out):
        if record.get("status") != "uploaded":
            latest[record["job_id"]] = record["status"]
    return latest


def assert_ledger_parses(out: Path, allow_torn_tail: bool = False) -> list[dict[str, Any]]:
    """Every ledger line is a whole JSON object with ts, job_id and status."""
    raw_lines = (out / "ledger.jsonl").read_bytes().split(b"\n")
    assert raw_lines[-1] == b"" or allow_torn_tail, "the ledger does not end with a newline"
    records = []
    for number, raw in enumerate(raw_lines[:-1], start=1):
        record = orjson.loads(raw)
        assert {"ts", "job_id", "status"} <= record.keys(), f"line {number}: {record}"
        records.append(record)
    return records


def scan_for_secret(out: Path, secret: str, streams: str = "") -> list[str]:
    """Every place under ``out`` (any file, any depth) or in ``streams`` holding ``secret``."""
    needle = secret.encode()
    found = [str(p) for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]
    if secret in streams:
        found.append("<captured streams>")
    return found
