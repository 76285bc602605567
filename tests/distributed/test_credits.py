"""``--max-credits`` across shards: the pool's book, a shard's side of it, and what the shards
get of the driver's environment. Without a Ray instance: the book is plain Python, and a shard's
``ShardCredits`` is driven against a stand-in pool whose calls answer like Ray's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("ray")

from pipeline.distributed.credits import CreditBook, ShardCredits
from pipeline.distributed.driver import storage_env
from pipeline.errors import BudgetReached, TotalBudgetReached
from pipeline.models import FeatureResult


def test_reservations_from_every_shard_count_against_one_budget() -> None:
    book = CreditBook(max_credits=3000)
    assert book.reserve(0, 1000) is None
    assert book.reserve(1, 1000) is None
    assert book.reserve(2, 1000) is None  # three calls in flight, on three shards
    refusal = book.reserve(0, 1000)
    assert refusal is not None and refusal[0] == BudgetReached.kind
    assert refusal[1].startswith("--max-credits 3000 reached") and "3000 in flight" in refusal[1]
    book.settle(1, released=1000, charged=0)  # a call that failed before being paid
    assert book.reserve(3, 1000) is None  # its room is free again
    assert book.budget.reserved == 3000 and book.spent() == 0


def test_a_dead_shards_open_calls_are_counted_as_spent_and_its_late_word_ignored() -> None:
    book = CreditBook(max_credits=10_000)
    book.reserve(0, 1000)
    book.reserve(0, 1000)
    book.reserve(1, 1000)
    assert book.shard_lost(0) == 2000
    assert book.spent() == 2000 and book.budget.reserved == 1000
    book.settle(0, released=1000, charged=1000)  # sent before it died, arrived after
    assert book.spent() == 2000 and book.budget.reserved == 1000
    assert book.reserve(0, 1000) is not None  # a zombie shard may not buy


def test_the_total_budget_counts_earlier_runs() -> None:
    book = CreditBook(max_credits=None, max_total_credits=5000, spent_before=4500)
    refusal = book.reserve(0, 1000)
    assert refusal is not None and refusal[0] == TotalBudgetReached.kind


class FakeMethod:
    def __init__(self, pool: FakePool, name: str) -> None:
        self._pool, self._name = pool, name

    def remote(self, *args: Any) -> Any:
        self._pool.messages.append((self._name, args))
        answer = getattr(self._pool.book, self._name)(*args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(answer)
        return future


class FakePool:
    """Answers like the actor (an awaitable per call) and records every message it got."""

    def __init__(self, book: CreditBook) -> None:
        self.book = book
        self.messages: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> FakeMethod:
        return FakeMethod(self, name)


def test_a_shard_reserves_in_the_pool_and_settles_release_and_charge_in_one_message() -> None:
    pool = FakePool(CreditBook(max_credits=2000))
    credits = ShardCredits(pool, shard=7)

    async def one_call() -> None:
        await credits.reserve_for_call(1000)
        credits.release(1000)  # as Purchase does once the POST is answered
        credits.charge(1000)
        await asyncio.sleep(0)  # the next turn of the loop sends the settlement

    asyncio.run(one_call())
    assert [name for name, _ in pool.messages] == ["reserve", "settle"]
    assert pool.messages[1][1] == (7, 1000, 1000)
    assert credits.estimated == 1000 and credits.reserved == 0
    assert pool.book.spent() == 1000 and pool.book.budget.reserved == 0


def test_a_shard_meets_the_pools_refusal_as_the_budget_error_of_one_machine() -> None:
    pool = FakePool(CreditBook(max_credits=500))
    credits = ShardCredits(pool, shard=0)
    with pytest.raises(BudgetReached, match="--max-credits 500 reached"):
        asyncio.run(credits.reserve_for_call(1000))
    assert credits.reserved == 0


def test_usage_reports_reach_the_pool_for_reconciliation() -> None:
    pool = FakePool(CreditBook(max_credits=None))
    credits = ShardCredits(pool, shard=0)

    async def observe() -> None:
        credits.observe(FeatureResult("u", (), used_credit=5000), 1000)
        credits.observe(FeatureResult("v", ()), 1000)  # nothing reported: nothing sent

    asyncio.run(observe())
    assert [name for name, _ in pool.messages] == ["observe"]


def test_the_shards_get_the_store_variables_and_never_the_api_key() -> None:
    environ = {
        "ONEMIN_API_KEY": "secret-key",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcs.json",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023",
        "AZURE_STORAGE_CONNECTION_STRING": "c",
        "FSSPEC_GS_TOKEN": "anon",
        "HOME": "/root",
        "PATH": "/usr/bin",
    }
    assert storage_env(environ) == {
        name: value
        for name, value in environ.items()
        if name not in {"ONEMIN_API_KEY", "HOME", "PATH"}
    }
