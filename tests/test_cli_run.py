"""The run command's contract (docs/cli.md#pipeline-run): usage errors, the default OUT, canaries,
status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.e2e import QUICK_POLLS, REPO, run_cli, states, write_catalog
from tests.helpers.emulator import emulator_thread

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


def test_an_api_base_without_a_scheme_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 2)
    with pytest.raises(SystemExit) as exited:
        run_cli(["run", str(manifest), "--api-base", "127.0.0.1:8765"], {}, monkeypatch)
    assert exited.value.code == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_out_defaults_beside_the_manifest_whatever_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path / "project", 3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with emulator_thread() as emulator:
        relative = os.path.relpath(manifest, elsewhere)
        assert run_cli(["run", relative, *FAST], emulator.env, monkeypatch) == 0
        sent = len(emulator.log)
        monkeypatch.chdir(tmp_path)  # cron without cd: another current folder
        assert run_cli(["run", str(manifest), *FAST], emulator.env, monkeypatch) == 0
        assert len(emulator.log) == sent  # the same ledger was found: nothing sent again
    assert (tmp_path / "project" / "out" / "e2e" / "ledger.jsonl").is_file()
    assert not (elsewhere / "out").exists()


def test_limit_runs_a_canary_and_only_runs_the_named_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 6)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        base = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli([*base, "--dry-run", "--limit", "2"], emulator.env, monkeypatch) == 0
        assert "held 4" in capsys.readouterr().out
        assert run_cli([*base, "--limit", "2"], emulator.env, monkeypatch) == 0
        assert sorted(states(out)) == ["sku-0000", "sku-0001"]
        ids = tmp_path / "ids.json"
        ids.write_text(json.dumps({"rejected": ["sku-0005"]}))  # the review page's export
        assert run_cli([*base, "--only", f"@{ids}"], emulator.env, monkeypatch) == 0
        assert sorted(states(out)) == ["sku-0000", "sku-0001", "sku-0005"]
        assert len(emulator.calls("features")) == 3
        capsys.readouterr()
        assert run_cli([*base, "--only", "sku-0003,nope"], emulator.env, monkeypatch) == 2
        assert "'nope'" in capsys.readouterr().err and len(emulator.calls("features")) == 3


def test_status_lists_every_manifest_job_and_exits_1_until_all_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 5)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        base = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli([*base, "--limit", "2"], emulator.env, monkeypatch) == 0
        capsys.readouterr()
        assert run_cli(["status", str(out), "--json"], {}, monkeypatch) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["total"] == 5 and report["counts"] == {"pending": 3, "succeeded": 2}
        assert {job["id"] for job in report["jobs"]} == {f"sku-{j:04d}" for j in range(5)}
        assert run_cli(["status", str(out)], {}, monkeypatch) == 1
        assert "pending    3" in capsys.readouterr().out
        assert run_cli(base, emulator.env, monkeypatch) == 0
        assert run_cli(["status", str(out)], {}, monkeypatch) == 0
        (out / "sku-0001" / "0.png").unlink()
        capsys.readouterr()
        assert run_cli(["status", str(out), "--json"], {}, monkeypatch) == 1
        assert json.loads(capsys.readouterr().out)["counts"]["missing"] == 1


def test_an_emulator_option_combination_argparse_cannot_check_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    assert main(["emulator", "--rpm-limit", "5", "--window-seconds", "3", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: pipeline emulator: rpm_limit")


def test_doctor_through_the_cli_spends_nothing_and_says_what_it_found(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import main

    with emulator_thread() as emulator:
        assert run_cli(["doctor"], emulator.env, monkeypatch) == 0
        assert emulator.calls("features", None) == []  # no credit spent
    out = capsys.readouterr().out
    assert "ready" in out and emulator.env["ONEMIN_API_KEY"] not in out
    assert main(["doctor", "--api-base", "http://127.0.0.1:9"]) == 1  # no key, or unreachable


@pytest.mark.slow  # a fresh interpreter each
@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_a_command_line_loads_its_own_command_not_the_runs_stack(command: str) -> None:
    probe = (
        "import sys; from pipeline.cli import build_parser; "
        f"build_parser({command!r}); "
        "print(sorted(m for m in ('pipeline.runner.start', 'pipeline.scheduler', "
        "'pipeline.review.server', 'pipeline.cli.doctor') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert loaded.stdout.strip() == "[]"
