"""The worker pool against a scripted client: retries, resume, stops. Nothing really sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Throttle
from pipeline.config import RateLimit, RetrySettings
from pipeline.errors import (
    ApiError,
    ApiTimeout,
    AssetNotFound,
    BadRequest,
    BadResponse,
    ConnectionLost,
    KeyRejected,
    OutOfCredits,
    RateLimited,
    RecordFailed,
    ServerError,
)
from pipeline.events import Event, EventBus, JobsSkipped
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.models import Feature, InputRef, Job, PlannedJob, Status
from pipeline.plan.prepare import PlanOptions, skip_reason
from pipeline.reporting.stats import RunStats
from pipeline.scheduler import (
    CreditBudget,
    RunOutcome,
    Scheduler,
    SchedulerOptions,
    Timing,
    build_scheduler,
)
from pipeline.store.local import Store
from tests.helpers.fakes import FakeClient

# SchedulerOptions a test may set as they are (the others have harness defaults).
SCHEDULER_OPTIONS = ("submit", "timeouts", "breaker_jobs", "max_concurrency")


class Sleeps:
    """Injected time: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # a sleep lets the other tasks run, as a real one does


def make_jobs(
    tmp_path: Path, count: int, shared_image: bool = True, n: int = 1
) -> list[PlannedJob]:
    jobs = []
    for i in range(count):
        name = "shared.png" if shared_image else f"img{i}.png"
        image = tmp_path / name
        if not image.exists():
            Image.new("RGB", (64, 64), (i * 10 % 255, 80, 80)).save(image)
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        job = Job(
            id=f"job-{i}",
            feature=Feature.BACKGROUND if n == 1 else Feature.INPAINT,
            image=InputRef("file", str(image)),
            mask=None if n == 1 else InputRef("file", str(image)),
            prompt=f"prompt {i}",
            n=n,
        )
        jobs.append(PlannedJob(job, key=f"key-{i}", image_digest=digest, mask_digest=digest))
    return jobs


class Harness:
    def __init__(self, tmp_path: Path, client: FakeClient, **options: Any) -> None:
        self.out = tmp_path / "out"
        self.client = client
        self.sleeps = Sleeps()
        # Sync unless a test says otherwise: these tests count calls, retries and sleeps of one
        # answer per call; the async default's polls are tested in test_polling and test_live.
        self.options: dict[str, Any] = {"submit": "sync", **options}
        self.events: list[Event] = []  # every event of the latest run, in order
        self.scheduler: Scheduler | None = None  # the latest run's

    async def run(self, jobs: list[PlannedJob], **overrides: Any) -> tuple[RunOutcome, RunStats]:
        options: dict[str, Any] = {**self.options, **overrides}
        store = Store(self.out)
        store.prepare()
        ledger = read_ledger(self.out / "ledger.jsonl")
        # What the plan would run (the plan owns the skip rule; the scheduler runs what it gets).
        plan_options = PlanOptions(
            retry_failed=bool(options.get("retry_failed", False)),
            missing=(lambda _state: True) if options.get("redo_missing") else None,
        )
        skipped: Counter[str] = Counter()
        runnable = []
        for job in jobs:
            state = ledger.state_of(job.job.id, job.key)
            reason = skip_reason(state, plan_options)
            if plan_options.missing and state is not None and state.status is Status.PARTIAL:
                reason = None  # --redo-missing: the plan runs a partial job again
            if reason is None:
                runnable.append(job)
            else:
                skipped[reason.value] += 1
        bus = EventBus()
        stats = RunStats()
        self.events = []
        with LedgerWriter(self.out / "ledger.jsonl") as writer:
            bus.subscribe(writer)
            bus.subscribe(stats)
            bus.subscribe(self.events.append)
            for skip, count in skipped.items():
                bus.emit(JobsSkipped(skip, count))
            scheduler = build_scheduler(
                self.client,
                store,
                bus,
                options.get("throttle")
                or Throttle(RateLimit(rpm=0), clock=self.sleeps.clock, sleep=self.sleeps),
                ledger.resume(),
                policy=options.get("policy")
                or RetryPolicy(RetrySettings(max_attempts=int(options.get("max_attempts", 3)))),
                options=SchedulerOptions(
                    concurrency=options.get("concurrency", 4),
                    # The scripted steps are those of sync calls unless a test says otherwise.
                    **{
                        "submit": "sync",
                        **{k: v for k, v in options.items() if k in SCHEDULER_OPTIONS},
                    },
                ),
                credits=CreditBudget(
                    options.get("max_credits"),
                    options.get("max_total_credits"),
                    float(options.get("spent_before", 0.0)),
                ),
                credits_for=options.get("credits_for", lambda job: 4000),
                mask_converter=options.get("mask_converter"),
                timing=Timing(
                    sleep=self.sleeps,
                    clock=self.sleeps.clock,
                    rand=options.get("rand", random.random),
                ),
            )
            self.scheduler = scheduler
            outcome = await scheduler.run(runnable)
        return outcome, stats

    def by_status(self, status: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["status"] == status]

    def lines(self) -> list[dict[str, Any]]:
        text = (self.out / "ledger.jsonl").read_bytes()
        return [orjson.loads(line) for line in text.splitlines()]

    def latest(self) -> dict[str, str]:
        return {line["job_id"]: line["status"] for line in self.lines()}


async def test_all_jobs_done_with_decodable_outputs(tmp_path: Path) -> None:
    harness = Harness(tmp_path, FakeClient())
    jobs = make_jobs(tmp_path, 6, n=2)
    outcome, stats = await harness.run(jobs)
    assert outcome.stop_reason is None
    assert stats.succeeded == 6
    for job in jobs:
        files = sorted((harness.out / job.job.id).glob("*.png"))
        assert [f.name for f in files] == ["0.png", "1.png"]
        with Image.open(files[0]) as image:
            assert image.size == (1024, 1024)


async def test_second_run_sends_nothing(tmp_path: Path) -> None:
    harness = Harness(tmp_path, FakeClient())
    jobs = make_jobs(tmp_path, 5)
    await harness.run(jobs)
    calls = len(harness.client.feature_calls), len(harness.client.uploads)
    _, stats = await harness.run(jobs)
    assert (len(harness.client.feature_calls), len(harness.client.uploads)) == calls
    assert stats.skipped == 5


async def test_changed_content_runs_again(tmp_path: Path) -> None:
    harness = Harness(tmp_path, FakeClient())
    jobs = make_jobs(tmp_path, 3)
    await harness.run(jobs)
    changed = [PlannedJob(jobs[0].job, "new-key", jobs[0].image_digest), *jobs[1:]]
    await harness.run(changed)
    assert harness.client.feature_calls.count("job-0") == 2
    assert len(harness.client.feature_calls) == 4
    assert list((harness.out / "job-0" / ".superseded").iterdir())  # old output kept aside


@pytest.mark.parametrize(
    "error",
    [
        ServerError("HTTP 503", 503),
        ServerError("HTTP 500", 500),
        ApiTimeout("slow"),
        ConnectionLost("dropped"),
        BadResponse("half JSON"),
        RecordFailed("FAILED"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("failures", [1, 2])
async def test_transient_feature_errors_retried(
    tmp_path: Path, error: ApiError, failures: int
) -> None:
    client = FakeClient()
    client.fail("feature", *[error] * failures)
    harness = Harness(tmp_path, client, max_attempts=3)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1
    assert len(client.feature_calls) == failures + 1
    succeeded = harness.lines()[-1]
    assert succeeded["status"] == "succeeded" and succeeded["attempts"] == failures + 1
    assert stats.counters[f"retry/reason/{error.kind}"] == failures
    assert len(harness.sleeps.calls) == failures


async def test_transient_errors_exhaust_max_attempts(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[ServerError("HTTP 502", 502)] * 5)
    harness = Harness(tmp_path, client, max_attempts=3)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.failed == 1 and len(client.feature_calls) == 3
    failed = harness.lines()[-1]
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert failed["error"] == {
        "kind": "server_error",
        "message": "HTTP 502",
        "http_status": 502,
        "transient": True,  # out of retries on transient errors alone: the next run retries it
        "uuid": None,
    }


async def test_429_does_not_use_up_attempts(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[RateLimited("HTTP 429", retry_after=2.0)] * 6)
    harness = Harness(tmp_path, client, max_attempts=2)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1
    assert harness.lines()[-1]["attempts"] == 1
    assert harness.sleeps.calls.count(2.0) >= 6  # each Retry-After honoured


async def test_bad_request_fails_at_once(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", BadRequest("HTTP 400: prompt: too long", 400))
    harness = Harness(tmp_path, client)
    _, stats = await harness.run(make_jobs(tmp_path, 2))
    assert stats.failed == 1 and stats.succeeded == 1
    assert len(client.feature_calls) == 2
    assert not harness.sleeps.calls


async def test_failed_download_never_buys_the_edit_again(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("download", BadResponse("truncated"), ConnectionLost("reset"))
    harness = Harness(tmp_path, client)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1
    assert len(client.feature_calls) == 1 and len(client.fetches) == 3


async def test_download_exhausted_fails_then_retry_failed_fetches_only(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("download", *[BadResponse("403 expired and 404")] * 3)
    harness = Harness(tmp_path, client, max_attempts=3)
    jobs = make_jobs(tmp_path, 1)
    _, stats = await harness.run(jobs)
    assert stats.failed == 1 and harness.lines()[-1]["error"]["kind"] == "download"
    # The download failed on transient errors alone (docs/ledger.md#transient-failures): the next
    # run tries the job again without --retry-failed, and fetches the stored result instead of
    # buying it again.
    assert harness.lines()[-1]["error"]["transient"] is True
    _, stats = await harness.run(jobs)
    assert stats.succeeded == 1
    assert len(client.feature_calls) == 1  # fetched from the stored result, not bought again


async def test_resume_after_submitted_fetches_without_paying(tmp_path: Path) -> None:
    """A kill between the feature call and the download: the ledger has the result."""
    client = FakeClient()
    harness = Harness(tmp_path, client)
    jobs = make_jobs(tmp_path, 2)
    await harness.run(jobs)
    kept = [line for line in harness.lines() if line["status"] != "succeeded"]
    (harness.out / "ledger.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in kept))
    _, stats = await harness.run(jobs)
    assert stats.succeeded == 2 and len(client.feature_calls) == 2


@pytest.mark.parametrize("fatal", [KeyRejected("HTTP 401", 401), OutOfCredits("HTTP 402", 402)])
async def test_run_fatal_stops_and_leaves_jobs_resumable(tmp_path: Path, fatal: ApiError) -> None:
    client = FakeClient()
    client.fail("feature", fatal)
    harness = Harness(tmp_path, client, concurrency=1)
    jobs = make_jobs(tmp_path, 10)
    outcome, stats = await harness.run(jobs)
    assert outcome.stop_reason == fatal.kind
    assert len(client.feature_calls) == 1
    assert stats.failed == 0
    assert "failed" not in harness.latest().values()
    _, stats = await harness.run(jobs)  # the key works again: everything resumes
    assert stats.succeeded == 10


async def test_max_credits_stops_before_the_budget_is_exceeded(tmp_path: Path) -> None:
    client = FakeClient()
    harness = Harness(tmp_path, client, concurrency=1, max_credits=10_000)
    outcome, stats = await harness.run(make_jobs(tmp_path, 5))
    assert outcome.stop_reason == "max_credits"
    assert len(client.feature_calls) == 2  # 2 x 4000 fits, a third would not
    assert stats.counters["credits/estimated"] == 8000


async def test_shared_inputs_uploaded_once_even_concurrently(tmp_path: Path) -> None:
    client = FakeClient(delay=0.001)
    harness = Harness(tmp_path, client, concurrency=8)
    await harness.run(make_jobs(tmp_path, 20, shared_image=True, n=2))
    assert len(client.uploads) == 1  # image and mask are the same bytes here


async def test_resumed_run_reuses_uploads_from_the_ledger(tmp_path: Path) -> None:
    client = FakeClient()
    harness = Harness(tmp_path, client)
    jobs = make_jobs(tmp_path, 4, shared_image=False)
    await harness.run(jobs[:2])
    await harness.run(jobs)
    assert len(client.uploads) == 4


async def test_forgotten_asset_is_uploaded_again_once(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", AssetNotFound("HTTP 404: imageUrl: asset not found: x", 404))
    harness = Harness(tmp_path, client)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.succeeded == 1 and len(client.uploads) == 2


async def test_asset_forgotten_twice_fails_the_job(tmp_path: Path) -> None:
    client = FakeClient()
    client.fail("feature", *[AssetNotFound("HTTP 404: asset not found", 404)] * 2)
    harness = Harness(tmp_path, client)
    _, stats = await harness.run(make_jobs(tmp_path, 1))
    assert stats.failed == 1 and len(client.uploads) == 2


async def test_concurrency_caps_open_feature_calls(tmp_path: Path) -> None:
    client = FakeClient(delay=0.002)
    harness = Harness(tmp_path, client, concurrency=3)
    await harness.run(make_jobs(tmp_path, 15))
    assert client.max_open_features == 3
