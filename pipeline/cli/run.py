"""``pipeline run``: check the manifest, plan, and run the jobs that must run (resumable)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import secrets
import signal
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from pipeline.cli.codes import EXIT_CODES_HELP, ExitCode
from pipeline.cli.options import (
    http_url,
    ids_option,
    non_negative_float,
    positive_float,
    positive_int,
)
from pipeline.client import OneMinClient
from pipeline.config import KEY_ENV, Endpoints, Settings, load_settings
from pipeline.credits import load_credit_table
from pipeline.durability import Syncer
from pipeline.errors import PipelineError
from pipeline.events import EventBus, JobsSkipped
from pipeline.history import (
    folder_summary,
    read_folder_summary,
    sent_anything,
    write_folder_summary,
    write_run_record,
)
from pipeline.ledger import (
    LEDGER_NAME,
    LOCK_NAME,
    LedgerState,
    LedgerWriter,
    OutputLock,
    read_ledger,
)
from pipeline.manifest import Manifest, load_manifest
from pipeline.metrics import write_metrics
from pipeline.models import Job
from pipeline.notify import notify, payload_from_summary, url_problem
from pipeline.plan import CheckedPlan, PlanOptions, Skip, prepare, reviewer_rejections
from pipeline.preflight import mask_upload_bytes
from pipeline.progress import ProgressBar
from pipeline.retry import RetryPolicy
from pipeline.review.decisions import read_decisions
from pipeline.runlog import (
    LOG_FORMATS,
    Heartbeat,
    LogFileError,
    LogListener,
    RunLog,
    log_start,
    log_stop,
)
from pipeline.scheduler import RunOutcome, Scheduler
from pipeline.stats import RunStats
from pipeline.store import Store
from pipeline.summary import format_plan, format_problems
from pipeline.throttle import Throttle

# Stop reasons that end a run with exit 3; anything else but "interrupted" is the plan's end.
INTERRUPTED = "interrupted"

NO_KEY_HELP = f"""\
No API key: set {KEY_ENV} to your 1min.ai key (https://1min.ai, account settings → API), e.g.

    export {KEY_ENV}=...        # never passed on the command line, never printed

or try the pipeline first against the built-in emulator, no key needed:

    pipeline run MANIFEST --emulator
"""


def add_arguments(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run a manifest's jobs (resumable)",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("manifest", type=Path, metavar="MANIFEST")
    run.add_argument(
        "--out", type=Path, help="output folder (default: out/<name> beside the manifest)"
    )
    run.add_argument("--config", type=Path, help="settings file (see configs/)")
    run.add_argument(
        "--api-base", type=http_url, help="API base URL (default: $ONEMIN_API_BASE or the real API)"
    )
    run.add_argument(
        "--asset-base", type=http_url, help="asset host base URL (default: $ONEMIN_ASSET_BASE)"
    )
    run.add_argument("--concurrency", type=positive_int, help="jobs in flight at once")
    run.add_argument(
        "--rpm", type=positive_float, help="requests to the API host per minute, evenly spread"
    )
    run.add_argument("--max-attempts", type=positive_int, help="tries per step before failing")
    run.add_argument(
        "--max-credits", type=non_negative_float, help="stop before this run spends more"
    )
    run.add_argument(
        "--max-total-credits",
        type=non_negative_float,
        help="stop before the output folder's spend over all runs passes this",
    )
    run.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help='send "async": true and poll every record (concurrency bounds records outstanding)',
    )
    run.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    run.add_argument(
        "--limit", type=positive_int, metavar="N", help="run at most N pending jobs (a canary)"
    )
    run.add_argument(
        "--only",
        type=ids_option,
        metavar="IDS",
        help="run only these jobs: ID,ID or @FILE (ids one a line, or the review page's export)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    run.add_argument(
        "--emulator", action="store_true", help="run against the built-in emulator (no key)"
    )
    scale = run.add_argument_group("scale-out (Ray; the [ray] extra)")
    scale.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the shards on a Ray cluster at ADDRESS, or 'local' to start one here",
    )
    scale.add_argument(
        "--shards", type=positive_int, default=2, help="shard actors with --ray (default 2)"
    )
    ops = run.add_argument_group("unattended runs (cron)")
    ops.add_argument("--log-file", type=Path, metavar="PATH", help="append the log here")
    ops.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="log lines as text or JSON"
    )
    ops.add_argument("--verbose", action="store_true", help="also log every retry")
    ops.add_argument(
        "--metrics-file", type=Path, metavar="PATH", help="write a Prometheus textfile here"
    )
    ops.add_argument(
        "--notify", metavar="URL", help="POST the run summary (JSON) here when the run ends"
    )
    run.set_defaults(handler=command_run)


@dataclass
class RunContext:
    manifest: Manifest
    settings: Settings
    out_dir: Path
    api_key: str | None
    args: argparse.Namespace
    log: RunLog
    show_bar: bool = False


_NO_LOG = RunLog(io.StringIO())  # a dry run logs nothing


def default_out(manifest: Manifest) -> Path:
    """``out/<name>`` beside the manifest, so cron without ``cd`` finds the same ledger."""
    return manifest.base_dir / "out" / manifest.name


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "endpoints": {"api_base": args.api_base, "asset_base": args.asset_base},
        "rate": {"rpm": args.rpm, "concurrency": args.concurrency},
        "retry": {"max_attempts": args.max_attempts},
    }
    if args.max_credits is not None:
        flags["max_credits"] = args.max_credits
    if args.max_total_credits is not None:
        flags["max_total_credits"] = args.max_total_credits
    if args.asynchronous:
        flags["submit"] = "async"
    return flags


def plan_options(args: argparse.Namespace, out_dir: Path) -> PlanOptions:
    return PlanOptions(
        retry_failed=args.retry_failed,
        limit=args.limit,
        only=args.only,
        rejected=reviewer_rejections(read_decisions(out_dir)),
    )


def command_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ, _flag_settings(args))
    api_key = os.environ.get(KEY_ENV) or None
    if api_key is None and not args.emulator and not args.dry_run:
        print(NO_KEY_HELP, file=sys.stderr)
        return ExitCode.USAGE
    if args.notify and (problem := url_problem(args.notify)):
        print(f"error: --notify: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    manifest = load_manifest(args.manifest)
    out_dir = args.out or default_out(manifest)
    if args.ray and (problem := _ray_problem(args, manifest)):
        print(problem, file=sys.stderr)
        return ExitCode.USAGE
    if args.dry_run:
        return _dry_run(RunContext(manifest, settings, out_dir, api_key, args, _NO_LOG))
    show_bar = not args.no_progress and sys.stderr.isatty()
    above_bar = show_bar and args.log_file is None
    try:
        log = RunLog.open(args.log_file, args.log_format, verbose=args.verbose, above_bar=above_bar)
    except LogFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    syncer = Syncer()  # fsyncs off the event loop, batched (pipeline.durability)
    with log:
        context = RunContext(manifest, settings, out_dir, api_key, args, log, show_bar)
        try:
            return _locked_run(context, Store(out_dir, syncer), syncer)
        finally:
            syncer.close()


def _locked_run(context: RunContext, store: Store, syncer: Syncer) -> int:
    out_dir, args, manifest = context.out_dir, context.args, context.manifest
    created = not out_dir.exists()
    store.prepare()
    with OutputLock(out_dir):
        ledger = read_ledger(out_dir / LEDGER_NAME)
        _report_ledger_damage(ledger, out_dir)
        plan = prepare(manifest, ledger, plan_options(args, out_dir), load_credit_table())
        if not plan.ok:
            print(format_plan(plan.summary), file=sys.stderr)
            print("nothing was sent.", file=sys.stderr)
            if created:
                _remove_empty(out_dir)  # nothing was sent: leave nothing behind either
            return ExitCode.USAGE
        _print_warnings(plan)
        return asyncio.run(_run(context, store, ledger, plan, syncer))


def _print_warnings(plan: CheckedPlan) -> None:
    summary = plan.summary
    if summary.warning_count:
        text = format_problems(summary.warnings, total=summary.warning_count, heading="warnings")
        print(text, file=sys.stderr)


def _remove_empty(out_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (out_dir / LOCK_NAME).unlink()
        out_dir.rmdir()


def _dry_run(context: RunContext) -> int:
    ledger = read_ledger(context.out_dir / LEDGER_NAME)
    plan = prepare(
        context.manifest, ledger, plan_options(context.args, context.out_dir), load_credit_table()
    )
    print(format_plan(plan.summary), file=sys.stdout if plan.ok else sys.stderr)
    if not plan.ok:
        return ExitCode.USAGE
    print("dry run: nothing was sent.")
    return ExitCode.OK


def _report_ledger_damage(ledger: LedgerState, out_dir: Path) -> None:
    corrupt = ledger.damage.corrupt_lines
    if corrupt:
        shown = ", ".join(map(str, corrupt[:10]))
        more = f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else ""
        print(
            f"warning: {out_dir / LEDGER_NAME}: skipped unreadable line(s) {shown}{more}",
            file=sys.stderr,
        )


async def _run(
    context: RunContext, store: Store, ledger: LedgerState, plan: CheckedPlan, syncer: Syncer
) -> int:
    settings, args = context.settings, context.args
    bus = EventBus()
    stats = RunStats()
    async with AsyncExitStack() as stack:
        endpoints, api_key = settings.endpoints, context.api_key
        if args.emulator:
            endpoints, api_key = await _start_emulator(stack)
        writer = stack.enter_context(LedgerWriter(context.out_dir / LEDGER_NAME, syncer=syncer))
        bus.subscribe(writer)
        bus.subscribe(stats)
        if not args.no_report:
            from pipeline.review.thumbs import ThumbnailPrefetcher

            thumbnails = ThumbnailPrefetcher(context.out_dir)
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
        log_start(
            context.log,
            context.manifest.name,
            context.out_dir,
            plan.total,
            plan.total - stats.skipped,
            _settings_summary(settings, args),
        )
        connector = aiohttp.TCPConnector(limit=settings.rate.concurrency * 2 + 4)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        assert api_key is not None
        client = OneMinClient(session, endpoints, api_key, settings.timeouts)
        scheduler = Scheduler(
            client,
            store,
            bus,
            Throttle(settings.rate),
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
        if args.ray:
            outcome = await _run_on_ray(context, plan, ledger, bus, writer, endpoints, api_key)
        else:
            _install_signal_handlers(scheduler, writer)
            outcome = await scheduler.run(plan.jobs)
        failures = stats.failed + plan.skipped[Skip.FAILED]
        code = exit_code(outcome.stop_reason, failures)
        summary = stats.summary(
            manifest=str(context.manifest.path),
            name=context.manifest.name,
            out_dir=str(context.out_dir),
            exit_code=int(code),
            settings=_settings_summary(settings, args),
        )
    report_path = await _finish(context, ledger, plan, stats, summary, code)
    _print_summary(context, stats, outcome.stop_message, code, report_path, failures)
    return code


def _ray_problem(args: argparse.Namespace, manifest: Manifest) -> str | None:
    """Why the manifest cannot run on this cluster (inputs only this machine can read)."""
    from pipeline.distributed.driver import check_shared_inputs

    if args.emulator and args.ray != "local":
        return "error: --emulator listens on this machine's 127.0.0.1: use it with --ray local"
    jobs = [job for job in manifest.iter_jobs() if isinstance(job, Job)]
    problems = check_shared_inputs(jobs, args.ray)
    if not problems:
        return None
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    return "error: --ray:\n  " + "\n  ".join(problems[:10]) + more


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
        out_dir=context.out_dir,
        ledger_writer_bus=bus,
        resume_state=ledger.resume(),
        max_credits=context.settings.max_credits,
        on_start=lambda driver: _install_signal_handlers(driver, writer),
    )


def _settings_summary(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "concurrency": settings.rate.concurrency,
        "rpm": settings.rate.rpm,
        "max_attempts": settings.retry.max_attempts,
        "max_credits": settings.max_credits,
        "max_total_credits": settings.max_total_credits,
        "submit": settings.submit,
        "emulator": bool(args.emulator),
    }


async def _finish(
    context: RunContext,
    ledger: LedgerState,
    plan: CheckedPlan,
    stats: RunStats,
    summary: dict[str, Any],
    code: ExitCode,
) -> Path | None:
    """What a run leaves for its operator: history, the folder's summary, metrics, the report,
    the log's last line and the notification. A run that sent nothing leaves the last real
    run's figures as they were (SPEC 5); each piece that cannot be written is a warning."""
    out, log, args = context.out_dir, context.log, context.args
    sent = sent_anything(summary)
    states = _folder_states(plan, stats)
    credits_all_runs = ledger.credits_spent + stats.counters["credits/estimated"]
    try:
        if sent:
            summary["record"] = write_run_record(out, summary).relative_to(out).as_posix()
        folder = folder_summary(
            manifest_name=context.manifest.name,
            manifest_total=plan.total,
            states=states,
            credits_all_runs=credits_all_runs,
            last_run=summary if sent else None,
            previous=read_folder_summary(out),
        )
        write_folder_summary(out, folder)
    except OSError as exc:  # a full disk: the ledger already holds what matters
        log.warning("could not write the run history or summary", reason=exc.strerror or str(exc))
    if args.metrics_file is not None:
        _write_metrics(context, states, summary, credits_all_runs, stats, code)
    report_path = None if args.no_report or not sent else _write_report(out, context.manifest)
    log_stop(log, code, summary)
    if args.notify:
        result = await notify(args.notify, payload_from_summary(summary))
        if not result.ok:
            log.warning("notify failed", url=args.notify, reason=result.reason)
    return report_path


def _folder_states(plan: CheckedPlan, stats: RunStats) -> dict[str, int]:
    """Every manifest job's state after this run, counted from the plan and the run alone."""
    done = plan.skipped[Skip.DONE] + stats.succeeded
    failed = plan.skipped[Skip.FAILED] + stats.failed
    return {"succeeded": done, "failed": failed, "pending": plan.total - done - failed}


def _write_metrics(
    context: RunContext,
    states: dict[str, int],
    summary: dict[str, Any],
    credits_all_runs: float,
    stats: RunStats,
    code: ExitCode,
) -> None:
    now = time.time()
    try:
        write_metrics(
            context.args.metrics_file,
            jobs_by_state=states,
            manifest_total=sum(states.values()),
            credits_run=stats.counters["credits/estimated"],
            credits_total=credits_all_runs,
            last_run_ts=now,
            last_success_ts=now if code == ExitCode.OK else None,
            exit_code=int(code),
            duration_s=stats.elapsed(),
            manifest=context.manifest.name,
        )
    except OSError as exc:
        context.log.warning(
            "could not write the metrics file",
            path=str(context.args.metrics_file),
            reason=exc.strerror or str(exc),
        )


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
            writer.close()  # every line is already whole; make them durable and go
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


def _write_report(out_dir: Path, manifest: Manifest) -> Path | None:
    from pipeline.review.page import write_report

    rows = (
        (
            job.id,
            None,
            job.feature.value,
            str(job.image),
            str(job.mask) if job.mask else None,
            job.prompt,
        )
        for job in manifest.iter_jobs()
        if isinstance(job, Job)
    )
    try:
        return write_report(out_dir, rows)
    except (OSError, PipelineError) as exc:
        print(f"warning: could not write the report: {exc}", file=sys.stderr)
        return None


def _print_summary(
    context: RunContext,
    stats: RunStats,
    stop_message: str,
    code: int,
    report: Path | None,
    failures: int,
) -> None:
    counters = stats.counters
    retries = counters["retry/count"]
    lines = [
        f"{context.manifest.name}: {stats.succeeded} succeeded, {stats.failed} failed, "
        f"{stats.skipped} skipped in {stats.elapsed():.1f} s "
        f"({counters['images/written']} images, {retries} retries, "
        f"~{counters['credits/estimated']} credits)",
        f"outputs: {context.out_dir}",
    ]
    if stop_message:
        lines.append(f"stopped: {stop_message}")
    if failures:
        earlier = failures - stats.failed
        also = f" ({earlier} from earlier runs)" if earlier else ""
        lines.append(f"failed jobs{also}: pipeline status {context.out_dir}")
    if code in (ExitCode.STOPPED, ExitCode.INTERRUPTED):
        lines.append("run the same command again to resume; finished jobs are not sent again")
    if report is not None:
        lines.append(f"report: {report}")
    print("\n".join(lines))
