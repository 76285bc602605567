"""The reliability suite's toolkit: catalogs, fast profiles, CLI runs and log accounting.

Reuses ``tests.e2e_helpers`` (the real CLI in-process or as a subprocess) and
``tests.emulator_thread`` (the emulator on 127.0.0.1 in a background thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.e2e_helpers import REPO, run_cli
from tests.emulator_thread import RunningEmulator, emulator_thread
from tests.reliability.figures import tally, tally_faults

# Progress bar and report off (report tests turn it on), and a pace that never throttles.
QUIET = ["--no-progress", "--no-report", "--rpm", "60000"]
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


def write_catalog(folder: Path, count: int, *, n: int = 1) -> tuple[Path, dict[str, Expected]]:
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
    timeouts |= extra.pop("timeouts", {})
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


# -- running -----------------------------------------------------------------------------------


@contextmanager
def emulator(**config: Any) -> Iterator[RunningEmulator]:
    """``emulator_thread`` that adds its request log to the suite's fault figures.

    Tallied once the emulator has stopped: a slow call the client gave up on is logged only
    when its handler ends, and stopping the emulator is what wakes it.
    """
    started: RunningEmulator | None = None
    try:
        with emulator_thread(**config) as started:
            yield started
    finally:
        if started is not None:
            tally_faults(started.log)


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
    tally("verified/jobs whole", len(expected))


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


# -- accounting: what the emulator injected vs what the pipeline counted ---------------------

# A feature-call fault and the retry reason it must produce (stats.py: retry/reason/<kind>).
# ``forget`` is absent: a forgotten asset is uploaded again, which is not a retry.
FEATURE_FAULT_REASON = {
    "drop": "connection",
    "429": "rate_limited",
    "rate_limit": "rate_limited",
    "5xx": "server_error",
    "slow": "timeout",  # the profile's feature timeout is shorter than slow_seconds
    "malformed": "bad_response",
    "failed": "record_failed",
}


def observed_retries(out: Path) -> Counter[tuple[str, str]]:
    """Retries the pipeline recorded, by (step, reason), from the ledger's retrying lines."""
    return Counter(
        (line["step"], line["error"]["kind"])
        for line in records(out)
        if line["status"] == "retrying"
    )


def expected_retries(log: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Retries the pipeline must have made, by (step, reason), from the emulator's log alone.

    Exact when every job succeeded (a job that fails makes no retry after its last try).
    """
    expected: Counter[tuple[str, str]] = Counter()
    for entry in log:
        if entry["route"] == "features" and entry["fault"] in FEATURE_FAULT_REASON:
            expected["feature", FEATURE_FAULT_REASON[entry["fault"]]] += 1
        elif entry["route"] == "assets" and entry["fault"] == "drop":
            expected["upload", "connection"] += 1  # a POST: aiohttp never re-sends it
    for entries in _downloads_by_result(log).values():
        expected.update(("download", reason) for reason in replay_downloads(entries))
    return expected


def _downloads_by_result(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """GETs grouped by the result they fetch (signed URL and asset host), in arrival order.

    One job fetches its results one at a time, so the order in the log is the client's order.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in log:
        if entry["route"] in ("temporary", "asset") and entry["method"] == "GET":
            path = entry["path"].removeprefix("/s3/asset.1min.ai/").removeprefix("/asset/")
            grouped.setdefault(path, []).append(entry)
    return grouped


def replay_downloads(entries: list[dict[str, Any]]) -> list[str]:
    """The retry reasons the client must have recorded for one result, replaying its logic.

    One fetch attempt tries the signed URL (result 0 only), then the asset host; it fails only
    if both fail, with the reason of the last failure that is not a 403/404 (client.py
    ``fetch_result``). aiohttp re-sends an idempotent GET once, by itself, when the server
    drops the connection before answering (RFC 9112 §9.3.1), so a logged drop reaches the
    pipeline only if that second GET is dropped too: drops are consumed in pairs here.
    """
    pending = list(entries)
    signed = bool(pending) and pending[0]["route"] == "temporary"
    reasons: list[str] = []
    while pending:
        failures = []
        for route in ("temporary", "asset") if signed else ("asset",):
            outcome = _one_get(pending, route)
            if outcome is None:
                break
            failures.append(outcome)
        else:
            permanent = [f for f in failures if f != "not_found"]
            reasons.append(permanent[-1] if permanent else "bad_response")
            continue
        assert not pending, f"requests after a successful download: {pending}"
    return reasons


def _one_get(pending: list[dict[str, Any]], route: str) -> str | None:
    """Consume one ``client.download`` call; None on success, else how it failed."""
    entry = pending.pop(0)
    assert entry["route"] == route, (route, entry)
    if entry["fault"] == "drop":
        entry = pending.pop(0)  # aiohttp's own re-send
        assert entry["route"] == route, (route, entry)
        if entry["fault"] == "drop":
            return "connection"
    if entry["fault"] in ("truncate", "huge"):
        return "bad_response"
    if entry["status"] in (403, 404):  # an expired signature, or an unknown path
        return "not_found"
    assert entry["status"] == 200, entry
    return None


def retries_by_reason(retries: Counter[tuple[str, str]]) -> dict[str, int]:
    """(step, reason) counts summed per reason, keyed as summary.json's stats are."""
    totals: Counter[str] = Counter()
    for (_step, reason), count in retries.items():
        totals[f"retry/reason/{reason}"] += count
    return dict(totals)


def paid_feature_calls(log: list[dict[str, Any]]) -> int:
    return sum(1 for e in log if e["route"] == "features" and e["credits"])
