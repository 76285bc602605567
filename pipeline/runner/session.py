"""One checked plan run to its end: listeners, the client, the scheduler (or Ray), signals.

``runner.start`` turns options into a ``RunContext`` and a checked plan; this module runs it and
``runner.aftermath`` writes what the run leaves behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
from contextlib import AsyncExitStack
from typing import Any, Protocol

import aiohttp

from pipeline.api.client import OneMinClient
from pipeline.api.retry import RetryPolicy
from pipeline.api.throttle import Throttle
from pipeline.config import Endpoints, Settings
from pipeline.credits import load_credit_table
from pipeline.durability import Syncer
from pipeline.errors import ExitCode, StopReason
from pipeline.events import EventBus, JobsSkipped
from pipeline.layout import LEDGER_NAME
from pipeline.ledger import LedgerState, LedgerWriter
from pipeline.plan.prepare import CheckedPlan, Skip
from pipeline.preflight import mask_upload_bytes
from pipeline.reporting.progress import ProgressBar
from pipeline.reporting.runlog import Heartbeat, LogListener, log_start
from pipeline.reporting.stats import RunStats
from pipeline.review.thumbs import ThumbnailPrefetcher
from pipeline.runner.aftermath import finish_run, summary_lines
from pipeline.runner.options import RunContext
from pipeline.runner.results import RunResult
from pipeline.scheduler import (
    CreditBudget,
    DoneJobs,
    PhotoReader,
    Refetcher,
    RunOutcome,
    Scheduler,
    build_scheduler,
    scheduler_options,
)
from pipeline.store.local import Store


async def run_session(
    context: RunContext,
    store: Store,
    ledger: LedgerState,
    plan: CheckedPlan,
    syncer: Syncer,
    done: DoneJobs | None = None,
    photos: PhotoReader | None = None,
) -> RunResult:
    settings, options = context.settings, context.options
    bus = EventBus()
    stats = RunStats(rpm=settings.rate.rpm)
    async with AsyncExitStack() as stack:
        endpoints, api_key = settings.endpoints, context.api_key
        if options.emulator:
            endpoints, api_key = await _start_emulator(stack)
        state_dir = context.target.state_dir
        # The writer folds its lines into the run's state and keeps the ledger's checkpoint.
        writer = LedgerWriter(state_dir / LEDGER_NAME, syncer=syncer, state=ledger)
        stack.enter_context(writer)
        bus.subscribe(writer)
        bus.subscribe(stats)
        _subscribe_listeners(context, plan, bus, stats, stack)
        log_start(
            context.log,
            context.manifest.name,
            context.target.out,
            plan.total,
            plan.total - stats.skipped,
            settings_summary(context),
        )
        connector = aiohttp.TCPConnector(limit=settings.rate.ceiling * 2 + 4)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        assert api_key is not None
        client = OneMinClient(session, endpoints, api_key, settings.timeouts)
        throttle = Throttle(settings.rate)  # one budget: the run and the re-fetch share it
        scheduler = _scheduler(settings, client, store, bus, ledger, throttle, photos)
        refetcher = Refetcher(
            client,
            store,
            throttle,
            bus,
            context.target.state_dir,
            stopping=lambda: scheduler.stopping,
            look=context.target.outputs_look(),
        )
        refetch = asyncio.create_task(refetcher.run(done or DoneJobs()))  # beside the run, free
        if options.ray:
            outcome = await _run_on_ray(context, plan, ledger, bus, writer, endpoints, api_key)
        else:
            _install_signal_handlers(context, scheduler, writer)
            outcome = await scheduler.run(plan.jobs)
        refetched = await refetch
        failures = stats.failed + plan.skipped[Skip.FAILED]
        failures += stats.partial + plan.skipped[Skip.PARTIAL]  # paid images missing: exit 1
        code = exit_code(outcome.stop_reason, failures)
        summary = stats.summary(
            manifest=str(context.manifest.path),
            name=context.manifest.name,
            out_dir=context.target.out,
            exit_code=int(code),
            settings=settings_summary(context),
        )
    report_path = await finish_run(context, ledger, plan, stats, summary, code)
    lines = summary_lines(context, stats, outcome.stop_message, code, report_path, failures)
    for line in [*lines, *refetched.lines(context.target.state_dir)]:
        context.console.say(line)
    return RunResult.of_run(context, stats, outcome, code, report_path, summary)


def _subscribe_listeners(
    context: RunContext, plan: CheckedPlan, bus: EventBus, stats: RunStats, stack: AsyncExitStack
) -> None:
    """Thumbnails for the report, the log, and a progress bar or a heartbeat."""
    if context.options.report:
        thumbnails = ThumbnailPrefetcher(context.target.state_dir)
        stack.callback(thumbnails.close)
        bus.subscribe(thumbnails)
    for reason, count in plan.skipped.items():  # the run does not even read these
        bus.emit(JobsSkipped(reason.value, count))
    bus.subscribe(LogListener(context.log, plan.total))
    if context.options.progress:
        bar = ProgressBar(plan.total, stats, initial=stats.skipped)
        stack.callback(bar.close)
        bus.subscribe(bar)
    else:  # nobody sees a bar: a timestamped line a minute says how far the run is
        heartbeat = Heartbeat(context.log, stats, plan.total)
        heartbeat.start()
        stack.push_async_callback(heartbeat.stop)


def _scheduler(
    settings: Settings,
    client: OneMinClient,
    store: Store,
    bus: EventBus,
    ledger: LedgerState,
    throttle: Throttle,
    photos: PhotoReader | None,
) -> Scheduler:
    return build_scheduler(
        client,
        store,
        bus,
        throttle,
        ledger.resume(),
        policy=RetryPolicy(settings.retry),
        options=scheduler_options(settings),
        credits=CreditBudget(
            settings.max_credits, settings.max_total_credits, ledger.credits_spent
        ),
        credits_for=load_credit_table().for_job,
        mask_converter=mask_upload_bytes,
        photos=photos,
    )


async def _run_on_ray(
    context: RunContext,
    plan: CheckedPlan,
    ledger: LedgerState,
    bus: EventBus,
    writer: LedgerWriter,
    endpoints: Endpoints,
    api_key: str,
) -> RunOutcome:
    """The same plan on Ray shard actors; this process stays the ledger's single writer.

    Imported here, not at the top: without ``--ray`` nothing of Ray is imported (it takes
    seconds and is an optional extra)."""
    from pipeline.distributed.driver import run_distributed

    assert context.options.ray is not None
    return await run_distributed(
        plan.jobs,
        address=context.options.ray,
        shards=context.options.shards,
        endpoints=endpoints,
        api_key=api_key,
        settings=context.settings,
        target=context.target,  # a bucket OUT: each shard puts its images there itself
        ledger_writer_bus=bus,
        resume_state=ledger.resume(),
        max_credits=context.settings.max_credits,
        max_total_credits=context.settings.max_total_credits,
        spent_before=ledger.credits_spent,
        on_start=lambda driver: _install_signal_handlers(context, driver, writer),
    )


def settings_summary(context: RunContext) -> dict[str, Any]:
    settings = context.settings
    return {
        "concurrency": settings.rate.concurrency,
        "max_concurrency": settings.rate.max_concurrency,
        "rpm": settings.rate.rpm,
        "max_attempts": settings.retry.max_attempts,
        "max_credits": settings.max_credits,
        "max_total_credits": settings.max_total_credits,
        "submit": settings.submit,
        "emulator": context.options.emulator,
    }


async def _start_emulator(stack: AsyncExitStack) -> tuple[Endpoints, str]:
    # Imported here: only --emulator needs the server and its image code (startup time).
    from pipeline.emulator import EmulatorConfig, EmulatorServer

    key = secrets.token_urlsafe(16)  # a throwaway key: the real one is never needed here
    server = EmulatorServer(EmulatorConfig(api_key=key))
    await stack.enter_async_context(server)
    return Endpoints(server.api_base, server.asset_base), key


class Stoppable(Protocol):
    """A scheduler or a Ray driver: what a signal needs of it."""

    @property
    def stopping(self) -> bool: ...
    def request_stop(self, reason: str, message: str = "") -> None: ...


def _install_signal_handlers(
    context: RunContext, scheduler: Stoppable, writer: LedgerWriter
) -> None:
    """Ctrl-C and SIGTERM settle the jobs in flight; a second one exits at once. Only in the
    main thread: a host application running the Python API elsewhere keeps its own signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if scheduler.stopping:
            writer.close(checkpoint=False)  # every line is whole; make them durable and go
            os._exit(ExitCode.INTERRUPTED)
        name = signal.Signals(signum).name
        context.console.warn(
            f"\n{name}: finishing the jobs in flight, then stopping "
            "(again to stop at once; the ledger stays valid)"
        )
        scheduler.request_stop(StopReason.INTERRUPTED, f"stopped by {name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def exit_code(stop_reason: str | None, failures: int) -> ExitCode:
    """A stop beats failures; failures remaining (new or earlier) give 1 (docs/cli.md)."""
    if stop_reason == StopReason.INTERRUPTED:
        return ExitCode.INTERRUPTED
    if stop_reason is not None:
        return ExitCode.STOPPED
    return ExitCode.FAILED if failures else ExitCode.OK
