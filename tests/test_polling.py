"""Records still processing (docs/api.md#unfinished-records): polled by uuid, never bought again.
Nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pipeline.config import Timeouts
from pipeline.errors import ServerError
from pipeline.events import FeatureSubmitted, JobStarted, RecordFinished
from pipeline.ledger import LedgerWriter, ResumeState, read_ledger
from pipeline.models import FeatureResult, PlannedJob
from tests.helpers.fakes import FakeClient
from tests.test_scheduler import Harness, make_jobs


def test_timeouts_defaults() -> None:
    timeouts = Timeouts()
    assert (timeouts.processing, timeouts.poll_initial, timeouts.poll_max) == (900.0, 2.0, 10.0)


async def test_processing_answers_buy_one_edit_per_job_and_poll_the_rest(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_calls = {c for c in range(1, 21) if c % 5 < 3}  # 60% of the calls
    client.polls_needed = 3
    # One at a time: the harness's clock adds up every task's sleeps, so records polled side by
    # side would seem to take the sum of their waits (and the next ones aim their polls later).
    harness = Harness(tmp_path, client, concurrency=1)
    jobs = make_jobs(tmp_path, 20)
    _, stats = await harness.run(jobs)
    assert stats.succeeded == 20
    assert sorted(client.feature_calls) == sorted(j.job.id for j in jobs)  # one each
    assert len(client.polls) == 12 * 4  # 3 unfinished answers + the finishing one per record
    assert all(line["attempts"] == 1 for line in harness.by_status("succeeded"))
    assert stats.counters["credits/estimated"] == 20 * 4000  # finishing is not a purchase


async def test_uuid_is_in_the_ledger_before_the_first_poll(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    harness = Harness(tmp_path, client)
    ledger_seen: list[int] = []
    original = client.poll_result

    async def poll(uuid: str) -> FeatureResult:
        text = (harness.out / "ledger.jsonl").read_text()
        ledger_seen.append(text.count(f'"uuid":"{uuid}"'))
        return await original(uuid)

    client.poll_result = poll  # type: ignore[method-assign]
    await harness.run(make_jobs(tmp_path, 2))
    assert ledger_seen and all(count >= 1 for count in ledger_seen)
    submitted = harness.by_status("submitted")[0]
    assert submitted["result_paths"] == [] and submitted["uuid"] == "rec-1"


async def test_poll_waits_back_off_from_2_to_10_seconds(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    client.polls_needed = 8
    harness = Harness(tmp_path, client, concurrency=1, rand=lambda: 0.0)
    await harness.run(make_jobs(tmp_path, 1))
    assert harness.sleeps.calls == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0, 10.0, 10.0, 10.0]


async def test_poll_jitter_comes_from_the_injected_random(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    client.polls_needed = 0
    harness = Harness(tmp_path, client, concurrency=1, rand=lambda: 1.0)
    await harness.run(make_jobs(tmp_path, 1))
    assert harness.sleeps.calls == [1.6]  # 2 s scaled by 1 - 0.2


async def test_async_mode_sends_async_on_every_call(tmp_path: Path) -> None:
    client = FakeClient()
    harness = Harness(tmp_path, client, submit="async")
    _, stats = await harness.run(make_jobs(tmp_path, 5))
    assert stats.succeeded == 5 and client.async_flags == [True] * 5
    assert len(client.polls) == 5 * 3


async def test_transient_poll_errors_are_retried_without_buying(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    client.fail("poll", ServerError("HTTP 502", 502), ServerError("HTTP 503", 503))
    harness = Harness(tmp_path, client, concurrency=1)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1 and len(client.feature_calls) == 1
    assert stats.counters["retry/step/poll"] == 2
    assert harness.by_status("succeeded")[0]["attempts"] == 3  # 1 call + 2 failed polls


async def test_failed_record_is_bought_again_within_max_attempts(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_calls = {1}
    client.poll_outcome["rec-1"] = "FAILURE"
    harness = Harness(tmp_path, client, max_attempts=3)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1 and len(client.feature_calls) == 2
    assert harness.by_status("succeeded")[0]["attempts"] == 2


async def test_record_failing_every_time_fails_the_job(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    client.poll_outcome.update({f"rec-{i}": "FAILURE" for i in range(1, 10)})
    harness = Harness(tmp_path, client, max_attempts=3)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.failed == 1 and len(client.feature_calls) == 3
    failed = harness.by_status("failed")[0]
    assert failed["error"]["kind"] == "record_failed" and failed["attempts"] == 3


async def test_processing_timeout_fails_the_job_with_its_uuid(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    client.poll_outcome["rec-1"] = "NEVER"
    harness = Harness(tmp_path, client, timeouts=replace(Timeouts(), processing=60.0))
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.failed == 1 and len(client.feature_calls) == 1  # never bought again
    failed = harness.by_status("failed")[0]
    assert failed["error"]["kind"] == "processing_timeout"
    assert "rec-1" in failed["error"]["message"]
    assert sum(harness.sleeps.calls) == 60.0  # the deadline bounds the waiting


@dataclass
class Pending:
    result: FeatureResult
    credits: int | None
    attempts: int


def resume_with_processing_record(out: Path, jobs: list[PlannedJob]) -> ResumeState:
    """The real ledger after a kill while each job's record was still processing: its
    ``submitted`` line carries the uuid and no result paths."""
    out.mkdir(parents=True, exist_ok=True)
    with LedgerWriter(out / "ledger.jsonl") as writer:
        for planned in jobs:
            writer(JobStarted(planned))
            result = FeatureResult(f"rec-old-{planned.job.id}", (), finished=False)
            writer(FeatureSubmitted(planned.job.id, planned.key, 1, result, 4000))
    return read_ledger(out / "ledger.jsonl").resume()


async def test_resumed_record_without_paths_is_polled_never_bought(tmp_path: Path) -> None:
    client = FakeClient()
    jobs = make_jobs(tmp_path, 3)
    for planned in jobs:
        client.remember(f"rec-old-{planned.job.id}", planned.job, polls_needed=1)
    harness = Harness(tmp_path, client, concurrency=2)
    resume_with_processing_record(harness.out, jobs)
    outcome, _ = await harness.run(jobs)
    events, scheduler = harness.events, harness.scheduler
    assert scheduler is not None
    assert outcome.stop_reason is None
    assert client.feature_calls == [] and client.uploads == []
    assert sorted(set(client.polls)) == sorted(f"rec-old-{j.job.id}" for j in jobs)
    finished = [e for e in events if isinstance(e, RecordFinished)]
    assert len(finished) == 3 and all(e.result.result_paths for e in finished)
    assert not any(isinstance(e, FeatureSubmitted) for e in events)
    assert scheduler.credits_spent == 0
    assert all((tmp_path / "out" / j.job.id / "0.png").exists() for j in jobs)


async def test_every_api_request_passes_the_throttle(tmp_path: Path) -> None:
    """Uploads, feature calls and polls share one budget; downloads do not
    (docs/api.md#rate-budget)."""
    from pipeline.api.throttle import Throttle
    from pipeline.config import RateLimit

    acquired: list[str] = []

    class CountingThrottle(Throttle):
        async def acquire(self) -> None:
            acquired.append("x")
            await super().acquire()

    client = FakeClient()
    client.processing_all = True
    client.polls_needed = 1
    harness = Harness(tmp_path, client, concurrency=1, throttle=CountingThrottle(RateLimit(rpm=0)))
    _, stats = await harness.run(make_jobs(tmp_path, 3, shared_image=False))
    assert stats.succeeded == 3
    requests = len(client.uploads) + len(client.feature_calls) + len(client.polls)
    assert len(client.fetches) == 3 and requests == 3 + 3 + 6
    assert len(acquired) == requests


def test_submit_setting_is_auto_sync_or_async() -> None:
    from pipeline.config import Settings, apply
    from pipeline.errors import ConfigError

    assert Settings().submit == "auto"
    assert apply(Settings(), {"submit": "async"}).submit == "async"
    assert apply(Settings(), {"submit": "sync"}).submit == "sync"
    with pytest.raises(ConfigError, match="submit"):
        apply(Settings(), {"submit": "later"})


async def test_resumed_record_the_api_forgot_is_bought_again(tmp_path: Path) -> None:
    """``{"aiRecord": null}`` on resume: nothing exists to fetch, so buying is not paying twice."""
    client = FakeClient()  # remembers no old record: every poll answers RecordUnknown
    jobs = make_jobs(tmp_path, 2)
    harness = Harness(tmp_path, client, concurrency=1)
    resume_with_processing_record(harness.out, jobs)
    await harness.run(jobs)
    assert len(client.polls) == 2 and sorted(client.feature_calls) == ["job-0", "job-1"]
    assert all((tmp_path / "out" / j.job.id / "0.png").exists() for j in jobs)


def _most_records_in_flight(events: Iterable[object]) -> int:
    open_, most = 0, 0
    for event in events:
        if isinstance(event, FeatureSubmitted) and not event.result.finished:
            open_ += 1
        elif isinstance(event, RecordFinished):
            open_ -= 1
        most = max(most, open_)
    return most


async def test_async_records_in_flight_fill_the_concurrency(tmp_path: Path) -> None:
    """--async: --concurrency bounds records outstanding, and they are all used."""
    client = FakeClient()
    client.polls_needed = 3
    harness = Harness(tmp_path, client, concurrency=3, submit="async")
    _, stats = await harness.run(make_jobs(tmp_path, 6, shared_image=False))
    assert stats.succeeded == 6 and len(client.feature_calls) == 6  # one purchase each
    assert _most_records_in_flight(harness.events) == 3
    assert {line["job_id"] for line in harness.by_status("succeeded")} == {
        f"job-{i}" for i in range(6)
    }


async def test_records_in_flight_are_bounded(tmp_path: Path) -> None:
    client = FakeClient()
    client.polls_needed = 3
    harness = Harness(tmp_path, client, concurrency=1, submit="async")
    _, stats = await harness.run(make_jobs(tmp_path, 4, shared_image=False))
    assert stats.succeeded == 4
    assert _most_records_in_flight(harness.events) == 1


async def test_a_sync_run_polls_in_the_worker(tmp_path: Path) -> None:
    client = FakeClient()
    client.processing_all = True
    harness = Harness(tmp_path, client, concurrency=1)
    await harness.run(make_jobs(tmp_path, 3))
    assert _most_records_in_flight(harness.events) == 1


async def test_the_first_poll_waits_as_long_as_records_have_been_taking(tmp_path: Path) -> None:
    # The first record took 4 polls: 2 + 3 + 4.5 + 6.75 = 16.25 s; the next one waits that long
    # before its first poll, then polls at the usual waits (this fake record counts
    # polls, not seconds, so it still needs four).
    client = FakeClient()
    client.processing_all = True
    client.polls_needed = 3
    harness = Harness(tmp_path, client, concurrency=1, rand=lambda: 0.0)
    await harness.run(make_jobs(tmp_path, 2))
    assert harness.sleeps.calls[:4] == [2.0, 3.0, 4.5, 6.75]
    assert harness.sleeps.calls[4:] == [16.25, 3.0, 4.5, 6.75]


async def test_a_failed_async_record_is_bought_again_by_the_polling_side(tmp_path: Path) -> None:
    client = FakeClient()
    client.polls_needed = 1
    client.poll_outcome["rec-1"] = "FAILURE"
    harness = Harness(tmp_path, client, concurrency=1, submit="async")
    _, stats = await harness.run(make_jobs(tmp_path, 2, shared_image=False))
    assert stats.succeeded == 2
    assert sorted(client.feature_calls) == ["job-0", "job-0", "job-1"]


async def test_before_any_record_finished_only_the_oldest_polls(tmp_path: Path) -> None:
    """Younger records skip their polls while the oldest one is still processing; once it has
    finished they are polled about when it took, so most take a single poll."""
    client = FakeClient()
    client.polls_needed = 3
    harness = Harness(tmp_path, client, concurrency=4, submit="async", rand=lambda: 0.0)
    _, stats = await harness.run(make_jobs(tmp_path, 4, shared_image=False))
    assert stats.succeeded == 4 and len(client.feature_calls) == 4
    first = client.polls[:4]
    assert first == ["rec-1"] * 4  # the leader's polls, nobody else's
