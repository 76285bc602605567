"""The Python API at the package's face: what an orchestrator (Airflow, Dagster) calls."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import pipeline
from tests.helpers.e2e import QUICK_POLLS, write_catalog


@pytest.mark.slow  # whole runs against the emulator
def test_run_validate_status_export_against_the_emulator(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 4)
    assert pipeline.validate(manifest).ok

    result = pipeline.run(manifest, emulator=True, rpm=60_000, report=False, config=QUICK_POLLS)
    assert isinstance(result, pipeline.RunResult)
    assert result.exit_code == pipeline.ExitCode.OK and result.ok
    assert (result.succeeded, result.failed, result.skipped) == (4, 0, 0)
    assert result.summary["counts"]["succeeded"] == 4
    assert (result.state_dir / "ledger.jsonl").is_file()

    again = pipeline.run(manifest, emulator=True, rpm=60_000, report=False, config=QUICK_POLLS)
    assert (again.succeeded, again.skipped, again.exit_code) == (0, 4, 0)  # resumed: nothing

    status = pipeline.status(result.state_dir)
    assert status.all_succeeded and status.states["succeeded"] == 4

    exported = pipeline.export(result.state_dir, str(tmp_path / "shop"))
    assert (exported.copied, exported.unchanged) == (4, 0)
    assert len(list((tmp_path / "shop").glob("*.png"))) == 4


@pytest.mark.slow  # whole runs against the emulator
def test_nothing_is_printed_unless_a_console_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 2)
    pipeline.run(manifest, emulator=True, rpm=60_000, report=False, config=QUICK_POLLS)
    assert capsys.readouterr() == ("", "")
    out = io.StringIO()
    pipeline.run(
        manifest,
        emulator=True,
        console=pipeline.Console(out, None),
        report=False,
        config=QUICK_POLLS,
    )
    assert "2 skipped" in out.getvalue()


def test_a_dry_run_returns_the_plan_and_sends_nothing(tmp_path: Path) -> None:
    manifest = write_catalog(tmp_path, 3)
    result = pipeline.run(manifest, dry_run=True)
    assert result.dry_run and result.plan is not None
    assert result.plan.total.jobs == 3
    # Nothing sent, no ledger; only the stat cache of the inputs it read (docs/ledger.md).
    assert not (result.state_dir / "ledger.jsonl").exists()


def test_what_keeps_a_run_from_starting_is_raised_from_the_one_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONEMIN_API_KEY", raising=False)
    manifest = write_catalog(tmp_path, 1)
    with pytest.raises(pipeline.UsageError, match="No API key"):
        pipeline.run(manifest)

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"version": 1, "jobs": [{"id": "a", "image": "nope.png"}]}))
    with pytest.raises(pipeline.PlanRefused) as refused:
        pipeline.run(bad, emulator=True)
    assert refused.value.summary.problem_count >= 1
    assert isinstance(refused.value, pipeline.PipelineError)
    assert not pipeline.validate(bad).ok
    assert pipeline.validate(bad).exit_code == pipeline.ExitCode.USAGE

    with pytest.raises(pipeline.UsageError, match="no ledger"):
        pipeline.status(tmp_path / "nowhere")
    with pytest.raises(TypeError):
        pipeline.run(manifest, no_such_option=1)


@pytest.mark.slow  # whole runs against the emulator
def test_the_key_given_to_run_never_reaches_a_file(tmp_path: Path) -> None:
    secret = "sk-python-api-" + "9" * 24
    manifest = write_catalog(tmp_path, 2)
    result = pipeline.run(
        manifest,
        api_key=secret,
        emulator=True,
        rpm=60_000,
        config=QUICK_POLLS,
        log_file=tmp_path / "run.log",
    )
    assert result.ok
    for path in [*result.state_dir.rglob("*"), tmp_path / "run.log"]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in repr(result)
