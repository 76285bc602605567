"""`--metrics-file PATH`: a Prometheus textfile (node_exporter's textfile collector) per run.

Written with prometheus-client, so the format is exactly what Prometheus parses, and atomically
(`write_to_textfile` writes a temporary file and renames it), so a scrape never sees half a file.
Every metric carries a `manifest` label: one folder of textfiles can serve several catalogs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "onemin_pipeline_"
LAST_SUCCESS = f"{PREFIX}last_success_timestamp_seconds"
# The summary's request kinds as metric labels: kind="upload" | "call" | "poll" | "total".
METRIC_KINDS = {"uploads": "upload", "calls": "call", "polls": "poll"}


def write_metrics(
    path: Path | str,
    *,
    jobs_by_state: Mapping[str, int],
    credits_run: float,
    credits_total: float,
    last_run_ts: float,
    last_success_ts: float | None,
    exit_code: int,
    duration_s: float,
    manifest: str,
    manifest_total: int | None = None,
    possibly_charged: int = 0,
    requests: Mapping[str, Any] | None = None,
) -> Path:
    """Write the textfile; `last_success_ts=None` keeps the previous file's value.

    `jobs_by_state` holds states only (done, failed, pending, rejected...), so that
    `sum(onemin_pipeline_jobs)` is the manifest's size; that size, if given, is its own gauge.
    `requests` is the run summary's ``requests`` (``RunStats.request_summary``): API requests
    sent by kind, per delivered image, and the share of the rate budget used.

    An alert on "no success for 2 days" needs the timestamp of the last good run even after a
    failing one, so a failing run carries it forward instead of dropping it. Raises OSError when
    the file cannot be written (the caller says so in one line).
    """
    target = Path(path)
    if last_success_ts is None:
        last_success_ts = previous_last_success(target, manifest)
    registry = CollectorRegistry()
    labels = ("manifest",)
    jobs = Gauge(f"{PREFIX}jobs", "Manifest jobs by state", (*labels, "state"), registry=registry)
    for state, count in sorted(jobs_by_state.items()):
        jobs.labels(manifest, state).set(count)
    if manifest_total is not None:
        _single(registry, "manifest_jobs", "Jobs in the manifest", manifest, manifest_total)
    credits = Gauge(
        f"{PREFIX}credits_spent",
        "Credits spent by this run (scope=run) and by every run on the folder (scope=total)",
        (*labels, "scope"),
        registry=registry,
    )
    credits.labels(manifest, "run").set(credits_run)
    credits.labels(manifest, "total").set(credits_total)
    _single(
        registry,
        "possibly_charged",
        "Feature calls whose answer was lost after sending (maybe charged), over every run",
        manifest,
        possibly_charged,
    )
    _single(
        registry, "last_run_timestamp_seconds", "When the last run ended", manifest, last_run_ts
    )
    if last_success_ts is not None:
        _single(
            registry,
            "last_success_timestamp_seconds",
            "When the last run that exited 0 ended",
            manifest,
            last_success_ts,
        )
    if requests is not None:
        _request_gauges(registry, manifest, requests)
    _single(registry, "exit_code", "Exit code of the last run", manifest, exit_code)
    _single(registry, "run_duration_seconds", "Wall time of the last run", manifest, duration_s)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(target), registry)
    return target


def _request_gauges(
    registry: CollectorRegistry, manifest: str, requests: Mapping[str, Any]
) -> None:
    """API requests of the run by kind (uploads, calls, polls), per delivered image, and the
    budget's use (requests sent over what --rpm allowed from the first to the last)."""
    labels = ("manifest", "kind")
    sent = Gauge(f"{PREFIX}requests", "API requests this run sent", labels, registry=registry)
    per_image = Gauge(
        f"{PREFIX}requests_per_image",
        "API requests this run sent per delivered image",
        labels,
        registry=registry,
    )
    for name, count in (requests.get("sent") or {}).items():
        sent.labels(manifest, METRIC_KINDS.get(name, name)).set(count)
    for name, share in (requests.get("per_image") or {}).items():
        per_image.labels(manifest, METRIC_KINDS.get(name, name)).set(share)
    if requests.get("budget_use") is not None:
        doc = "API requests this run sent over what --rpm allowed from its first to its last"
        _single(registry, "rate_budget_use", doc, manifest, requests["budget_use"])


def _single(registry: CollectorRegistry, name: str, doc: str, manifest: str, value: float) -> None:
    Gauge(f"{PREFIX}{name}", doc, ("manifest",), registry=registry).labels(manifest).set(value)


def previous_last_success(path: Path, manifest: str) -> float | None:
    """The last-success timestamp of an earlier file, or None (missing, unreadable, not ours)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("manifest") == manifest:
                    return float(sample.value)
    except ValueError:  # a hand-edited or truncated file: start afresh rather than fail the run
        return None
    return None
