"""SPEC 6: a succeeded job whose outputs are gone is fetched again from its stored result when
that still works (free), else ``missing`` in ``status`` and re-bought only with --redo-missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.ledger import read_ledger
from pipeline.provenance import read_provenance
from tests.e2e_helpers import assert_decodes, records, run_cli, run_inprocess, write_catalog
from tests.emulator_thread import emulator_thread

FAST = ["--no-progress", "--no-report", "--rpm", "6000"]


def _status(out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    result = run_inprocess(["status", str(out), "--json"], {}, monkeypatch, capsys)
    return {job["id"]: job["state"] for job in json.loads(result.stdout)["jobs"]}


def test_a_deleted_output_is_fetched_again_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 4, images=2, n=2)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        args = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        spent = read_ledger(out / "ledger.jsonl").credits_spent
        (out / "sku-0001" / "1.png").unlink()
        shutil_rmtree(out / "sku-0002")
        assert _status(out, monkeypatch, capsys)["sku-0001"] == "missing"

        result = run_inprocess(args, emulator.env, monkeypatch, capsys)
        assert result.code == 0, result.streams
        assert "re-fetched free from their stored results: 2 jobs" in result.stdout
        assert len(emulator.calls("features")) == 4  # nothing bought again
        assert len(emulator.calls("results")) == 2  # one look at each stored record
    for job_id in ("sku-0001", "sku-0002"):
        for index in (0, 1):
            path = out / job_id / f"{index}.png"
            assert_decodes(path, (1024, 1024))
            assert read_provenance(path.read_bytes()) is not None  # marked like any download
    refetched = [r for r in records(out) if r["status"] == "refetched"]
    assert sorted(r["job_id"] for r in refetched) == ["sku-0001", "sku-0002"]
    assert sorted(refetched[0]["outputs"]) == [f"{refetched[0]['job_id']}/{i}.png" for i in (0, 1)]
    ledger = read_ledger(out / "ledger.jsonl")
    assert ledger.credits_spent == spent  # free
    assert set(_status(out, monkeypatch, capsys).values()) == {"succeeded"}


def test_a_gone_stored_result_stays_missing_until_redo_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each --emulator run starts a fresh emulator: the first run's records are gone, as when
    # the API expired them.
    manifest = write_catalog(tmp_path, 3, images=1)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--emulator", *FAST]
    assert run_inprocess(args, {}, monkeypatch, capsys).code == 0
    spent = read_ledger(out / "ledger.jsonl").credits_spent
    (out / "sku-0001" / "0.png").unlink()

    result = run_inprocess(args, {}, monkeypatch, capsys)
    assert result.code == 0, result.streams
    assert "missing (stored result gone): 1 jobs; --redo-missing buys them again" in result.stdout
    assert read_ledger(out / "ledger.jsonl").credits_spent == spent  # bought nothing
    assert _status(out, monkeypatch, capsys)["sku-0001"] == "missing"

    dry = run_inprocess([*args, "--redo-missing", "--dry-run"], {}, monkeypatch, capsys)
    assert dry.code == 0 and "redo" in dry.stdout, dry.streams
    assert read_ledger(out / "ledger.jsonl").credits_spent == spent

    result = run_inprocess([*args, "--redo-missing"], {}, monkeypatch, capsys)
    assert result.code == 0, result.streams
    ledger = read_ledger(out / "ledger.jsonl")
    bought = [r["job_id"] for r in records(out) if r["status"] == "submitted"]
    assert bought.count("sku-0001") == 2 and bought.count("sku-0000") == 1  # exactly that job
    assert ledger.credits_spent > spent
    assert_decodes(out / "sku-0001" / "0.png", (1024, 1024))
    assert set(_status(out, monkeypatch, capsys).values()) == {"succeeded"}


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
