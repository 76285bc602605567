"""Exit codes (SPEC 2), one place: ``pipeline run --help`` prints this table too."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every job succeeded or was already done
    FAILED = 1  # the run finished and failed jobs remain in the manifest (new or earlier)
    USAGE = 2  # usage, manifest or preflight error: nothing was sent
    STOPPED = 3  # stopped: key rejected, out of credits, a budget reached, API unreachable
    TEMPFAIL = 75  # EX_TEMPFAIL: another run holds the output folder; try again later
    INTERRUPTED = 130  # SIGINT/SIGTERM, after the jobs in flight settled
    BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout was closed early (`| head`); said nowhere


EXIT_CODES_HELP = """\
exit codes:
  0    every job succeeded or was already done
  1    the run finished and failed jobs remain (pipeline status OUT lists them)
  2    usage, manifest or preflight error; nothing was sent
  3    stopped: key rejected, out of credits, --max-credits or --max-total-credits
       reached, API or input host unreachable, output folder unwritable; run again to resume
  75   another run holds the output folder; try again later
  130  interrupted (SIGINT/SIGTERM) after in-flight work settled; run again to resume
  141  standard output was closed early (piped into head): nothing else went wrong
"""
