"""The command line: a thin layer on the stages and the runner (``pipeline.runner``).

``main`` parses the arguments and runs one command; each command lives in its own module
(``run``, ``validate``, ``status``, ``doctor``, ``review`` with ``report``, ``export``,
``emulator``). Every expected failure ends in one line on stderr and an exit code
(``errors.ExitCode``), never a traceback: the errors of the one tree are mapped to codes here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from pipeline import __version__
from pipeline.cli.codes import ExitCode
from pipeline.cli.pipes import run_quietly
from pipeline.errors import LockError, ManifestError, PlanRefused, StoreError, UsageError
from pipeline.plan.summary import format_plan, format_problems

__all__ = ["ExitCode", "build_parser", "main"]


# Each command's module, by the commands it adds (``review`` adds ``report`` too). A command
# line loads only its own command's module: ``pipeline status`` or ``report`` on a million jobs
# does not pay for the run's stack (aiohttp, the scheduler, the client: about 15 MB and
# 0.3 s). ``--help``, an unknown command or none loads them all.
COMMAND_MODULES = {
    "run": "pipeline.cli.run",
    "validate": "pipeline.cli.validate",
    "status": "pipeline.cli.status",
    "doctor": "pipeline.cli.doctor",
    "report": "pipeline.cli.review",
    "review": "pipeline.cli.review",
    "export": "pipeline.cli.export",
    "emulator": "pipeline.cli.emulator",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command``'s module alone."""
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Batch image editing with the 1min.ai API (gpt-image-1-mini).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = COMMAND_MODULES.values() if command is None else [COMMAND_MODULES[command]]
    for module in dict.fromkeys(wanted):
        import_module(module).add_arguments(commands)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command a command line names, when it is its first word and a known one."""
    first = argv[0] if argv else None
    return first if first in COMMAND_MODULES else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; output piped into ``head`` ends quietly (exit 141, as ``git`` does)."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(words)).parse_args(words)
    return run_quietly(lambda: _dispatch(args), write_error_code=ExitCode.STOPPED)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except PlanRefused as exc:
        print(format_plan(exc.summary), file=sys.stderr)
        print("nothing was sent.", file=sys.stderr)
        return ExitCode.USAGE
    except ManifestError as exc:
        print(format_problems(exc.problems), file=sys.stderr)
        return ExitCode.USAGE
    except UsageError as exc:
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
