"""docs/ledger.md#circuit-breaker: a systemic failure stops the run and is not blamed on the jobs;
budgets count calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import (
    ApiTimeout,
    BadRequest,
    ConnectionLost,
    ProcessingTimeout,
    RateLimited,
    ServerError,
    StopReason,
)
from pipeline.events import JobDeferred
from pipeline.models import FeatureResult, InputRef, Job
from tests.helpers.fakes import FakeClient
from tests.test_scheduler import Harness, make_jobs


async def test_breaker_trips_after_five_exhausted_jobs_and_fails_none(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[ConnectionLost("refused")] * 200)
    harness = Harness(tmp_path, client, concurrency=1, max_attempts=3)
    jobs = make_jobs(tmp_path, 12)
    outcome, stats = await harness.run(jobs)
    assert outcome.stop_reason == StopReason.API_UNREACHABLE
    assert outcome.stop_message.startswith("API unreachable")
    assert stats.failed == 0 and not harness.by_status("failed")
    assert len(client.feature_calls) == 5 * 3  # five jobs, three tries each, then stop
    client.script.clear()  # the API is back: the next run finishes everything
    outcome, stats = await harness.run(jobs)
    assert outcome.stop_reason is None and stats.succeeded == 12


async def test_breaker_reports_the_input_host(tmp_path: Path) -> None:
    client = FakeClient()
    failures = iter([ApiTimeout("input: no answer in time")] * 100)

    async def download(url: str, dest: Path, what: str = "download") -> int:
        raise next(failures)

    client.download = download  # type: ignore[method-assign]
    harness = Harness(tmp_path, client, concurrency=2, max_attempts=2)
    jobs = make_jobs(tmp_path, 8)
    jobs = [
        j.__class__(j.job.__class__(**{**_fields(j.job), "image": _url(i)}), j.key, None, None)
        for i, j in enumerate(jobs)
    ]
    outcome, stats = await harness.run(jobs)
    assert outcome.stop_reason == StopReason.INPUT_HOST_UNREACHABLE
    assert "input host unreachable" in outcome.stop_message
    assert stats.failed == 0 and client.feature_calls == []


async def test_a_success_resets_the_count(tmp_path: Path) -> None:
    client = FakeClient()
    # Four jobs exhaust (2 tries each), one succeeds, four more exhaust: never five in a row.
    errors = [ServerError("HTTP 502", 502)] * 8
    client.fail("feature", *errors)
    harness = Harness(tmp_path, client, concurrency=1, max_attempts=2)
    jobs = make_jobs(tmp_path, 10)
    outcome, stats = await harness.run(jobs)
    assert outcome.stop_reason is None
    assert stats.failed == 4 and stats.succeeded == 6


async def test_exhausted_job_without_trip_is_failed_as_transient(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[ServerError("HTTP 503", 503)] * 2)
    harness = Harness(tmp_path, client, concurrency=1, max_attempts=2)
    _, stats = await harness.run(make_jobs(tmp_path, 3))
    assert stats.failed == 1 and stats.succeeded == 2
    failed = harness.by_status("failed")
    assert failed[0]["attempts"] == 2 and failed[0]["error"]["kind"] == "server_error"


async def test_job_fatal_failure_is_not_transient_and_breaks_the_streak(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail(
        "feature",
        *[ConnectionLost("refused")] * 4,  # two jobs exhaust
        BadRequest("HTTP 400: bad prompt", 400),  # the host answered
        *[ConnectionLost("refused")] * 6,  # three more exhaust
    )
    harness = Harness(tmp_path, client, concurrency=1, max_attempts=2, breaker_jobs=4)
    outcome, stats = await harness.run(make_jobs(tmp_path, 7))
    assert outcome.stop_reason is None
    assert stats.failed == 6 and stats.succeeded == 1


def test_transient_flag_on_failed_events() -> None:
    from pipeline.scheduler import error_info as _info
    from pipeline.scheduler import is_systemic as _systemic

    assert _systemic(ServerError("x", 500)) and _systemic(ConnectionLost("x"))
    assert not _systemic(BadRequest("x", 400))
    assert _info(ServerError("x", 500), transient=True).transient
    assert not _info(BadRequest("x", 400)).transient
    timeout = _info(ProcessingTimeout("record r-1 still PROCESSING", "r-1"))
    assert (timeout.kind, timeout.uuid, timeout.transient) == ("processing_timeout", "r-1", False)


async def test_breaker_defers_the_streak_with_events(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[ServerError("HTTP 500", 500)] * 100)
    harness = Harness(tmp_path, client, concurrency=1, max_attempts=1, breaker_jobs=3)
    outcome, _ = await harness.run(make_jobs(tmp_path, 6))
    events = harness.events
    assert outcome.stop_reason == "api_unreachable"
    deferred = [e for e in events if isinstance(e, JobDeferred)]
    assert [e.job_id for e in deferred] == ["job-0", "job-1", "job-2"]
    assert all(e.error.transient and e.attempts == 1 for e in deferred)


# -- budgets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8, 32])
async def test_max_credits_counts_only_calls_sent(tmp_path: Path, concurrency: int) -> None:
    client = FakeClient(delay=0.001)
    harness = Harness(
        tmp_path, client, concurrency=concurrency, max_credits=10_000, credits_for=lambda j: 1000
    )
    outcome, stats = await harness.run(make_jobs(tmp_path, 40))
    assert outcome.stop_reason == "max_credits"
    # Jobs that had started but not sent their call reserved nothing: the cap is used fully.
    assert len(client.feature_calls) == 10
    assert stats.counters["credits/estimated"] == 10_000


async def test_failed_call_releases_its_reservation(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", BadRequest("HTTP 400: no", 400), BadRequest("HTTP 400: no", 400))
    harness = Harness(tmp_path, client, concurrency=1, max_credits=3000, credits_for=lambda j: 1000)
    outcome, stats = await harness.run(make_jobs(tmp_path, 6))
    assert stats.failed == 2 and stats.succeeded == 3
    assert outcome.stop_reason == "max_credits"


async def test_max_total_credits_counts_earlier_runs(tmp_path: Path) -> None:
    client = FakeClient()
    harness = Harness(
        tmp_path,
        client,
        concurrency=4,
        max_total_credits=10_000,
        spent_before=7_000.0,
        credits_for=lambda j: 1000,
    )
    outcome, _ = await harness.run(make_jobs(tmp_path, 10))
    assert outcome.stop_reason == StopReason.MAX_TOTAL_CREDITS
    assert len(client.feature_calls) == 3
    assert "--max-total-credits" in outcome.stop_message


async def test_reported_used_credit_reconciles_the_spend(tmp_path: Path) -> None:
    """The account says each call costs 2500, not the 1000 estimated: the cap follows it."""
    client = FakeClient()
    original = client.run_feature
    used = iter(range(50_000, 100_000, 2500))

    async def run_feature(
        job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> FeatureResult:
        from dataclasses import replace

        result = await original(job, image_path, mask_path, asynchronous=asynchronous)
        return replace(result, used_credit=next(used))

    client.run_feature = run_feature  # type: ignore[method-assign]
    harness = Harness(tmp_path, client, concurrency=1, max_credits=6000, credits_for=lambda j: 1000)
    outcome, _ = await harness.run(make_jobs(tmp_path, 10))
    assert outcome.stop_reason == "max_credits"
    # baseline 49,000 (first answer 50,000 includes its own 1000); after 3 calls the account
    # says 4,000+... : 1000 + 2500 + 2500 = 6000 observed, no fourth call fits.
    assert len(client.feature_calls) == 3


# -- attempts -----------------------------------------------------------------------------------


async def test_attempts_count_retries_of_every_step(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("upload", ConnectionLost("reset"))
    client.fail("feature", ServerError("HTTP 502", 502))
    client.fail("download", ApiTimeout("slow"), ConnectionLost("reset"))
    harness = Harness(tmp_path, client, max_attempts=5)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1
    # 1 failed upload + 2 feature calls + 2 failed downloads: four retries, five tries counted
    assert harness.by_status("succeeded")[0]["attempts"] == 5


async def test_download_exhausted_shows_real_attempts(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("download", *[ConnectionLost("reset")] * 4)
    harness = Harness(tmp_path, client, max_attempts=4, breaker_jobs=0)
    await harness.run(make_jobs(tmp_path, 1))
    failed = harness.by_status("failed")[0]
    assert failed["attempts"] == 5  # the feature call and four failed downloads


async def test_429_counts_no_attempt_on_any_step(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("upload", RateLimited("HTTP 429", retry_after=1.0))
    client.fail("feature", RateLimited("HTTP 429", retry_after=1.0))
    harness = Harness(tmp_path, client)
    await harness.run(make_jobs(tmp_path, 1))
    assert harness.by_status("succeeded")[0]["attempts"] == 1


def _fields(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__slots__}


def _url(i: int) -> InputRef:
    return InputRef("url", f"http://127.0.0.1:9/photos/{i}.png?token=secret")


def test_settings_for_breaker_and_total_budget() -> None:
    from pipeline.config import RetrySettings, Settings, apply
    from pipeline.errors import ConfigError

    assert RetrySettings().breaker_jobs == 5
    settings = apply(Settings(), {"max_total_credits": "50000", "retry": {"breaker_jobs": 3}})
    assert settings.max_total_credits == 50_000.0 and settings.retry.breaker_jobs == 3
    with pytest.raises(ConfigError, match="max_total_credits"):
        apply(Settings(), {"max_total_credits": "lots"})


# -- 403s through the scheduler -------------------------------------------------------------


async def test_html_403_is_retried_and_the_job_succeeds(tmp_path: Path) -> None:
    from pipeline.api.client import error_for_status

    client = FakeClient()
    page = error_for_status(403, "Just a moment...", json_body=False)
    client.fail("feature", page, page)
    client.fail("upload", page)
    harness = Harness(tmp_path, client, max_attempts=3)
    outcome, stats = await harness.run(make_jobs(tmp_path, 2))
    assert outcome.stop_reason is None and stats.succeeded == 2
    assert stats.counters["retry/http/403"] == 3


async def test_json_403_about_the_key_stops_the_run(tmp_path: Path) -> None:
    from pipeline.api.client import error_for_status

    client = FakeClient()
    client.fail("feature", error_for_status(403, "Invalid API key", json_body=True))
    harness = Harness(tmp_path, client, concurrency=1)
    outcome, stats = await harness.run(make_jobs(tmp_path, 5))
    assert outcome.stop_reason == StopReason.KEY_REJECTED
    assert stats.failed == 0 and len(client.feature_calls) == 1
