"""``build_scheduler``: the one place a scheduler is put together, for a run on this machine
(``runner.session``) and for each batch of a Ray shard (``distributed.shard``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Gate
from pipeline.config import (
    CONCURRENCY,
    CONCURRENCY_AUTO,
    MAX_CONCURRENCY,
    SUBMIT,
    Settings,
    SubmitMode,
    Timeouts,
)
from pipeline.events import EventBus
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.inflight import (
    REQUESTS_ASYNC,
    REQUESTS_SYNC,
    InflightController,
    Slots,
    WatchedGate,
)
from pipeline.scheduler.job import (
    AssetHostCheck,
    Client,
    MaskConverter,
    PhotoReader,
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

    concurrency: int | str = CONCURRENCY  # jobs in flight: a number, or "auto"
    max_concurrency: int = MAX_CONCURRENCY  # the ceiling of "auto"
    submit: SubmitMode = SUBMIT
    timeouts: Timeouts = field(default_factory=Timeouts)
    breaker_jobs: int | None = None  # None: the retry policy's (0 disables the breaker)
    # The share of the gate's budget this pool may fill ("auto"): a Ray shard's batch has part.
    budget_share: float = 1.0


def scheduler_options(
    settings: Settings, concurrency: int | None = None, budget_share: float = 1.0
) -> SchedulerOptions:
    """The pool's options from a run's settings (a shard's batch: its ``concurrency`` when the
    run's is a number, its ``budget_share`` under auto)."""
    rate = settings.rate
    fixed = rate.concurrency if concurrency is None or rate.auto else concurrency
    return SchedulerOptions(
        concurrency=fixed,
        max_concurrency=max(1, int(rate.max_concurrency * budget_share)),
        submit=settings.submit,
        timeouts=settings.timeouts,
        budget_share=budget_share,
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
    photos: PhotoReader | None = None,
) -> Scheduler:
    """The pool and its parts, each handed what it needs. ``submit``: how each feature call is
    sent (default: the policy of ``options.submit``). ``photos``: reads the photos a first run
    planned unread (``PlannedJob.unread``)."""
    policy = policy or RetryPolicy()
    options = options or SchedulerOptions()
    credits = credits or CreditBudget()
    timing = timing or Timing()
    stop = StopSignal()
    submit = submit or submit_policy(options.submit, options.timeouts.gateway)
    inflight, slots = _admission(gate, options, timing, submit)
    if inflight is not None:
        gate = WatchedGate(gate, inflight)  # 429s reach the controller too
    steps = StepRunner(gate, policy, bus, stop, timing.sleep, timing.clock)
    uploads = Uploads(client, steps, resume, bus, store, mask_converter, photos=photos)
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
        uploads=uploads,
        purchase=purchase,
        polling=polling,
        results=Results(client, store, steps, stop, timing.clock, asset_host),
        credits=credits,
        stop=stop,
        slots=slots,
        inflight=inflight,
        breaker_jobs=breaker,
        clock=timing.clock,
        sleep=timing.sleep,
    )


def _admission(
    gate: Gate, options: SchedulerOptions, timing: Timing, submit: SubmitPolicy
) -> tuple[InflightController | None, Slots]:
    """The limit of jobs in flight: fixed, or the controller's under ``auto``."""
    if options.concurrency != CONCURRENCY_AUTO:
        fixed = max(1, int(options.concurrency))
        return None, Slots(lambda: fixed, sleep=timing.sleep)
    share = options.budget_share
    inflight = InflightController(
        budget=lambda: gate.current_rpm * share / 60.0,
        clock=timing.clock,
        ceiling=options.max_concurrency,
        requests_prior=REQUESTS_SYNC if options.submit == "sync" else REQUESTS_ASYNC,
        cautious=submit.sync_untried,
    )
    slots = Slots(inflight.limit, sleep=timing.sleep, time_bound=lambda: inflight.grows_with_time)
    return inflight, slots
