"""``Purchase``: the inputs uploaded, then the feature call, paid once if all goes well; the
credit budget is reserved right before the POST (a call not sent reserves nothing).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.errors import AssetNotFound
from pipeline.events import EventBus, FeatureSubmitted
from pipeline.models import Asset, FeatureResult, Job
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.job import Client, JobRun
from pipeline.scheduler.steps import StepRunner
from pipeline.scheduler.uploads import Uploads

CreditsFor = Callable[[Job], int]


class Purchase:
    def __init__(
        self,
        client: Client,
        steps: StepRunner,
        uploads: Uploads,
        credits: CreditBudget,
        bus: EventBus,
        credits_for: CreditsFor,
        *,
        asynchronous: bool,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._steps = steps
        self._uploads = uploads
        self._credits = credits
        self._bus = bus
        self._credits_for = credits_for
        self.asynchronous = asynchronous
        self._clock = clock

    async def buy(self, run: JobRun) -> tuple[FeatureResult, int]:
        """Upload the inputs and pay for the feature call (once, if all goes well). The record
        may still be processing (no result paths): ``Polling`` finishes it."""
        started = self._clock()
        assets = await self._uploads.assets_for(run)
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
        self, run: JobRun, assets: dict[str, Asset], estimate: int
    ) -> FeatureResult:
        async def attempt() -> FeatureResult:
            mask = assets.get("mask")
            # Right before the POST: a call not sent reserves nothing.
            await self._credits.reserve_for_call(estimate)
            try:
                # The flag only when set: a sync run calls run_feature exactly as before.
                extra = {"asynchronous": True} if self.asynchronous else {}
                result = await self._client.run_feature(
                    run.job, assets["image"].path, mask.path if mask else None, **extra
                )
            finally:
                self._credits.release(estimate)
            self._credits.charge(estimate)
            self._credits.observe(result, estimate)
            return result

        while True:
            try:
                return await self._steps.run(run, "feature", attempt)
            except AssetNotFound:
                if run.reuploaded:
                    raise
                run.reuploaded = True  # the API forgot an upload: send it again, once
                for asset in assets.values():
                    self._uploads.forget(asset.digest)
                assets = await self._uploads.assets_for(run)
