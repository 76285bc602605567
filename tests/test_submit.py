"""The submit policy: how each feature call is sent (the seam ``submit: auto`` implements)."""

from __future__ import annotations

import pytest

from pipeline.scheduler.submit import FixedSubmit, SubmitPolicy, submit_policy


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
