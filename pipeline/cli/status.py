"""``pipeline status OUT``: where every job of the manifest stands (exit 0: all succeeded)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.codes import ExitCode
from pipeline.reporting.status import status_source, write_status


def add_arguments(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="where every job of the manifest stands (exit 0: all succeeded)"
    )
    status.add_argument("out", type=Path, metavar="OUT_DIR")
    status.add_argument(
        "--manifest", type=Path, help="the manifest (default: the one the last run recorded)"
    )
    status.add_argument("--json", action="store_true", help="every job's state as JSON")
    status.set_defaults(handler=command_status)


def command_status(args: argparse.Namespace) -> int:
    source = status_source(args.out, args.manifest)
    for note in source.notes:
        print(f"warning: {note}", file=sys.stderr)
    # Streamed: the manifest's jobs one at a time over the ledger's compact fold.
    all_done = write_status(
        args.out, sys.stdout, source.jobs, source.manifest, source.missing, as_json=args.json
    )
    return ExitCode.OK if all_done else ExitCode.FAILED
