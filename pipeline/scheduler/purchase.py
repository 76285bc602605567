"""Buying: the inputs uploaded, then the feature call, paid once if all goes well; the credit
budget is reserved right before the POST (a call not sent reserves nothing).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.errors import (
    AssetNotFound,
)
from pipeline.events import (
    FeatureSubmitted,
)
from pipeline.models import Asset, FeatureResult, Job
from pipeline.scheduler.base import (
    _JobRun,
)
from pipeline.scheduler.uploads import UploadSteps


class BuyingSteps(UploadSteps):
    _credits_for: Callable[[Job], int]

    async def _buy(self, run: _JobRun) -> tuple[FeatureResult, int]:
        """Upload the inputs and pay for the feature call (once, if all goes well). The record
        may still be processing (no result paths): ``_settle_record`` polls it."""
        started = self._clock()
        assets = await self._assets_for(run)
        run.timings["upload"] = self._clock() - started
        estimate = self._credits_for(run.job)
        started = self._clock()
        result = await self._call_feature(run, assets, estimate)
        run.timings["feature"] = self._clock() - started
        self._bus.emit(
            FeatureSubmitted(run.job.id, run.planned.key, run.attempts, result, estimate)
        )
        return result, estimate

    async def _call_feature(
        self, run: _JobRun, assets: dict[str, Asset], estimate: int
    ) -> FeatureResult:
        async def attempt() -> FeatureResult:
            mask = assets.get("mask")
            self._reserve(estimate)  # right before the POST: a call not sent reserves nothing
            try:
                # The flag only when set: a sync run calls run_feature exactly as before.
                extra = {"asynchronous": True} if self._asynchronous else {}
                result = await self._client.run_feature(
                    run.job, assets["image"].path, mask.path if mask else None, **extra
                )
            finally:
                self._credits_reserved -= estimate
            self.credits_spent += estimate
            self._observe_credit(result, estimate)
            return result

        while True:
            try:
                return await self._retrying(run, "feature", attempt)
            except AssetNotFound:
                if run.reuploaded:
                    raise
                run.reuploaded = True  # the API forgot an upload: send it again, once
                for asset in assets.values():
                    self._forget_asset(asset.digest)
                assets = await self._assets_for(run)
