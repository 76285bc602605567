"""``pipeline run --ray``: the real CLI on a local Ray instance, and refusals up front."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.helpers.e2e import QUICK_POLLS, REPO, purchases, states, write_catalog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_run_with_ray_local_does_every_job_once(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 6)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--emulator", "--ray", "local"]
    args += ["--shards", "2", "--no-progress", "--no-report", "--rpm", "60000"]
    args += ["--config", str(QUICK_POLLS)]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        capture_output=True,
        timeout=200,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert set(states(out).values()) == {"succeeded"} and len(states(out)) == 6
    bought = purchases(out)
    assert sorted(bought) == sorted(states(out))  # one purchase per job, the driver the writer


def test_local_inputs_are_refused_for_a_remote_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 2)
    code = main(["run", str(manifest), "--dry-run", "--ray", "ray://head:10001"])
    assert code == 2
    err = capsys.readouterr().err
    assert "local file" in err and "--ray local" in err
