"""``pipeline emulator``: serve the local stand-in of the API (``pipeline.emulator``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.cli.codes import ExitCode
from pipeline.emulator import add_arguments as add_emulator_arguments
from pipeline.emulator import config_from_args, serve_forever


def add_arguments(commands: Any) -> None:
    emulator = commands.add_parser("emulator", help="serve the local stand-in of the API")
    add_emulator_arguments(emulator)
    emulator.set_defaults(handler=command_emulator)


def command_emulator(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:  # combinations argparse cannot check (--rpm-limit with ...)
        print(f"error: pipeline emulator: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return serve_forever(config, args.host, args.port)
