"""The submit policy: how each feature call is sent (the seam ``submit: auto`` implements).

``AutoSubmit`` is tested both ways on the edit times it is told, and through the pool on the
harness's injected clock (nothing sleeps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import GATEWAY_TIMEOUT
from pipeline.models import FeatureResult, Job
from pipeline.scheduler.submit import (
    MIN_EDITS_SEEN,
    RECENT_EDITS,
    AutoSubmit,
    FixedSubmit,
    SubmitPolicy,
    p99,
    submit_policy,
)
from tests.helpers.fakes import FakeClient
from tests.test_scheduler import Harness, make_jobs


def test_async_stays_async_whatever_it_sees() -> None:
    policy = FixedSubmit("async")
    policy.on_finished(300.0)
    policy.on_lost_answer()
    assert policy.asynchronous() is True


def test_sync_turns_async_at_its_first_lost_answer_and_stays() -> None:
    policy = FixedSubmit("sync")
    policy.on_finished(2.0)
    assert policy.asynchronous() is False
    policy.on_lost_answer()
    assert policy.asynchronous() is True
    policy.on_finished(1.0)  # fast edits later do not bring sync calls back
    assert policy.asynchronous() is True


@pytest.mark.parametrize(("mode", "first"), [("auto", True), ("async", True), ("sync", False)])
def test_each_setting_has_its_policy_and_auto_starts_async(mode: str, first: bool) -> None:
    policy: SubmitPolicy = submit_policy(mode)
    assert policy.asynchronous() is first


FAST = 20.0  # an edit well inside the gateway's patience (half of it is 50 s)
SLOW = 0.6 * GATEWAY_TIMEOUT


def test_auto_starts_async_and_turns_sync_once_edits_are_seen_fast() -> None:
    policy = AutoSubmit(GATEWAY_TIMEOUT)
    assert policy.asynchronous()
    for _ in range(MIN_EDITS_SEEN - 1):
        policy.on_finished(FAST)
        assert policy.asynchronous()  # too few edits seen to know their tail
    policy.on_finished(FAST)
    assert not policy.asynchronous()


def test_auto_goes_back_to_async_at_the_first_slow_edit_until_it_is_out_of_the_window() -> None:
    policy = AutoSubmit(GATEWAY_TIMEOUT)
    for _ in range(MIN_EDITS_SEEN):
        policy.on_finished(FAST)
    policy.on_finished(SLOW)
    assert policy.asynchronous()
    for _ in range(RECENT_EDITS - 1):
        policy.on_finished(FAST)
        assert policy.asynchronous()  # the slow one still in the recent window
    policy.on_finished(FAST)
    assert not policy.asynchronous()


def test_auto_threshold_is_half_the_gateway() -> None:
    policy = AutoSubmit(gateway=40.0)
    for _ in range(MIN_EDITS_SEEN):
        policy.on_finished(19.9)
    assert not policy.asynchronous()
    policy.on_finished(20.0)
    assert policy.asynchronous()


def test_auto_stays_async_for_good_after_a_lost_answer() -> None:
    policy = AutoSubmit(GATEWAY_TIMEOUT)
    for _ in range(MIN_EDITS_SEEN):
        policy.on_finished(FAST)
    policy.on_lost_answer()
    for _ in range(2 * RECENT_EDITS):
        policy.on_finished(FAST)
    assert policy.asynchronous()


def test_p99_is_the_slowest_of_fewer_than_a_hundred() -> None:
    assert p99([1.0, 3.0, 2.0]) == 3.0
    values = [float(i) for i in range(1, 201)]  # 1..200: the 198th value
    assert p99(values) == 198.0


class TimedClient(FakeClient):
    """A sync call takes ``edit`` seconds of the harness's clock; records take 2 polls."""

    def __init__(self, harness_sleep: object, edit: float) -> None:
        super().__init__()
        self.polls_needed = 1
        self._harness_sleep = harness_sleep
        self.edit = edit

    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> FeatureResult:
        if not asynchronous:
            await self._harness_sleep(self.edit)  # type: ignore[operator]
        return await super().run_feature(job, image_path, mask_path, asynchronous=asynchronous)


async def test_the_pool_starts_async_then_sends_sync_calls(tmp_path: Path) -> None:
    client = FakeClient()
    client.polls_needed = 1
    harness = Harness(tmp_path, client, concurrency=1, submit="auto", rand=lambda: 0.0)
    jobs = MIN_EDITS_SEEN + 4
    _, stats = await harness.run(make_jobs(tmp_path, jobs, shared_image=False))
    assert stats.succeeded == jobs and len(client.feature_calls) == jobs
    # The first records polled (2 s + 3 s each on the harness's clock: well inside 50 s).
    assert client.async_flags == [True] * MIN_EDITS_SEEN + [False] * 4
    assert len(client.polls) == 2 * MIN_EDITS_SEEN


async def test_the_pool_goes_back_to_async_after_a_slow_sync_edit(tmp_path: Path) -> None:
    harness = Harness(tmp_path, FakeClient(), concurrency=1, submit="auto", rand=lambda: 0.0)
    client = TimedClient(harness.sleeps, edit=FAST)
    harness.client = client
    slow_call = MIN_EDITS_SEEN + 2  # the second sync call takes longer than half the gateway
    original = client.run_feature

    async def run_feature(
        job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> FeatureResult:
        client.edit = SLOW if len(client.feature_calls) + 1 == slow_call else FAST
        return await original(job, image_path, mask_path, asynchronous=asynchronous)

    client.run_feature = run_feature  # type: ignore[method-assign]
    jobs = MIN_EDITS_SEEN + 5
    _, stats = await harness.run(make_jobs(tmp_path, jobs, shared_image=False))
    assert stats.succeeded == jobs
    assert client.async_flags == [True] * MIN_EDITS_SEEN + [False, False] + [True] * 3


def test_auto_is_the_policy_of_the_auto_setting() -> None:
    assert isinstance(submit_policy("auto"), AutoSubmit)


def test_only_a_sync_run_that_has_seen_no_edit_finish_is_untried() -> None:
    sync = FixedSubmit("sync")
    assert sync.sync_untried()
    sync.on_finished(30.0)
    assert not sync.sync_untried()
    lost = FixedSubmit("sync")
    lost.on_lost_answer()  # async from now on: nothing held open
    assert not lost.sync_untried()
    assert not FixedSubmit("async").sync_untried()
    assert not AutoSubmit(GATEWAY_TIMEOUT).sync_untried()  # sync only after fast edits seen
