"""One checked plan run to its end: listeners, the client, the scheduler (or Ray), signals.

``pipeline.cli.run`` turns the arguments into a ``RunContext`` and a checked plan; this module
runs it and ``run_outputs`` writes what the run leaves behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from pipeline.cli.codes import ExitCode
from pipeline.client import OneMinClient
from pipeline.config import Endpoints, Settings
from pipeline.credits import load_credit_table
from pipeline.durability import Syncer
from pipeline.events import EventBus, JobsSkipped
from pipeline.ledger import LEDGER_NAME, LedgerState, LedgerWriter
from pipeline.manifest import Manifest
from pipeline.outputs import OutputTarget
from pipeline.plan import CheckedPlan, Skip
from pipeline.preflight import mask_upload_bytes
from pipeline.progress import ProgressBar
from pipeline.refetch import DoneJobs, Refetcher
from pipeline.retry import RetryPolicy
from pipeline.runlog import Heartbeat, LogListener, RunLog, log_start
from pipeline.scheduler import RunOutcome, Scheduler
from pipeline.stats import RunStats
from pipeline.store import Store
from pipeline.throttle import Throttle

# Stop reasons that end a run with exit 3; anything else but "interrupted" is the plan's end.
INTERRUPTED = "interrupted"


@dataclass
class RunContext:
    manifest: Manifest
    settings: Settings
    target: OutputTarget  # where outputs go, and the local folder of the ledger and summaries
    api_key: str | None
    args: argparse.Namespace
    log: RunLog
    show_bar: bool = False


async def run_session(
    context: RunContext,
    store: Store,
    ledger: LedgerState,
    plan: CheckedPlan,
    syncer: Syncer,
    done: DoneJobs | None = None,
) -> int:
    from pipeline.cli.run_outputs import finish_run, print_summary

    settings, args = context.settings, context.args
    bus = EventBus()
    stats = RunStats()
    async with AsyncExitStack() as stack:
        endpoints, api_key = settings.endpoints, context.api_key
        if args.emulator:
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
            settings_summary(settings, args),
        )
        connector = aiohttp.TCPConnector(limit=settings.rate.concurrency * 2 + 4)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        assert api_key is not None
        client = OneMinClient(session, endpoints, api_key, settings.timeouts)
        throttle = Throttle(settings.rate)  # one budget: the run and the re-fetch share it
        scheduler = _scheduler(settings, client, store, bus, ledger, throttle)
        refetcher = Refetcher(
            client,
            store,
            throttle,
            writer.write,
            context.target.state_dir,
            stopping=lambda: scheduler.stopping,
            gone=context.target.outputs_gone(),
        )
        refetch = asyncio.create_task(refetcher.run(done or DoneJobs()))  # beside the run, free
        if args.ray:
            outcome = await _run_on_ray(context, plan, ledger, bus, writer, endpoints, api_key)
        else:
            _install_signal_handlers(scheduler, writer)
            outcome = await scheduler.run(plan.jobs)
        refetched = await refetch
        failures = stats.failed + plan.skipped[Skip.FAILED]
        code = exit_code(outcome.stop_reason, failures)
        summary = stats.summary(
            manifest=str(context.manifest.path),
            name=context.manifest.name,
            out_dir=context.target.out,
            exit_code=int(code),
            settings=settings_summary(settings, args),
        )
    report_path = await finish_run(context, ledger, plan, stats, summary, code)
    print_summary(context, stats, outcome.stop_message, code, report_path, failures)
    for line in refetched.lines(context.target.state_dir):
        print(line)
    return code


def _subscribe_listeners(
    context: RunContext, plan: CheckedPlan, bus: EventBus, stats: RunStats, stack: AsyncExitStack
) -> None:
    """Thumbnails for the report, the log, and a progress bar or a heartbeat."""
    if not context.args.no_report:
        from pipeline.review.thumbs import ThumbnailPrefetcher

        thumbnails = ThumbnailPrefetcher(context.target.state_dir)
        stack.callback(thumbnails.close)
        bus.subscribe(thumbnails)
    for reason, count in plan.skipped.items():  # the run does not even read these
        bus.emit(JobsSkipped(reason.value, count))
    bus.subscribe(LogListener(context.log, plan.total))
    if context.show_bar:
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
) -> Scheduler:
    return Scheduler(
        client,
        store,
        bus,
        throttle,
        RetryPolicy(settings.retry),
        ledger.resume(),
        concurrency=settings.rate.concurrency,
        credits_for=load_credit_table().for_job,
        max_credits=settings.max_credits,
        max_total_credits=settings.max_total_credits,
        spent_before=ledger.credits_spent,
        submit=settings.submit,
        timeouts=settings.timeouts,
        mask_converter=mask_upload_bytes,
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
    """The same plan on Ray shard actors; this process stays the ledger's single writer."""
    from pipeline.distributed.driver import run_distributed

    return await run_distributed(
        plan.jobs,
        address=context.args.ray,
        shards=context.args.shards,
        endpoints=endpoints,
        api_key=api_key,
        settings=context.settings,
        out_dir=context.target.state_dir,  # a local OUT: run.py refuses --ray with a bucket
        ledger_writer_bus=bus,
        resume_state=ledger.resume(),
        max_credits=context.settings.max_credits,
        on_start=lambda driver: _install_signal_handlers(driver, writer),
    )


def settings_summary(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "concurrency": settings.rate.concurrency,
        "rpm": settings.rate.rpm,
        "max_attempts": settings.retry.max_attempts,
        "max_credits": settings.max_credits,
        "max_total_credits": settings.max_total_credits,
        "submit": settings.submit,
        "emulator": bool(args.emulator),
    }


async def _start_emulator(stack: AsyncExitStack) -> tuple[Endpoints, str]:
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


def _install_signal_handlers(scheduler: Stoppable, writer: LedgerWriter) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if scheduler.stopping:
            writer.close(checkpoint=False)  # every line is whole; make them durable and go
            os._exit(ExitCode.INTERRUPTED)
        name = signal.Signals(signum).name
        print(
            f"\n{name}: finishing the jobs in flight, then stopping "
            "(again to stop at once; the ledger stays valid)",
            file=sys.stderr,
        )
        scheduler.request_stop(INTERRUPTED, f"stopped by {name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def exit_code(stop_reason: str | None, failures: int) -> ExitCode:
    """SPEC 2 and 5: a stop beats failures; failures remaining (new or earlier) give 1."""
    if stop_reason == INTERRUPTED:
        return ExitCode.INTERRUPTED
    if stop_reason is not None:
        return ExitCode.STOPPED
    return ExitCode.FAILED if failures else ExitCode.OK
