"""The scheduler's course in the live API's regime, against a scripted client on injected time:
unknown outcomes, one call per image in a private bucket, partial jobs, fresh signatures, the
upload limit, status words nobody documented, a CDN that challenges every request, and
``usedCredit`` one call behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.api.client import SinkFactory
from pipeline.errors import AnswerLost, DownloadFailed, KeyRejected, ServerError, StopReason
from pipeline.events import UnknownStatusWord
from pipeline.ledger import read_ledger
from pipeline.models import FeatureResult
from pipeline.scheduler import CreditBudget
from tests.helpers.fakes import FakeClient
from tests.test_scheduler import Harness, make_jobs


def lost(status: int = 524) -> AnswerLost:
    return AnswerLost(f"HTTP {status}: A timeout occurred", status, seen="server_error")


# -- unknown outcomes ----------------------------------------------------------------------------


async def test_a_lost_answer_is_recorded_counted_and_resent_once_async(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", lost())
    harness = Harness(tmp_path, client, submit="sync")
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1
    assert client.async_flags == [False, True]  # re-sent async: it answers at once
    [line] = harness.by_status("unknown_outcome")
    assert (line["step"], line["attempt"], line["http_status"], line["credits"]) == (
        "feature",
        1,
        524,
        4000,
    )
    assert stats.possibly_charged == 1 and stats.counters["credits/possibly_charged"] == 4000
    assert harness.scheduler is not None and harness.scheduler.credits.spent == 8000
    ledger = read_ledger(harness.out / "ledger.jsonl")
    assert (ledger.credits_spent, ledger.possibly_charged) == (8000, 1)  # both budgets see it


async def test_a_second_lost_answer_fails_the_job_for_a_person_to_decide(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", lost(), lost(522))
    harness = Harness(tmp_path, client, submit="sync", max_attempts=5)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert len(client.feature_calls) == 2  # never a third
    [failed] = harness.by_status("failed")
    error = failed["error"]
    assert isinstance(error, dict)
    assert (error["kind"], error["transient"], error["http_status"]) == (
        "outcome_unknown",
        False,
        522,
    )
    assert "--retry-failed" in error["message"]
    assert len(harness.by_status("unknown_outcome")) == 2 and stats.possibly_charged == 2
    # Not retried by the next run on its own; --retry-failed starts the allowance over.
    await harness.run(make_jobs(tmp_path, 1))
    assert len(client.feature_calls) == 2
    await harness.run(make_jobs(tmp_path, 1), retry_failed=True)
    assert harness.latest()["job-0"] == "succeeded" and len(client.feature_calls) == 3


async def test_a_sync_run_sends_every_later_call_async_after_its_first_lost_answer(
    tmp_path: Path,
) -> None:
    client = FakeClient()
    client.fail("feature", lost())
    harness = Harness(tmp_path, client, submit="sync", concurrency=1)
    _, stats = await harness.run(make_jobs(tmp_path, 4))
    assert stats.succeeded == 4
    assert client.async_flags == [False, True, True, True, True]


async def test_a_resumed_job_remembers_its_lost_answer(tmp_path: Path) -> None:
    """Killed (here: stopped) after a lost answer: the next run re-sends only async, and a
    second loss fails the job; the allowance is per job, not per run."""
    client = FakeClient()
    client.fail("feature", lost(), KeyRejected("HTTP 401: key", 401))
    harness = Harness(tmp_path, client, submit="sync")
    outcome, _ = await harness.run(make_jobs(tmp_path, 1))
    assert outcome.stop_reason == "key_rejected"
    client.fail("feature", lost(520))
    await harness.run(make_jobs(tmp_path, 1))
    assert client.async_flags == [False, True, True]
    assert harness.latest()["job-0"] == "failed"
    assert harness.by_status("failed")[-1]["error"]["kind"] == "outcome_unknown"


async def test_answers_lost_job_after_job_stop_the_run(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[lost()] * 20)
    harness = Harness(tmp_path, client, submit="async", concurrency=1, breaker_jobs=3)
    outcome, _ = await harness.run(make_jobs(tmp_path, 10))
    assert outcome.stop_reason == StopReason.API_UNREACHABLE
    assert "losing answers" in outcome.stop_message
    assert len(client.feature_calls) == 6  # three jobs, two calls each, then the stop


# -- one call per image ------------------------------------------------------------------------


async def test_a_private_bucket_buys_a_job_of_n_images_as_n_calls_of_one(tmp_path: Path) -> None:
    client = FakeClient()
    client.public_assets = False
    harness = Harness(tmp_path, client)
    _, stats = await harness.run(make_jobs(tmp_path, 2, n=3))
    assert stats.succeeded == 2
    assert client.feature_n == [1] * 6 and len(client.unsigned_checks) == 1  # asked once
    parts = sorted((line["job_id"], line["part"]) for line in harness.by_status("submitted"))
    assert parts == [(f"job-{j}", i) for j in range(2) for i in range(3)]
    for job in ("job-0", "job-1"):
        assert sorted(p.name for p in (harness.out / job).glob("*.png")) == [
            "0.png",
            "1.png",
            "2.png",
        ]
    done = harness.by_status("succeeded")
    assert all(len(line["uuids"]) == 3 for line in done)
    assert sum(int(line["credits"]) for line in done) == 6 * 4000


async def test_a_public_bucket_buys_one_call_per_job(tmp_path: Path) -> None:
    client = FakeClient()
    harness = Harness(tmp_path, client)
    await harness.run(make_jobs(tmp_path, 2, n=3))
    assert client.feature_n == [3, 3]
    assert all(line["part"] is None for line in harness.by_status("submitted"))


async def test_a_resume_never_buys_a_paid_image_again(tmp_path: Path) -> None:
    client = FakeClient()
    client.public_assets = False
    original = client.run_feature
    calls = 0

    async def stop_at_the_second_image(*args: object, **kwargs: object) -> FeatureResult:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyRejected("HTTP 401: the key", 401)
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    client.run_feature = stop_at_the_second_image  # type: ignore[method-assign]
    harness = Harness(tmp_path, client, submit="async", concurrency=1)
    jobs = make_jobs(tmp_path, 1, n=3)
    outcome, _ = await harness.run(jobs)
    assert outcome.stop_reason == "key_rejected"
    assert [line["part"] for line in harness.by_status("submitted")] == [0]
    client.run_feature = original  # type: ignore[method-assign]
    await harness.run(jobs)
    assert harness.latest()["job-0"] == "succeeded"
    paid = {(line["part"], line["uuid"]) for line in harness.by_status("submitted")}
    assert sorted(part for part, _ in paid) == [0, 1, 2]  # image 0 polled, not bought again
    assert client.feature_n == [1, 1, 1]


# -- partial jobs and fresh signatures ---------------------------------------------------------


async def test_an_image_no_url_serves_makes_the_job_partial_then_redo_buys_only_it(
    tmp_path: Path,
) -> None:
    client = FakeClient()
    refused = DownloadFailed("result 1 refused by every URL: HTTP 403", 403)
    original = client.fetch_result

    async def refuse_the_second(
        result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = None
    ) -> int:
        if index == 1:
            raise refused
        return await original(result, index, dest, sink=sink)

    client.fetch_result = refuse_the_second  # type: ignore[method-assign]
    harness = Harness(tmp_path, client)
    jobs = make_jobs(tmp_path, 1, n=2)
    _, stats = await harness.run(jobs)
    assert stats.partial == 1 and stats.succeeded == 0
    [partial] = harness.by_status("partial")
    assert partial["missing"] == [1] and partial["outputs"] == ["job-0/0.png"]
    assert partial["error"]["kind"] == "download"
    await harness.run(jobs)  # skipped: nothing is bought again silently
    assert client.feature_n == [2]
    client.fetch_result = original  # type: ignore[method-assign]
    await harness.run(jobs, redo_missing=True)
    assert client.feature_n == [2, 1]  # exactly the missing image
    assert harness.latest()["job-0"] == "succeeded"
    [done] = harness.by_status("succeeded")
    assert done["outputs"] == ["job-0/0.png", "job-0/1.png"]
    assert (harness.out / "job-0" / "0.png").exists() and (harness.out / "job-0" / "1.png").exists()
    assert not list((harness.out / "job-0").glob(".superseded/*/0.png"))  # kept in place


async def test_a_refused_first_result_is_fetched_again_with_a_fresh_signature(
    tmp_path: Path,
) -> None:
    client = FakeClient()
    client.fail("download", DownloadFailed("result 0 refused by every URL: HTTP 403", 403))
    harness = Harness(tmp_path, client)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1
    assert client.polls == ["rec-1"]  # the finished record polled once more: a new URL
    assert len(client.feature_calls) == 1


async def test_an_outage_of_the_result_host_is_no_partial(tmp_path: Path) -> None:
    from pipeline.errors import ConnectionLost

    client = FakeClient()
    client.fail("download", *[ConnectionLost("reset")] * 3)
    harness = Harness(tmp_path, client, max_attempts=3, breaker_jobs=0)
    await harness.run(make_jobs(tmp_path, 1))
    assert harness.latest()["job-0"] == "failed"  # transient: the next run fetches it, free
    assert harness.by_status("failed")[0]["error"]["transient"] is True


# -- the rest of the regime --------------------------------------------------------------------


async def test_at_most_five_uploads_are_in_flight(tmp_path: Path) -> None:
    client = FakeClient()
    client.upload_delay = 0.01
    harness = Harness(tmp_path, client, concurrency=12)
    _, stats = await harness.run(make_jobs(tmp_path, 12, shared_image=False))
    assert stats.succeeded == 12 and len(client.uploads) == 12
    assert client.most_uploads_open == 5


async def test_an_undocumented_status_word_is_logged_once_and_polled(tmp_path: Path) -> None:
    client = FakeClient()
    client.unfinished_word = "WAITING_FOR_GPU"
    harness = Harness(tmp_path, client, submit="async")
    _, stats = await harness.run(make_jobs(tmp_path, 3, shared_image=False))
    assert stats.succeeded == 3
    words = [e for e in harness.events if isinstance(e, UnknownStatusWord)]
    assert [event.word for event in words] == ["WAITING_FOR_GPU"]


async def test_a_cdn_challenge_on_every_request_stops_the_run_saying_so(tmp_path: Path) -> None:
    client = FakeClient()
    challenge = ServerError("HTTP 403: Just a moment... (not from the API: retried)", 403)
    client.fail("upload", *[challenge] * 100)
    harness = Harness(tmp_path, client, max_attempts=2, breaker_jobs=3, concurrency=1)
    outcome, _ = await harness.run(make_jobs(tmp_path, 6, shared_image=False))
    assert outcome.stop_reason == StopReason.CDN_CHALLENGE
    assert "CDN in front of the API refuses this client" in outcome.stop_message
    assert harness.by_status("failed") == []  # deferred, not failed: resumable


@pytest.mark.parametrize(
    ("answers", "spent"),
    [
        # (usedCredit shown, credits of the request): each feature answer shows the spend before
        # its own charge; a poll's, the spend as it stands.
        ([(10_000, 1000)], 1000),
        ([(10_000, 1000), (11_000, 1000), (12_000, 1000)], 3000),
        ([(10_000, 1000), (12_500, 1000)], 3500),  # the account charged 2500, not 1000
        ([(10_000, 1000), (11_000, 0)], 1000),  # a poll: the spend as it stands, no more
        ([(10_000, 1000), (12_000, 0)], 2000),  # a poll says the call cost 2000
    ],
)
def test_used_credit_is_reconciled_knowing_it_lags_one_call(
    answers: list[tuple[int, int]], spent: int
) -> None:
    budget = CreditBudget(max_credits=100_000)
    for used, charged in answers:
        if charged:
            budget.charge(charged)
        budget.observe(FeatureResult("u", (), used_credit=used), charged)
    estimated = sum(charged for _, charged in answers)
    assert budget.spent == max(spent, estimated)


def test_a_poll_before_any_answer_sets_no_baseline() -> None:
    budget = CreditBudget()
    budget.observe(FeatureResult("u", (), used_credit=50_000), 0)  # a resumed record's poll
    budget.charge(1000)
    budget.observe(FeatureResult("v", (), used_credit=50_000), 1000)
    assert budget.spent == 1000
