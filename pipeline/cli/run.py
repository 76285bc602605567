"""``pipeline run``: arguments to a checked plan, then ``run_session`` runs it (resumable).

``run_session`` holds the run itself (listeners, scheduler or Ray, signals) and ``run_outputs``
what the run leaves behind (history, summary, metrics, report, the last lines printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.codes import EXIT_CODES_HELP, ExitCode
from pipeline.cli.options import (
    add_redo_missing,
    concurrency_option,
    http_url,
    ids_option,
    non_negative_float,
    out_option,
    positive_float,
    positive_int,
)
from pipeline.config import KEY_ENV, http_url_problem, load_settings
from pipeline.credits import load_credit_table
from pipeline.durability import Syncer
from pipeline.layout import LEDGER_NAME, LOCK_NAME, STAGING_DIR
from pipeline.ledger import LedgerState, OutputLock, read_ledger
from pipeline.ledger.decisions import read_decisions
from pipeline.manifest import Manifest, load_manifest
from pipeline.models import Job
from pipeline.plan.prepare import CheckedPlan, PlanOptions, prepare, reviewer_rejections
from pipeline.plan.summary import format_plan, format_problems
from pipeline.reporting.runlog import LOG_FORMATS, LogFileError, RunLog
from pipeline.reporting.status import missing_rule
from pipeline.runner.session import INTERRUPTED, RunContext, exit_code, run_session
from pipeline.scheduler.refetch import DoneJobs
from pipeline.store.bucket import OutputTarget, TargetError, output_target
from pipeline.store.local import Store

__all__ = ["INTERRUPTED", "add_arguments", "command_run", "exit_code", "plan_options"]

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
        "--out",
        type=out_option,
        metavar="OUT",
        help="output folder or object-store URL, e.g. s3://bucket/prefix "
        "(default: out/<name> beside the manifest)",
    )
    run.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="with an object-store --out: the local folder of the ledger, lock and summaries "
        "(default: .pipeline/<name> beside the manifest)",
    )
    run.add_argument("--config", type=Path, help="settings file (see configs/)")
    run.add_argument(
        "--api-base", type=http_url, help="API base URL (default: $ONEMIN_API_BASE or the real API)"
    )
    run.add_argument(
        "--asset-base", type=http_url, help="asset host base URL (default: $ONEMIN_ASSET_BASE)"
    )
    run.add_argument(
        "--concurrency",
        type=concurrency_option,
        metavar="N|auto",
        help="jobs in flight at once; auto (the default) keeps as many as fill --rpm at the "
        "edit time seen",
    )
    run.add_argument(
        "--max-concurrency",
        type=positive_int,
        metavar="N",
        help="the most jobs --concurrency auto keeps in flight (default 256)",
    )
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
    submit = run.add_mutually_exclusive_group()
    submit.add_argument(
        "--async",
        dest="submit",
        action="store_const",
        const="async",
        help='send "async": true on every feature call and poll the records (the default '
        "starts so too: submit auto)",
    )
    submit.add_argument(
        "--sync",
        dest="submit",
        action="store_const",
        const="sync",
        help="hold each feature call open until the edit is done; turns async after the "
        "first lost answer",
    )
    run.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    add_redo_missing(run)
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


_NO_LOG = RunLog(io.StringIO())  # a dry run logs nothing


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "endpoints": {"api_base": args.api_base, "asset_base": args.asset_base},
        "rate": {
            "rpm": args.rpm,
            "concurrency": args.concurrency,
            "max_concurrency": args.max_concurrency,
        },
        "retry": {"max_attempts": args.max_attempts},
    }
    if args.max_credits is not None:
        flags["max_credits"] = args.max_credits
    if args.max_total_credits is not None:
        flags["max_total_credits"] = args.max_total_credits
    if args.submit is not None:
        flags["submit"] = args.submit
    return flags


def plan_options(
    args: argparse.Namespace, target: OutputTarget, done: DoneJobs | None = None
) -> PlanOptions:
    return PlanOptions(
        retry_failed=args.retry_failed,
        limit=args.limit,
        only=args.only,
        rejected=reviewer_rejections(read_decisions(target.state_dir)),
        missing=missing_rule(target.outputs_gone()) if args.redo_missing else None,
        on_done=done,
    )


def command_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ, _flag_settings(args))
    api_key = os.environ.get(KEY_ENV) or None
    if api_key is None and not args.emulator and not args.dry_run:
        print(NO_KEY_HELP, file=sys.stderr)
        return ExitCode.USAGE
    if args.notify and (problem := http_url_problem(args.notify)):
        print(f"error: --notify: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    manifest = load_manifest(args.manifest)
    try:
        target = output_target(args.out, args.state, manifest.base_dir, manifest.name)
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.ray and (problem := _ray_problem(args, manifest, target)):
        print(problem, file=sys.stderr)
        return ExitCode.USAGE
    if args.dry_run:
        return _dry_run(RunContext(manifest, settings, target, api_key, args, _NO_LOG))
    show_bar = not args.no_progress and sys.stderr.isatty()
    above_bar = show_bar and args.log_file is None
    try:
        log = RunLog.open(args.log_file, args.log_format, verbose=args.verbose, above_bar=above_bar)
    except LogFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    syncer = Syncer()  # fsyncs off the event loop, batched (pipeline.durability)
    with log:
        context = RunContext(manifest, settings, target, api_key, args, log, show_bar)
        try:
            return _locked_run(context, target.open_store(syncer), syncer)
        finally:
            syncer.close()


def _locked_run(context: RunContext, store: Store, syncer: Syncer) -> int:
    state_dir, args, manifest = context.target.state_dir, context.args, context.manifest
    created = not state_dir.exists()
    store.prepare()  # a bucket OUT: probed here, before anything is fetched or bought
    with OutputLock(state_dir):
        ledger = read_ledger(state_dir / LEDGER_NAME)
        _report_ledger_damage(ledger, state_dir)
        done = DoneJobs()  # the re-fetch of lost outputs (pipeline.scheduler.refetch) checks these
        options = plan_options(args, context.target, done)
        plan = prepare(manifest, ledger, options, load_credit_table())
        if not plan.ok:
            print(format_plan(plan.summary), file=sys.stderr)
            print("nothing was sent.", file=sys.stderr)
            if created:
                _remove_empty(state_dir)  # nothing was sent: leave nothing behind either
            return ExitCode.USAGE
        _print_warnings(plan)
        return asyncio.run(run_session(context, store, ledger, plan, syncer, done))


def _print_warnings(plan: CheckedPlan) -> None:
    summary = plan.summary
    if summary.warning_count:
        text = format_problems(summary.warnings, total=summary.warning_count, heading="warnings")
        print(text, file=sys.stderr)


def _remove_empty(state_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (state_dir / LOCK_NAME).unlink()
        (state_dir / STAGING_DIR).rmdir()  # a bucket run's, if any
    with contextlib.suppress(OSError):
        state_dir.rmdir()


def _dry_run(context: RunContext) -> int:
    state_dir = context.target.state_dir
    ledger = read_ledger(state_dir / LEDGER_NAME)
    plan = prepare(
        context.manifest, ledger, plan_options(context.args, context.target), load_credit_table()
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


def _ray_problem(args: argparse.Namespace, manifest: Manifest, target: OutputTarget) -> str | None:
    """Why the manifest cannot run on this cluster (inputs only this machine can read)."""
    from pipeline.distributed.driver import check_shared_inputs

    if target.bucket:  # the shards build a local Store from OUT: not wired for buckets yet
        return "error: --ray with an object-store --out is not supported yet; use a shared path"
    if args.emulator and args.ray != "local":
        return "error: --emulator listens on this machine's 127.0.0.1: use it with --ray local"
    jobs = [job for job in manifest.iter_jobs() if isinstance(job, Job)]
    problems = check_shared_inputs(jobs, args.ray)
    if not problems:
        return None
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    return "error: --ray:\n  " + "\n  ".join(problems[:10]) + more
