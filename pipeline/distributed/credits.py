"""``--max-credits`` and ``--max-total-credits`` across shards: one shared count, reserved
before every POST.

A run on one machine reserves a call's estimate in its ``CreditBudget`` right before the POST,
so the calls in flight count against the budget. On Ray the same holds across shards: the
driver starts one ``CreditPool`` actor per run, wrapping the one ``CreditBudget`` of the run,
and each shard's ``ShardCredits`` reserves there before its POST (one actor round-trip a feature
call, about a millisecond beside calls that take seconds). So the budget is never passed by the
credit table's estimates, whatever the number of shards: the overshoot bound is the same as on
one machine (none beyond the estimates; the account's ``usedCredit`` is reconciled in the pool).

The pool is a plain (not async) actor: its calls run one at a time in the order each caller
sent them, so a reservation is checked and taken atomically. A shard's release and charge of
one answered call go in one message (``settle``), so no other shard's reservation slips in
between the two. A shard that dies holding reservations had those POSTs in flight: they may
have been charged, so ``shard_lost`` counts them as spent (the conservative side, as an unknown
outcome is on one machine).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import ray

from pipeline.errors import BudgetReached, TotalBudgetReached
from pipeline.models import FeatureResult
from pipeline.scheduler import CreditBudget


class CreditBook:
    """The pool's state without Ray (tested directly, wrapped by the actor): the run's
    ``CreditBudget`` and what each shard holds reserved."""

    def __init__(
        self,
        max_credits: float | None,
        max_total_credits: float | None = None,
        spent_before: float = 0.0,
    ) -> None:
        self.budget = CreditBudget(max_credits, max_total_credits, spent_before)
        self.held: Counter[int] = Counter()  # shard id -> credits reserved by its open calls
        self.lost: set[int] = set()  # dead shards: a late word of theirs changes nothing

    def reserve(self, shard: int, estimate: int) -> tuple[str, str] | None:
        """Take ``estimate`` for a call about to be sent; (kind, message) if a budget forbids."""
        if shard in self.lost:
            return BudgetReached.kind, f"shard {shard} was given up: it may not buy"
        problem = self.budget.exceeded_by(estimate)
        if problem is not None:
            return problem.kind, str(problem)
        self.budget.reserve(estimate)
        self.held[shard] += estimate
        return None

    def settle(self, shard: int, released: int, charged: int) -> None:
        """Calls answered (or failed): their reservations go, what was answered is spent."""
        if shard in self.lost:
            return  # shard_lost already counted everything it held as spent
        self.budget.release(released)
        self.held[shard] -= released
        self.budget.charge(charged)

    def observe(self, result: FeatureResult, charged: int) -> None:
        self.budget.observe(result, charged)

    def shard_lost(self, shard: int) -> int:
        """A dead shard's open calls may have been charged: counted as spent. Their credits."""
        self.lost.add(shard)
        held = self.held.pop(shard, 0)
        self.budget.release(held)
        self.budget.charge(held)
        return held

    def spent(self) -> float:
        return self.budget.spent


@ray.remote
class CreditPool:
    """The actor around ``CreditBook``; owned by the driver (it dies with the run)."""

    def __init__(
        self, max_credits: float | None, max_total_credits: float | None, spent_before: float
    ) -> None:
        self._book = CreditBook(max_credits, max_total_credits, spent_before)

    def reserve(self, shard: int, estimate: int) -> tuple[str, str] | None:
        return self._book.reserve(shard, estimate)

    def settle(self, shard: int, released: int, charged: int) -> None:
        self._book.settle(shard, released, charged)

    def observe(self, result: FeatureResult, charged: int) -> None:
        self._book.observe(result, charged)

    def shard_lost(self, shard: int) -> int:
        return self._book.shard_lost(shard)

    def spent(self) -> float:
        return self._book.spent()


def start_pool(
    max_credits: float | None, max_total_credits: float | None, spent_before: float
) -> Any:
    """The run's pool: no CPU, no restart (a lost pool fails the shards' next reservation)."""
    return CreditPool.options(num_cpus=0, max_restarts=0).remote(  # type: ignore[attr-defined]
        max_credits, max_total_credits, spent_before
    )


def budget_error(kind: str, message: str) -> BudgetReached:
    """The error the pool's refusal stands for, as a run on one machine would raise it."""
    if kind == TotalBudgetReached.kind:
        return TotalBudgetReached(message)
    return BudgetReached(message)


class ShardCredits(CreditBudget):
    """A shard's ``CreditBudget``: reservations are the pool's; the local figures (``spent``,
    ``reserved``) are this shard's own share, for its scheduler's counters."""

    def __init__(self, pool: Any, shard: int) -> None:
        super().__init__()
        self._pool = pool
        self._shard = shard
        self._released = 0
        self._charged = 0
        self._flush_scheduled = False

    async def reserve_for_call(self, estimate: int) -> None:
        refusal = await self._pool.reserve.remote(self._shard, estimate)
        if refusal is not None:
            raise budget_error(*refusal)
        self.reserved += estimate

    def reserve(self, estimate: int) -> None:
        raise TypeError("a shard reserves through reserve_for_call: the pool decides")

    def release(self, estimate: int) -> None:
        super().release(estimate)
        self._released += estimate
        self._schedule_settle()

    def charge(self, estimate: int) -> None:
        super().charge(estimate)
        self._charged += estimate
        self._schedule_settle()

    def possibly_charged(self, estimate: int) -> None:
        super().possibly_charged(estimate)
        self._charged += estimate  # an answer lost after sending: the pool counts it as spent
        self._schedule_settle()

    def observe(self, result: FeatureResult, charged: int) -> None:
        super().observe(result, charged)
        if result.used_credit is not None:
            self._pool.observe.remote(result, charged)  # fire and forget

    def _schedule_settle(self) -> None:
        # The purchase releases and then charges an answered call with no await between:
        # sending both at the next turn of the loop makes them one message.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.settle_now)

    def settle_now(self) -> None:
        """Send what was released and charged since the last message (also at a batch's end)."""
        self._flush_scheduled = False
        if self._released or self._charged:
            released, charged, self._released, self._charged = self._released, self._charged, 0, 0
            self._pool.settle.remote(self._shard, released, charged)
