"""``CreditBudget``: what a run may still spend, the one owner of ``--max-credits`` and
``--max-total-credits`` (a run on one machine and the Ray driver both count with it).

A call reserves its estimate right before its POST and releases it when answered; an answered
call is spent, and so is a call whose answer was lost after it was sent (an unknown outcome: it
may have been charged). The run's spend is our estimates, or what the account reports if that
is more (``usedCredit``). A call not sent reserves nothing, so a budget reached mid-run stops
the intake while the calls in flight settle.

``usedCredit`` lags one call: a feature call's answer shows the spend before its own charge, a
poll's the spend as it stands (docs/api.md#credits). ``creditLimit`` is the key's member cap,
not the team's balance, and is not used as a budget.
"""

from __future__ import annotations

from pipeline.errors import BudgetReached, TotalBudgetReached
from pipeline.models import FeatureResult


class CreditBudget:
    def __init__(
        self,
        max_credits: float | None = None,
        max_total_credits: float | None = None,
        spent_before: float = 0.0,
    ) -> None:
        self._limit = max_credits
        self._total = max_total_credits
        self._spent_before = spent_before  # earlier runs of the same folder (the ledger's sum)
        self.estimated = 0  # what the calls answered so far cost, by the credit table
        self.possibly = 0  # estimates of calls whose answer was lost: maybe charged
        self.reserved = 0  # estimates of the calls in flight
        self._used_baseline: int | None = None  # account usedCredit before this run's calls
        self._used_latest: int | None = None

    @property
    def spent(self) -> float:
        """This run's spend: our estimates (lost answers included), or what the account says
        if that is more."""
        observed = 0
        if self._used_baseline is not None and self._used_latest is not None:
            observed = self._used_latest - self._used_baseline
        return max(self.estimated + self.possibly, observed)

    def reserve(self, estimate: int) -> None:
        """Hold ``estimate`` for a call about to be sent; raise if a budget would be passed."""
        problem = self.exceeded_by(estimate)
        if problem is not None:
            raise problem
        self.reserved += estimate

    async def reserve_for_call(self, estimate: int) -> None:
        """``reserve``, awaited right before a POST: a Ray shard's budget
        (``distributed.credits``) asks the run's shared count there; this one answers at once."""
        self.reserve(estimate)

    def release(self, estimate: int) -> None:
        """The call was answered (or failed to be): it no longer holds its reservation."""
        self.reserved -= estimate

    def charge(self, estimate: int) -> None:
        """An answered call: its estimate is spent."""
        self.estimated += estimate

    def possibly_charged(self, estimate: int) -> None:
        """A call whose answer was lost after it was sent: counted as spent."""
        self.possibly += estimate

    def observe(self, result: FeatureResult, charged: int) -> None:
        """Reconcile with the account's ``usedCredit`` in an answer. ``charged``: what the
        request that got this answer cost (a feature call's estimate; 0 for a poll). A feature
        answer's figure lags one call: it is the spend before its own charge, so the spend
        including it is ``usedCredit + charged``; the first such figure is where this run's
        spend started. A figure read too low only makes the estimates count: never too high."""
        used = result.used_credit
        if used is None:
            return
        if self._used_baseline is None:
            if not charged:
                return  # a poll before any call was answered: no baseline to count from
            self._used_baseline = used
        after = used + charged
        self._used_latest = after if self._used_latest is None else max(self._used_latest, after)

    def exceeded_by(self, estimate: int) -> BudgetReached | None:
        """The error a call of ``estimate`` would meet now, or None if it may go."""
        committed = self.spent + self.reserved
        if self._limit is not None and committed + estimate > self._limit:
            return BudgetReached(
                f"--max-credits {self._limit:g} reached: {self.spent:g} spent, "
                f"{self.reserved} in flight, the next call needs about {estimate}"
            )
        if self._total is not None and self._spent_before + committed + estimate > self._total:
            return TotalBudgetReached(
                f"--max-total-credits {self._total:g} reached: {self._spent_before:g} spent by "
                f"earlier runs, {self.spent:g} by this one, {self.reserved} in flight, "
                f"the next call needs about {estimate}"
            )
        return None
