"""Without --ray nothing of Ray is loaded: the CLI and a dry run import no `ray`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.e2e import write_catalog

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from pipeline.cli import main
import pipeline.distributed
code = 0
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("RAY" if any(m == "ray" or m.startswith("ray.") for m in sys.modules) else "NO-RAY")
"""


def test_a_dry_run_imports_no_ray(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 3)
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--dry-run"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "NO-RAY", done.stderr


def test_check_shared_inputs_refuses_local_files_off_this_machine(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from pipeline.distributed.driver import check_shared_inputs
    from pipeline.manifest import load_manifest
    from pipeline.models import Job

    manifest = load_manifest(write_catalog(tmp_path, 2))
    jobs = [j for j in manifest.iter_jobs() if isinstance(j, Job)]
    assert check_shared_inputs(jobs, "local") == []
    problems = check_shared_inputs(jobs, "ray://head:10001")
    assert len(problems) == 4  # an image and a mask per job
    assert "local file" in problems[0] and "--ray local" in problems[0]
