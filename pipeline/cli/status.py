"""``pipeline status OUT``: where every job of the manifest stands (exit 0: all succeeded)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli.codes import ExitCode
from pipeline.reporting.status import folder_status, format_status


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
    status = folder_status(args.out, args.manifest)
    for note in status.notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        sys.stdout.write(orjson.dumps(status.as_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        print(format_status(status))
    return ExitCode.OK if status.all_succeeded else ExitCode.FAILED
