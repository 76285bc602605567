"""Every command piped into ``head`` ends quietly; an unwritable folder is one line
(docs/cli.md#quiet-pipes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.e2e import REPO, write_catalog


def _piped_into_head(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    command = f"{sys.executable} -m pipeline {' '.join(args)} | head -1"
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_dry_run_and_status_into_head_end_without_a_traceback(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 400)
    dry = _piped_into_head(["run", str(manifest), "--dry-run"], tmp_path)
    assert b"Traceback" not in dry.stderr and dry.stderr == b"", dry.stderr
    assert dry.stdout.startswith(b"Manifest 'e2e'")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)  # the dry run kept its input cache in out/e2e
    lines = b"".join(
        b'{"ts":"t","job_id":"j%d","status":"started","key":"k"}\n' % i for i in range(20000)
    )
    (out / "ledger.jsonl").write_bytes(lines)
    status = _piped_into_head(["status", str(out), "--json"], tmp_path)  # megabytes of output
    assert status.stderr == b"", status.stderr
    assert status.returncode == 141  # pipefail: head closed our stdout, nothing else failed


def test_report_into_a_read_only_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "ledger.jsonl").write_bytes(b'{"ts":"t","job_id":"a","status":"started","key":"k"}\n')

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(out / "report.html"))

    # Root ignores chmod: refuse at the one seam every whole-file write goes through instead.
    monkeypatch.setattr("pipeline.review.page.atomic_write", refuse)
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot write" in err and "Permission denied" in err
