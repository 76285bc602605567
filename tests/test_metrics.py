from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.reporting.metrics import write_metrics


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, parsed by prometheus-client's own text parser."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def run(path: Path, **overrides: Any) -> Path:
    values: dict[str, Any] = {
        "jobs_by_state": {"succeeded": 10, "failed": 1, "pending": 2, "rejected": 0},
        "credits_run": 3000.0,
        "credits_total": 31000.0,
        "last_run_ts": 1796091303.0,
        "last_success_ts": 1796091303.0,
        "exit_code": 0,
        "duration_s": 12.5,
        "manifest": "catalog",
    }
    values.update(overrides)
    return write_metrics(path, **values)


def test_metrics_file_parses_with_prometheus_parser(tmp_path: Path) -> None:
    path = run(tmp_path / "textfiles" / "catalog.prom", manifest_total=13)
    got = samples(path)
    m = ("manifest", "catalog")
    assert got[("onemin_pipeline_jobs", (m, ("state", "succeeded")))] == 10
    assert got[("onemin_pipeline_jobs", (m, ("state", "failed")))] == 1
    assert got[("onemin_pipeline_jobs", (m, ("state", "pending")))] == 2
    assert got[("onemin_pipeline_credits_spent", (m, ("scope", "run")))] == 3000
    assert got[("onemin_pipeline_credits_spent", (m, ("scope", "total")))] == 31000
    assert got[("onemin_pipeline_last_run_timestamp_seconds", (m,))] == 1796091303.0
    assert got[("onemin_pipeline_last_success_timestamp_seconds", (m,))] == 1796091303.0
    assert got[("onemin_pipeline_exit_code", (m,))] == 0
    assert got[("onemin_pipeline_run_duration_seconds", (m,))] == 12.5
    assert got[("onemin_pipeline_manifest_jobs", (m,))] == 13
    assert not list(tmp_path.glob("textfiles/*.tmp*"))  # the temporary file was renamed away


def test_failing_run_keeps_previous_last_success(tmp_path: Path) -> None:
    path = tmp_path / "catalog.prom"
    run(path, last_success_ts=1000.0, last_run_ts=1000.0)
    run(path, last_success_ts=None, last_run_ts=2000.0, exit_code=3)
    got = samples(path)
    m = ("manifest", "catalog")
    assert got[("onemin_pipeline_last_success_timestamp_seconds", (m,))] == 1000.0
    assert got[("onemin_pipeline_last_run_timestamp_seconds", (m,))] == 2000.0
    assert got[("onemin_pipeline_exit_code", (m,))] == 3


def test_never_succeeded_has_no_last_success(tmp_path: Path) -> None:
    path = tmp_path / "catalog.prom"
    path.write_text("this is not { a metrics file\n")  # a damaged earlier file is not fatal
    run(path, last_success_ts=None, exit_code=1)
    names = {name for name, _ in samples(path)}
    assert "onemin_pipeline_last_success_timestamp_seconds" not in names
    assert "onemin_pipeline_exit_code" in names


def test_previous_value_of_another_manifest_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "shared.prom"
    run(path, manifest="other", last_success_ts=500.0)
    run(path, manifest="catalog", last_success_ts=None, exit_code=1)
    names = {name for name, _ in samples(path)}
    assert "onemin_pipeline_last_success_timestamp_seconds" not in names
