"""``Purchase``: the inputs uploaded, then the feature call(s), each paid once if all goes well;
the credit budget is reserved right before each POST (a call not sent reserves nothing).

How a job is bought:

- **One call**, ``n`` images, when the results can all be fetched: a job of one image, or the
  asset host serves unsigned reads (checked once per run, before the first call of more than
  one image, with one of our uploads: ``AssetHostCheck``).
- **One call of** ``n: 1`` **per image** where it does not (a private bucket serves a record's
  first result only, through its ``temporaryUrl``): the same credits, image ``i`` from call
  ``i``; each call's ledger line names its image, so a resume never buys a paid one again.
  ``--redo-missing`` of a partial job buys its missing images so too.

Each call is sent as the run's ``SubmitPolicy`` says (``"async": true`` or held open). A call
whose answer is lost after it was sent (``AnswerLost``: it may have been charged) is recorded
(``unknown_outcome``), counted as spent, reported to the policy, and sent again at most once
per job, and then only async; a second loss fails the job (``OutcomeUnknown``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from pipeline.errors import AnswerLost, AssetNotFound, OutcomeUnknown
from pipeline.events import AnswerLostAfterSending, EventBus, FeatureSubmitted
from pipeline.models import Asset, FeatureResult, Job
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.job import AssetHostCheck, Client, JobRun, Part, PendingRecord, error_info
from pipeline.scheduler.steps import StepRunner
from pipeline.scheduler.submit import SubmitPolicy
from pipeline.scheduler.uploads import Uploads

CreditsFor = Callable[[Job], int]
LOST_ANSWERS_ALLOWED = 1  # a job's call is re-sent after at most this many lost answers


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
        submit: SubmitPolicy,
        clock: Callable[[], float],
        asset_host: AssetHostCheck | None = None,
    ) -> None:
        self._client = client
        self._steps = steps
        self._uploads = uploads
        self._credits = credits
        self._bus = bus
        self._credits_for = credits_for
        self.submit = submit
        self._clock = clock
        self._asset_host = asset_host or AssetHostCheck(client)

    async def buy(
        self,
        run: JobRun,
        wanted: tuple[int, ...] | None = None,
        paid: Mapping[int, PendingRecord] | None = None,
    ) -> list[Part]:
        """Upload the inputs and pay for the job's images (``wanted``: their indexes, default
        all), once each if all goes well. ``paid``: images an earlier run bought one call per
        image, by index: resumed, never bought again. A part's record may still be processing
        (no result paths): ``Polling`` finishes it."""
        count = run.job.expected_outputs
        wanted = tuple(range(count)) if wanted is None else wanted
        paid = paid or {}
        started = self._clock()
        assets = await self._uploads.assets_for(run) if len(paid) < len(wanted) else {}
        run.timings["upload"] = self._clock() - started
        started = self._clock()
        if await self._per_image(wanted, count, paid, assets):
            parts = [await self._image(run, index, assets, paid.get(index)) for index in wanted]
        else:
            result, estimate = await self._call(run, assets, run.job, None)
            parts = [Part(wanted, result, estimate)]
        run.timings["feature"] = self._clock() - started
        return parts

    async def buy_again(self, run: JobRun, part: Part) -> Part:
        """A part whose record failed (not charged) or is unknown to the API: bought anew."""
        assets = await self._uploads.assets_for(run)
        if part.per_image:
            return await self._image(run, part.indexes[0], assets, None)
        result, estimate = await self._call(run, assets, run.job, None)
        return Part(part.indexes, result, estimate)

    async def _per_image(
        self,
        wanted: tuple[int, ...],
        count: int,
        paid: Mapping[int, PendingRecord],
        assets: dict[str, Asset],
    ) -> bool:
        if paid or wanted != tuple(range(count)):
            return True  # started so by an earlier run, or some images only (--redo-missing)
        if count == 1:
            return False
        return not await self._asset_host.serves_unsigned(assets["image"].path)

    async def _image(
        self, run: JobRun, index: int, assets: dict[str, Asset], paid: PendingRecord | None
    ) -> Part:
        if paid is not None:
            run.attempts = max(run.attempts, paid.attempts)
            return Part((index,), paid.result, paid.credits, per_image=True)
        result, estimate = await self._call(run, assets, replace(run.job, n=1), index)
        return Part((index,), result, estimate, per_image=True)

    async def _call(
        self, run: JobRun, assets: dict[str, Asset], job: Job, part: int | None
    ) -> tuple[FeatureResult, int]:
        """One paid call (its retries included) of ``job`` (the job, or one image of it)."""
        estimate = self._credits_for(job)
        result = await self._call_feature(run, assets, job, estimate, part)
        self._bus.emit(
            FeatureSubmitted(run.job.id, run.planned.key, run.attempts, result, estimate, part)
        )
        return result, estimate

    async def _call_feature(
        self, run: JobRun, assets: dict[str, Asset], job: Job, estimate: int, part: int | None
    ) -> FeatureResult:
        async def attempt() -> FeatureResult:
            mask = assets.get("mask")
            # Right before the POST: a call not sent reserves nothing.
            await self._credits.reserve_for_call(estimate)
            # Asked per call: the mode may change. A call re-sent after a lost answer goes
            # async: it answers at once, so no gateway can lose its answer the same way.
            run.sent_async = self.submit.asynchronous() or run.lost_answers > 0
            run.submitted_at = sent = self._clock()
            try:
                result = await self._client.run_feature(
                    job,
                    assets["image"].path,
                    mask.path if mask else None,
                    asynchronous=run.sent_async,
                )
            except AnswerLost as exc:
                self._answer_lost(run, exc, estimate, part)
                raise
            finally:
                self._credits.release(estimate)
            self._credits.charge(estimate)
            self._credits.observe(result, estimate)
            if result.result_paths:  # finished in the call: the edit took this long
                self.submit.on_finished(self._clock() - sent)
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

    def _answer_lost(self, run: JobRun, exc: AnswerLost, estimate: int, part: int | None) -> None:
        """Record an unknown outcome; raise ``OutcomeUnknown`` if the job already had one."""
        run.lost_answers += 1
        self._credits.possibly_charged(estimate)
        self.submit.on_lost_answer()
        self._bus.emit(
            AnswerLostAfterSending(
                run.job.id,
                run.planned.key,
                "feature",
                run.attempts + 1,  # this try: the step runner counts it once this returns
                error_info(exc),
                estimate,
                part,
            )
        )
        if run.lost_answers > LOST_ANSWERS_ALLOWED:
            raise OutcomeUnknown(
                f"the answers of {run.lost_answers} feature calls were lost after sending "
                f"(last: {exc}); each may have been charged: check the account, then "
                "--retry-failed runs the job again",
                exc.http_status,
            ) from exc
