"""A ledger line that parses as JSON but holds the wrong types (a hand edit, a tool that
rewrote the file, bit rot inside a string) is one more kind of corrupt line: every reader of
the ledger (``run``'s resume, ``status``, ``report``) skips it, never crashes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.ledger import read_ledger
from pipeline.review.view import read_ledger_view
from tests.helpers.e2e import write_mixed_catalog as write_catalog
from tests.helpers.e2e import write_profile
from tests.reliability.figures import tally
from tests.reliability.harness import (
    QUIET,
    emulator,
)
from tests.reliability.test_hostile_manifests import VALUES

# Every field a ledger line may carry (ledger.record_for), plus nested ones readers open.
FIELDS = (
    "job_id",
    "status",
    "key",
    "job",
    "assets",
    "attempt",
    "attempts",
    "credits",
    "uuid",
    "result_paths",
    "temporary_url",
    "used_credit",
    "credit_limit",
    "step",
    "delay",
    "error",
    "outputs",
    "timings",
    "superseded",
    "ts",
)
STATUSES = ("started", "uploaded", "submitted", "retrying", "succeeded", "failed")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A finished run (with retries, so every kind of line is there) and its manifest args."""
    folder = tmp_path_factory.mktemp("hostile-ledger")
    manifest, _expected = write_catalog(folder, 4)
    out = folder / "out"
    # One job at a time: the seeded faults meet the calls in one order (an HTML 5xx of a feature
    # call twice for one job would fail it, outcome_unknown).
    args = ["run", str(manifest), "--out", str(out), *QUIET, "--concurrency", "1"]
    args += ["--config", str(write_profile(folder))]  # quick polls and backoffs
    with emulator(rate_5xx=0.3, rate_truncate=0.3, seed=2) as emu:
        mp = pytest.MonkeyPatch()
        for name, value in emu.env.items():
            mp.setenv(name, value)
        try:
            assert main(args) == 0
        finally:
            mp.undo()
    return out, args


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    line=st.integers(min_value=0, max_value=200),
    field=st.sampled_from(FIELDS),
    value=VALUES,
    status=st.sampled_from(STATUSES) | st.none(),
)
@example(line=0, field="attempt", value="abc", status="submitted")
@example(line=0, field="assets", value=[1, 2], status="uploaded")
@example(line=0, field="assets", value={"image": {"digest": ["x"], "path": "p"}}, status=None)
@example(line=0, field="error", value="boom", status="failed")
@example(line=0, field="status", value=["x"], status=None)
@example(line=0, field="result_paths", value=[{"a": 1}], status="submitted")
def test_a_line_of_the_wrong_types_is_skipped_by_every_reader(
    line: int,
    field: str,
    value: Any,
    status: str | None,
    real_run: tuple[Path, list[str]],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, args = real_run
    out = tmp_path_factory.mktemp("mutated")
    shutil.copy(source / "ledger.jsonl", out / "ledger.jsonl")
    _mutate(out / "ledger.jsonl", line, field, value, status)
    tally("hostile/hypothesis examples")

    read_ledger(out / "ledger.jsonl")
    read_ledger_view(out / "ledger.jsonl")
    capsys.readouterr()
    assert main(["status", str(out)]) in (0, 1)  # 1: a mutated line left a job unfinished
    # The resume's reading (and planning) of the ledger, without sending anything.
    dry = [*args[:3], str(out), *args[4:], "--dry-run"]
    assert main(dry) == 0
    assert "Traceback" not in "".join(capsys.readouterr())


def _mutate(ledger: Path, line: int, field: str, value: Any, status: str | None) -> None:
    """Set ``field`` to ``value`` on one line (chosen by ``line``, among those of ``status``)."""
    lines = ledger.read_bytes().splitlines()
    candidates = [
        i for i, raw in enumerate(lines) if status is None or orjson.loads(raw)["status"] == status
    ] or list(range(len(lines)))
    index = candidates[line % len(candidates)]
    record = orjson.loads(lines[index])
    record[field] = value
    # json, not orjson: it writes what orjson refuses (NaN, integers past 64 bits), as a
    # foreign tool might; orjson then fails to read that line, which is fine too.
    lines[index] = json.dumps(record).encode()
    ledger.write_bytes(b"\n".join(lines) + b"\n")
