"""``pipeline run``: its arguments, turned into ``RunOptions`` for ``runner.run_manifest``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.codes import EXIT_CODES_HELP
from pipeline.cli.options import (
    add_redo_missing,
    add_rehash,
    concurrency_option,
    http_url,
    ids_option,
    non_negative_float,
    out_option,
    positive_float,
    positive_int,
)
from pipeline.config import KEY_ENV
from pipeline.reporting.runlog import LOG_FORMATS
from pipeline.runner.options import Console, RunOptions
from pipeline.runner.start import run_manifest

__all__ = ["add_arguments", "command_run", "options_from_args"]


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
    add_rehash(run)
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


def options_from_args(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        manifest=args.manifest,
        out=args.out,
        state=args.state,
        config=args.config,
        api_base=args.api_base,
        asset_base=args.asset_base,
        concurrency=args.concurrency,
        max_concurrency=args.max_concurrency,
        rpm=args.rpm,
        max_attempts=args.max_attempts,
        max_credits=args.max_credits,
        max_total_credits=args.max_total_credits,
        submit=args.submit,
        retry_failed=args.retry_failed,
        redo_missing=args.redo_missing,
        limit=args.limit,
        only=args.only,
        dry_run=args.dry_run,
        report=not args.no_report,
        emulator=args.emulator,
        ray=args.ray,
        shards=args.shards,
        log_file=args.log_file,
        log_format=args.log_format,
        verbose=args.verbose,
        metrics_file=args.metrics_file,
        notify=args.notify,
        rehash=args.rehash,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def command_run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    api_key = os.environ.get(KEY_ENV) or None
    return run_manifest(options, api_key=api_key, console=Console.stdio()).exit_code
