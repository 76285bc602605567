"""The exit codes' text for ``--help`` epilogs; the numbers are ``errors.ExitCode``."""

from __future__ import annotations

from pipeline.errors import ExitCode

__all__ = ["EXIT_CODES_HELP", "ExitCode"]

_MEANINGS = {
    ExitCode.OK: "every job succeeded or was already done",
    ExitCode.FAILED: "the run finished and failed jobs remain (pipeline status OUT lists them)",
    ExitCode.USAGE: "usage, manifest or preflight error; nothing was sent",
    ExitCode.STOPPED: "stopped: key rejected, out of credits, --max-credits or "
    "--max-total-credits\n       reached, API or input host unreachable, output folder "
    "unwritable; run again to resume",
    ExitCode.TEMPFAIL: "another run holds the output folder; try again later",
    ExitCode.INTERRUPTED: "interrupted (SIGINT/SIGTERM) after in-flight work settled; run again",
    ExitCode.BROKEN_PIPE: "standard output was closed early (piped into head): nothing else wrong",
}

EXIT_CODES_HELP = "exit codes:\n" + "".join(
    f"  {int(code):<4} {text}\n" for code, text in _MEANINGS.items()
)
