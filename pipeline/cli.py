"""The command line: the only place where every stage is wired together, and exit codes decided.

Exit codes (SPEC §2): 0 all done; 1 finished with failed jobs; 2 usage, manifest or preflight
error, nothing sent; 3 stopped (key rejected, out of credits, --max-credits, output folder
unwritable); 130 interrupted after in-flight work settled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pipeline import __version__
from pipeline.client import OneMinClient
from pipeline.config import KEY_ENV, ConfigError, Endpoints, Settings, load_settings
from pipeline.errors import LockError, ManifestError, PipelineError, StoreError
from pipeline.events import EventBus
from pipeline.ledger import (
    LEDGER_NAME,
    LOCK_NAME,
    LedgerState,
    LedgerWriter,
    OutputLock,
    read_ledger,
)
from pipeline.manifest import Manifest, load_manifest
from pipeline.models import PlannedJob
from pipeline.plan import EntrySet, Planner, scan
from pipeline.preflight import Preflight, mask_upload_bytes
from pipeline.progress import ProgressBar
from pipeline.retry import RetryPolicy
from pipeline.scheduler import Scheduler
from pipeline.stats import RunStats, write_summary
from pipeline.status import format_status, read_status
from pipeline.store import Store
from pipeline.throttle import Throttle
from pipeline.validate import format_plan, format_problems, load_credit_table, summarize

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
RUN_FATAL_REASONS = frozenset({"key_rejected", "out_of_credits", "max_credits", "store"})

NO_KEY_HELP = f"""\
No API key: set {KEY_ENV} to your 1min.ai key (https://1min.ai, account settings → API), e.g.

    export {KEY_ENV}=...        # never passed on the command line, never printed

or try the pipeline first against the built-in emulator, no key needed:

    pipeline run MANIFEST --emulator
"""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Batch image editing with the 1min.ai API (gpt-image-1-mini).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a manifest's jobs (resumable)")
    run.add_argument("manifest", type=Path, metavar="MANIFEST")
    run.add_argument("--out", type=Path, help="output folder (default: out/<manifest name>)")
    run.add_argument("--config", type=Path, help="settings file (see configs/)")
    run.add_argument("--api-base", help="API base URL (default: $ONEMIN_API_BASE or the real API)")
    run.add_argument("--asset-base", help="asset host base URL (default: $ONEMIN_ASSET_BASE)")
    run.add_argument("--concurrency", type=positive_int, help="jobs in flight at once")
    run.add_argument("--rpm", type=positive_float, help="feature calls per minute, evenly spread")
    run.add_argument("--max-attempts", type=positive_int, help="tries per step before failing")
    run.add_argument("--max-credits", type=positive_float, help="stop before spending more")
    run.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    run.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    run.add_argument(
        "--emulator", action="store_true", help="run against the built-in emulator (no key)"
    )

    validate = commands.add_parser("validate", help="check a manifest; send nothing")
    validate.add_argument("manifest", type=Path, metavar="MANIFEST")

    status = commands.add_parser("status", help="counts and failures of a run, from its ledger")
    status.add_argument("out", type=Path, metavar="OUT_DIR")

    report = commands.add_parser("report", help="write OUT_DIR/report.html to review a run")
    report.add_argument("out", type=Path, metavar="OUT_DIR")

    emulator = commands.add_parser("emulator", help="serve the local stand-in of the API")
    from pipeline.emulator import add_arguments

    add_arguments(emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "validate":
            return command_validate(args.manifest)
        if args.command == "status":
            return command_status(args.out)
        if args.command == "report":
            return command_report(args.out)
        return command_emulator(args)
    except ManifestError as exc:
        print(format_problems(exc.problems), file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, LockError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# -- validate / status / report / emulator ----------------------------------------------------


def command_validate(manifest_path: Path) -> int:
    summary = summarize(manifest_path)
    print(format_plan(summary), file=sys.stdout if summary.ok else sys.stderr)
    return EXIT_OK if summary.ok else EXIT_USAGE


def command_status(out_dir: Path) -> int:
    if not (out_dir / LEDGER_NAME).is_file():
        print(f"error: no ledger at {out_dir / LEDGER_NAME}", file=sys.stderr)
        return EXIT_USAGE
    print(format_status(read_status(out_dir / LEDGER_NAME)))
    return EXIT_OK


def command_report(out_dir: Path) -> int:
    from pipeline.report import write_report

    if not (out_dir / LEDGER_NAME).is_file():
        print(f"error: no ledger at {out_dir / LEDGER_NAME}", file=sys.stderr)
        return EXIT_USAGE
    print(write_report(out_dir))
    return EXIT_OK


def command_emulator(args: argparse.Namespace) -> int:
    from pipeline.emulator import config_from_args, serve_forever

    return serve_forever(config_from_args(args), args.host, args.port)


# -- run --------------------------------------------------------------------------------------


@dataclass
class RunContext:
    manifest: Manifest
    settings: Settings
    out_dir: Path
    api_key: str | None
    args: argparse.Namespace


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "endpoints": {"api_base": args.api_base, "asset_base": args.asset_base},
        "rate": {"rpm": args.rpm, "concurrency": args.concurrency},
        "retry": {"max_attempts": args.max_attempts},
    }
    if args.max_credits is not None:
        flags["max_credits"] = args.max_credits
    return flags


def command_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ, _flag_settings(args))
    api_key = os.environ.get(KEY_ENV) or None
    if api_key is None and not args.emulator and not args.dry_run:
        print(NO_KEY_HELP, file=sys.stderr)
        return EXIT_USAGE
    manifest = load_manifest(args.manifest)
    out_dir = args.out or Path("out") / manifest.name
    context = RunContext(manifest, settings, out_dir, api_key, args)
    if args.dry_run:
        return _dry_run(context)
    store = Store(out_dir)
    created = not out_dir.exists()
    store.prepare()
    with OutputLock(out_dir):
        ledger = read_ledger(out_dir / LEDGER_NAME)
        _report_ledger_damage(ledger, out_dir)
        plan = _checked_plan(manifest, args, ledger)
        if plan is None:
            if created:
                _remove_empty(out_dir)  # nothing was sent: leave nothing behind either
            return EXIT_USAGE
        return asyncio.run(_run(context, store, ledger, plan))


@dataclass
class CheckedPlan:
    """The first pass's verdict, and the second pass ready to stream into the workers."""

    total: int  # valid jobs, done ones included
    skipped: Counter[str]  # jobs the first pass found done ("done") or failed before ("failed")
    jobs: Iterator[PlannedJob]


def _checked_plan(
    manifest: Manifest, args: argparse.Namespace, ledger: LedgerState
) -> CheckedPlan | None:
    """Check everything first (None: problems were printed), then stream what must run."""
    # One Preflight and Planner for both passes: each input file is read and hashed once.
    preflight, planner, runnable = Preflight(), Planner(), EntrySet()
    skipped: Counter[str] = Counter()
    done = _done_keys(ledger, args.retry_failed, skipped)
    summary = summarize(
        args.manifest, done, preflight=preflight, planner=planner, runnable=runnable
    )
    if not summary.ok:
        print(format_plan(summary), file=sys.stderr)
        print("nothing was sent.", file=sys.stderr)
        return None
    if summary.warning_count:
        warnings = format_problems(
            summary.warnings, total=summary.warning_count, heading="warnings"
        )
        print(warnings, file=sys.stderr)
    # The second pass reads only the entries the first found something to do for.
    jobs = _planned_jobs(manifest, preflight.next_pass(), planner, runnable)
    return CheckedPlan(summary.total.jobs, skipped, jobs)


def _remove_empty(out_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (out_dir / LOCK_NAME).unlink()
        out_dir.rmdir()


def _done_keys(
    ledger: LedgerState, retry_failed: bool, skipped: Counter[str] | None = None
) -> Callable[[str, str], bool]:
    def done(job_id: str, key: str) -> bool:
        status = ledger.status_of(job_id, key)
        if status == "succeeded":
            reason = "done"
        elif status == "failed" and not retry_failed:
            reason = "failed"
        else:
            return False
        if skipped is not None:
            skipped[reason] += 1
        return True

    return done


def _dry_run(context: RunContext) -> int:
    ledger = read_ledger(context.out_dir / LEDGER_NAME)
    retry_failed = context.args.retry_failed
    summary = summarize(context.args.manifest, done_keys=_done_keys(ledger, retry_failed))
    print(format_plan(summary), file=sys.stdout if summary.ok else sys.stderr)
    if not summary.ok:
        return EXIT_USAGE
    print("dry run: nothing was sent.")
    return EXIT_OK


def _report_ledger_damage(ledger: LedgerState, out_dir: Path) -> None:
    if ledger.corrupt_lines:
        shown = ", ".join(map(str, ledger.corrupt_lines[:10]))
        more = (
            f" and {len(ledger.corrupt_lines) - 10} more" if len(ledger.corrupt_lines) > 10 else ""
        )
        print(
            f"warning: {out_dir / LEDGER_NAME}: skipped unreadable line(s) {shown}{more}",
            file=sys.stderr,
        )


def _planned_jobs(
    manifest: Manifest, preflight: Preflight, planner: Planner, wanted: EntrySet
) -> Iterator[PlannedJob]:
    """The second, streaming pass: preflight already passed, so only jobs come out."""
    for item in scan(manifest, preflight, planner, wanted):
        if isinstance(item, PlannedJob):
            yield item


async def _run(context: RunContext, store: Store, ledger: LedgerState, plan: CheckedPlan) -> int:
    settings, args = context.settings, context.args
    bus = EventBus()
    stats = RunStats()
    for reason, count in plan.skipped.items():  # the second pass does not even read these
        stats.counters[f"jobs/skipped/{reason}"] += count
    async with AsyncExitStack() as stack:
        endpoints, api_key = settings.endpoints, context.api_key
        if args.emulator:
            endpoints, api_key = await _start_emulator(stack)
        writer = stack.enter_context(LedgerWriter(context.out_dir / LEDGER_NAME))
        bus.subscribe(writer)
        bus.subscribe(stats)
        if not args.no_report:
            from pipeline.report import ThumbnailPrefetcher

            thumbnails = ThumbnailPrefetcher(context.out_dir)
            stack.callback(thumbnails.close)
            bus.subscribe(thumbnails)
        if not args.no_progress and sys.stderr.isatty():
            bar = ProgressBar(plan.total, stats, initial=stats.skipped)
            stack.callback(bar.close)
            bus.subscribe(bar)
        connector = aiohttp.TCPConnector(limit=settings.rate.concurrency * 2 + 4)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        assert api_key is not None
        client = OneMinClient(session, endpoints, api_key, settings.timeouts)
        credit_table = load_credit_table()
        scheduler = Scheduler(
            client,
            store,
            bus,
            Throttle(settings.rate),
            RetryPolicy(settings.retry),
            ledger,
            concurrency=settings.rate.concurrency,
            credits_for=credit_table.for_job,
            max_credits=settings.max_credits,
            retry_failed=args.retry_failed,
            mask_converter=mask_upload_bytes,
        )
        _install_signal_handlers(scheduler, writer)
        outcome = await scheduler.run(plan.jobs)
    code = _exit_code(outcome.stop_reason, stats.failed)
    summary = stats.summary(
        manifest=str(context.manifest.path),
        name=context.manifest.name,
        out_dir=str(context.out_dir),
        exit_code=code,
        settings={
            "concurrency": settings.rate.concurrency,
            "rpm": settings.rate.rpm,
            "max_attempts": settings.retry.max_attempts,
            "max_credits": settings.max_credits,
            "emulator": bool(args.emulator),
        },
    )
    try:
        write_summary(context.out_dir, summary)
    except OSError as exc:  # a full disk: the ledger already holds what matters
        print(f"warning: could not write the summary: {exc.strerror or exc}", file=sys.stderr)
    report_path = None if args.no_report else _write_report(context.out_dir)
    _print_summary(context, stats, outcome.stop_message, code, report_path)
    return code


async def _start_emulator(stack: AsyncExitStack) -> tuple[Endpoints, str]:
    from pipeline.emulator import EmulatorConfig, EmulatorServer

    key = secrets.token_urlsafe(16)  # a throwaway key: the real one is never needed here
    server = EmulatorServer(EmulatorConfig(api_key=key))
    await stack.enter_async_context(server)
    return Endpoints(server.api_base, server.asset_base), key


def _install_signal_handlers(scheduler: Scheduler, writer: LedgerWriter) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if scheduler.stopping:
            writer.close()  # every line is already whole; make them durable and go
            os._exit(EXIT_INTERRUPTED)
        name = signal.Signals(signum).name
        print(
            f"\n{name}: finishing the jobs in flight, then stopping "
            "(again to stop at once; the ledger stays valid)",
            file=sys.stderr,
        )
        scheduler.request_stop("interrupted", f"stopped by {name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def _exit_code(stop_reason: str | None, failed: int) -> int:
    if stop_reason == "interrupted":
        return EXIT_INTERRUPTED
    if stop_reason in RUN_FATAL_REASONS:
        return EXIT_STOPPED
    return EXIT_FAILED if failed else EXIT_OK


def _write_report(out_dir: Path) -> Path | None:
    try:
        from pipeline.report import write_report
    except ImportError:
        return None
    try:
        return write_report(out_dir)
    except (OSError, PipelineError) as exc:
        print(f"warning: could not write the report: {exc}", file=sys.stderr)
        return None


def _print_summary(
    context: RunContext, stats: RunStats, stop_message: str, code: int, report: Path | None
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
    if stats.failed:
        lines.append(f"failed jobs: pipeline status {context.out_dir}")
    if code in (EXIT_STOPPED, EXIT_INTERRUPTED):
        lines.append("run the same command again to resume; finished jobs are not sent again")
    if report is not None:
        lines.append(f"report: {report}")
    print("\n".join(lines))
