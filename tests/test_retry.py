from __future__ import annotations

from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from pipeline.api.retry import MAX_RATE_LIMITED_WAITS, RetryPolicy
from pipeline.config import RetrySettings
from pipeline.errors import ApiError, BadRequest, KeyRejected, RateLimited, ServerError
from tests.helpers.fakes import FakeClient
from tests.test_scheduler import Harness, make_jobs


class Settings(TypedDict, total=False):
    """The RetrySettings a test may set besides the jitter."""

    max_attempts: int
    backoff_base: float
    backoff_max: float
    retry_after_max: float
    breaker_jobs: int


def policy(jitter: float = 0.0, rand: float = 0.0, **kw: Unpack[Settings]) -> RetryPolicy:
    return RetryPolicy(RetrySettings(jitter=jitter, **kw), random=lambda: rand)


def test_backoff_doubles_and_caps() -> None:
    p = policy(backoff_base=1.0, backoff_max=10.0)
    delays = [p.delay(ServerError("x", 500), attempt) for attempt in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_scales_down_within_bounds() -> None:
    assert policy(jitter=0.5, rand=1.0).delay(ServerError("x"), 3) == pytest.approx(2.0)
    assert policy(jitter=0.5, rand=0.0).delay(ServerError("x"), 3) == pytest.approx(4.0)


def test_retry_after_wins_and_is_capped() -> None:
    p = policy(retry_after_max=30.0)
    assert p.delay(RateLimited("x", retry_after=7.5), 1) == 7.5
    assert p.delay(RateLimited("x", retry_after=3600), 1) == 30.0
    assert p.delay(RateLimited("x", retry_after=None), 2) == 2.0  # no hint: plain backoff


def test_transient_retried_up_to_max_attempts() -> None:
    p = policy(max_attempts=3)
    assert p.should_retry(ServerError("x", 503), attempts=2)
    assert not p.should_retry(ServerError("x", 503), attempts=3)


@pytest.mark.parametrize("error", [BadRequest("x", 400), KeyRejected("x", 401)])
def test_fatal_errors_never_retried(error: Exception) -> None:
    assert not policy().should_retry(error, attempts=0)  # type: ignore[arg-type]


def test_rate_limited_does_not_use_attempts_but_is_bounded() -> None:
    p = policy(max_attempts=1)
    error = RateLimited("x")
    assert not RetryPolicy.counts_as_attempt(error)
    assert p.should_retry(error, attempts=5, rate_limited=1)
    assert not p.should_retry(error, attempts=0, rate_limited=MAX_RATE_LIMITED_WAITS)


def test_announced_wait_is_the_capped_hint_the_throttle_pauses_for() -> None:
    p = policy(retry_after_max=30.0)
    assert p.announced_wait(RateLimited("x", retry_after=7.5)) == 7.5
    assert p.announced_wait(RateLimited("x", retry_after=3600)) == 30.0
    assert p.announced_wait(RateLimited("x", retry_after=None)) is None
    # The call that got the 429 waits exactly what every worker would pause for.
    error = RateLimited("x", retry_after=3600)
    assert p.delay(error, 1) == p.announced_wait(error)


async def test_scheduler_asks_the_policy_what_counts_as_an_attempt(tmp_path: Path) -> None:
    """The scheduler does not re-implement the rule: a policy counting 429s changes attempts."""

    class Counting429s(RetryPolicy):
        @staticmethod
        def counts_as_attempt(error: ApiError) -> bool:
            return True

    for policy, expected in ((RetryPolicy(), 1), (Counting429s(), 2)):
        client = FakeClient()
        client.fail("feature", RateLimited("HTTP 429", retry_after=1.0))
        harness = Harness(tmp_path / type(policy).__name__, client, policy=policy)
        await harness.run(make_jobs(tmp_path, 1))
        assert harness.by_status("succeeded")[0]["attempts"] == expected


async def test_retry_loop_retries_exceptions_then_raises_the_last() -> None:
    from pipeline.api.retry import retry_loop

    calls: list[int] = []
    waits: list[float] = []

    async def attempt(n: int) -> str:
        calls.append(n)
        raise ConnectionError(f"try {n}")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with pytest.raises(ConnectionError, match="try 3"):
        await retry_loop(
            attempt, tries=3, delay=lambda n: float(n), retry_on=(ConnectionError,), sleep=sleep
        )
    assert calls == [1, 2, 3]
    assert waits == [1.0, 2.0]  # no wait after the last try


async def test_retry_loop_retries_results_worth_it_and_stops_at_a_good_one() -> None:
    from pipeline.api.retry import retry_loop

    answers = iter([503, 500, 200, 200])

    async def attempt(_n: int) -> int:
        return next(answers)

    async def sleep(_seconds: float) -> None:
        return None

    result = await retry_loop(
        attempt, tries=5, delay=lambda n: 0.0, retry_if=lambda status: status >= 500, sleep=sleep
    )
    assert result == 200
    assert next(answers) == 200  # the fourth answer was never asked for


async def test_retry_loop_returns_the_last_result_when_tries_run_out() -> None:
    from pipeline.api.retry import retry_loop

    async def attempt(n: int) -> int:
        return 500 + n

    async def sleep(_seconds: float) -> None:
        return None

    assert (
        await retry_loop(attempt, tries=2, delay=lambda n: 0.0, retry_if=bool, sleep=sleep) == 502
    )


async def test_retry_loop_does_not_catch_what_it_was_not_asked_to() -> None:
    from pipeline.api.retry import retry_loop

    async def attempt(_n: int) -> int:
        raise KeyError("bug")

    async def sleep(_seconds: float) -> None:
        raise AssertionError("no retry for an unexpected error")

    with pytest.raises(KeyError):
        await retry_loop(attempt, tries=3, delay=lambda n: 0.0, retry_on=(OSError,), sleep=sleep)
