from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.events import RequestSent
from pipeline.reporting.metrics import write_metrics
from pipeline.reporting.stats import RunStats


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


def test_requests_by_kind_per_image_and_the_budget_used(tmp_path: Path) -> None:
    stats = RunStats(clock=Clock(), rpm=150.0)
    requests = [("upload", 0.0), ("feature", 0.4), ("poll", 20.4)] * 2  # two edits, three each
    for kind, moment in requests:
        stats.clock.now = moment  # type: ignore[attr-defined]
        stats(RequestSent("job", kind, waited=0.0))
    stats.counters["images/written"] = 2
    summary = stats.request_summary()
    assert summary["sent"] == {"uploads": 2, "calls": 2, "polls": 2, "total": 6}
    assert summary["per_image"] == {"uploads": 1.0, "calls": 1.0, "polls": 1.0, "total": 3.0}
    # 20.4 s at 150 a minute allow 51 + 1 requests: 6 of them were sent.
    assert summary["budget_use"] == round(6 / 52, 3)
    path = run(tmp_path / "catalog.prom", requests=summary)
    got = samples(path)
    m = ("manifest", "catalog")
    assert got[("onemin_pipeline_requests", (("kind", "poll"), m))] == 2
    assert got[("onemin_pipeline_requests_per_image", (("kind", "call"), m))] == 1.0
    assert got[("onemin_pipeline_requests_per_image", (("kind", "total"), m))] == 3.0
    assert got[("onemin_pipeline_rate_budget_use", (m,))] == round(6 / 52, 3)


def test_nothing_delivered_has_no_requests_per_image(tmp_path: Path) -> None:
    stats = RunStats(rpm=150.0)
    stats(RequestSent("job", "upload", waited=0.0))
    summary = stats.request_summary()
    assert summary["per_image"] is None and summary["sent"]["total"] == 1
    got = samples(run(tmp_path / "catalog.prom", requests=summary))
    assert not any(name == "onemin_pipeline_requests_per_image" for name, _ in got)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_figures_edits_a_minute_beside_what_the_budget_allows() -> None:
    from pipeline.events import ConcurrencyChanged, JobSucceeded
    from pipeline.reporting.progress import edits_text
    from pipeline.reporting.stats import in_flight_text

    clock = Clock()
    stats = RunStats(clock=clock, rpm=150.0)
    assert edits_text(stats) == "-" and stats.budget_allows() is None
    for edit in range(150):  # an edit every 0.8 s, two requests each
        clock.now = edit * 0.8
        stats(RequestSent(f"j{edit}", "upload", 0.0))
        stats(RequestSent(f"j{edit}", "feature", 0.0))
        stats(JobSucceeded(f"j{edit}", "k", ("x.png",), 1, 1000, "u"))
    stats(ConcurrencyChanged(30, 75.0))
    assert stats.budget_allows() == 75.0  # 150 a minute at two requests an edit
    assert abs((stats.edits_per_minute() or 0) - 75.0) <= 1.0  # over the last minute
    assert edits_text(stats).endswith(" of 75.0") and len(stats.recent_ends) <= 76
    assert in_flight_text(len(stats.in_flight), stats.limit) == "0/30"
