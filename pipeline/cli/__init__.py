"""The command line: the only place where every stage is wired together and exit codes decided.

``main`` parses the arguments and runs one command; each command lives in its own module
(``run``, ``inspect`` for validate/status/report, ``emulator``). Every expected failure ends in
one line on stderr and an exit code (``codes.ExitCode``), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.cli import inspect, run
from pipeline.cli.codes import ExitCode
from pipeline.cli.pipes import run_quietly
from pipeline.config import ConfigError
from pipeline.errors import LockError, ManifestError, StoreError
from pipeline.plan.summary import format_problems

__all__ = ["ExitCode", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Batch image editing with the 1min.ai API (gpt-image-1-mini).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_arguments(commands)
    inspect.add_arguments(commands)
    emulator = commands.add_parser("emulator", help="serve the local stand-in of the API")
    from pipeline.emulator import add_arguments

    add_arguments(emulator)
    emulator.set_defaults(handler=_command_emulator)
    return parser


def _command_emulator(args: argparse.Namespace) -> int:
    from pipeline.emulator import config_from_args, serve_forever

    try:
        config = config_from_args(args)
    except ValueError as exc:  # combinations argparse cannot check (--rpm-limit with ...)
        print(f"error: pipeline emulator: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return serve_forever(config, args.host, args.port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; output piped into ``head`` ends quietly (exit 141, as ``git`` does)."""
    args = build_parser().parse_args(argv)
    return run_quietly(lambda: _dispatch(args), write_error_code=ExitCode.STOPPED)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except ManifestError as exc:
        print(format_problems(exc.problems), file=sys.stderr)
        return ExitCode.USAGE
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.TEMPFAIL
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.STOPPED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
