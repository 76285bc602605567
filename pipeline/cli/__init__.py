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

from pipeline import __version__
from pipeline.cli import doctor, emulator, export, review, run, status, validate
from pipeline.cli.codes import ExitCode
from pipeline.cli.pipes import run_quietly
from pipeline.errors import LockError, ManifestError, PlanRefused, StoreError, UsageError
from pipeline.plan.summary import format_plan, format_problems

__all__ = ["ExitCode", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Batch image editing with the 1min.ai API (gpt-image-1-mini).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, validate, status, doctor, review, export, emulator):
        command.add_arguments(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; output piped into ``head`` ends quietly (exit 141, as ``git`` does)."""
    args = build_parser().parse_args(argv)
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
