"""``build_scheduler``: the one place a scheduler is put together, for a run on this machine
(``runner.session``) and for each batch of a Ray shard (``distributed.shard``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Gate
from pipeline.config import CONCURRENCY, SUBMIT, Settings, SubmitMode, Timeouts
from pipeline.events import EventBus
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.job import (
    AssetHostCheck,
    Client,
    MaskConverter,
    ResumeState,
    StopSignal,
    Timing,
)
from pipeline.scheduler.polling import Polling
from pipeline.scheduler.pool import Scheduler
from pipeline.scheduler.purchase import CreditsFor, Purchase
from pipeline.scheduler.results import Results
from pipeline.scheduler.steps import StepRunner
from pipeline.scheduler.submit import SubmitPolicy, submit_policy
from pipeline.scheduler.uploads import Uploads
from pipeline.store.local import Store


@dataclass(frozen=True)
class SchedulerOptions:
    """How the pool runs; every field has the run's default."""

    concurrency: int = CONCURRENCY
    submit: SubmitMode = SUBMIT
    timeouts: Timeouts = field(default_factory=Timeouts)
    breaker_jobs: int | None = None  # None: the retry policy's (0 disables the breaker)
    max_outstanding: int | None = None  # --async: records in flight (default: per worker)


def scheduler_options(settings: Settings, concurrency: int | None = None) -> SchedulerOptions:
    """The pool's options from a run's settings (``concurrency``: a shard's share)."""
    return SchedulerOptions(
        concurrency=settings.rate.concurrency if concurrency is None else concurrency,
        submit=settings.submit,
        timeouts=settings.timeouts,
    )


def build_scheduler(
    client: Client,
    store: Store,
    bus: EventBus,
    gate: Gate,
    resume: ResumeState,
    *,
    policy: RetryPolicy | None = None,
    options: SchedulerOptions | None = None,
    credits: CreditBudget | None = None,
    credits_for: CreditsFor | None = None,
    mask_converter: MaskConverter | None = None,
    timing: Timing | None = None,
    submit: SubmitPolicy | None = None,
) -> Scheduler:
    """The pool and its parts, each handed what it needs. ``submit``: how each feature call is
    sent (default: the policy of ``options.submit``)."""
    policy = policy or RetryPolicy()
    options = options or SchedulerOptions()
    credits = credits or CreditBudget()
    timing = timing or Timing()
    stop = StopSignal()
    steps = StepRunner(gate, policy, bus, stop, timing.sleep)
    uploads = Uploads(client, steps, resume, bus, store, mask_converter)
    submit = submit or submit_policy(options.submit)
    # asked once per run, by whichever part needs it first
    asset_host = AssetHostCheck(client, timing.sleep)
    purchase = Purchase(
        client,
        steps,
        uploads,
        credits,
        bus,
        credits_for or (lambda _job: 0),
        submit=submit,
        clock=timing.clock,
        asset_host=asset_host,
    )
    polling = Polling(client, steps, bus, credits, stop, options.timeouts, timing, submit)
    breaker = policy.settings.breaker_jobs if options.breaker_jobs is None else options.breaker_jobs
    return Scheduler(
        bus=bus,
        store=store,
        resume=resume,
        purchase=purchase,
        polling=polling,
        results=Results(client, store, steps, stop, timing.clock, asset_host),
        credits=credits,
        stop=stop,
        concurrency=options.concurrency,
        breaker_jobs=breaker,
        max_outstanding=options.max_outstanding,
        clock=timing.clock,
    )
