"""Quiet pipes (docs/cli.md#quiet-pipes): `pipeline status out | head -4` ends without a traceback,
and a command that cannot write a file says why in one line.

On a broken pipe, stdout is pointed at /dev/null (the recipe of the Python docs, "Note on
SIGPIPE"), so the interpreter's own flush at exit cannot fail a second time, and the command exits
141 = 128 + SIGPIPE. That is what coreutils and git report when `head` stops reading: a script
under `set -o pipefail` sees the same code as for any other tool, and it is never taken for a
result of ours (0 would claim "all jobs succeeded" for a `status` that was cut short; 1 is "some
jobs failed"). Without pipefail the shell reports head's status, so the pipeline stays quiet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from pipeline.cli.codes import ExitCode

# errors that mean "this place cannot take the file": the message says "cannot write"
WRITE_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
        errno.EFBIG,
    }
)


def silence_stdout() -> None:
    """Point fd 1 at /dev/null so later writes and the final flush go nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout already closed or not a real file: nothing left to protect


def cannot_write_message(exc: OSError) -> str:
    """`error: cannot write out/report.html: Read-only file system`, one line."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    target = exc.filename
    if exc.filename2:
        target = exc.filename2  # a rename: the destination is the file the user cares about
    verb = "cannot write" if exc.errno in WRITE_ERRNOS else "cannot use"
    return f"error: {verb} {os.fsdecode(target)}: {reason}"


class QuietPipes:
    """Context manager: a broken stdout pipe or a file that cannot be written ends the command
    with `self.code` and at most one line on stderr, instead of a traceback.

    Only OSErrors naming a file are turned into a line: one without a file name (a socket, say) is
    a bug to see, and passes through.
    """

    def __init__(self, *, write_error_code: int = 3, stderr: TextIO | None = None) -> None:
        self.write_error_code = write_error_code
        self.stderr = stderr
        self.code: int | None = None

    def __enter__(self) -> QuietPipes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            return False
        if isinstance(exc, BrokenPipeError):
            silence_stdout()
            self.code = ExitCode.BROKEN_PIPE
            return True
        if isinstance(exc, OSError) and exc.filename is not None:
            stream = self.stderr or sys.stderr
            with contextlib.suppress(OSError):  # stderr gone too: the code still tells
                print(cannot_write_message(exc), file=stream)
            self.code = self.write_error_code
            return True
        return False


def run_quietly(main: Callable[[], int], *, write_error_code: int = 3) -> int:
    """Run a command's main under QuietPipes and return its exit code.

    stdout is flushed before leaving, so a pipe closed after the last print is caught here and not
    by the interpreter's shutdown ("Exception ignored ... BrokenPipeError", exit 120).
    """
    guard = QuietPipes(write_error_code=write_error_code)
    with guard:
        code = main()
        sys.stdout.flush()
        return code
    assert guard.code is not None  # reached only when the guard suppressed an error
    return guard.code


def quiet_pipes(
    write_error_code: int = 3,
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator form of `run_quietly` for a `main(...) -> int`."""

    def decorate(func: Callable[..., int]) -> Callable[..., int]:
        def wrapper(*args: Any, **kwargs: Any) -> int:
            return run_quietly(lambda: func(*args, **kwargs), write_error_code=write_error_code)

        wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
        wrapper.__wrapped__ = func  # type: ignore[attr-defined]
        return wrapper

    return decorate


def print_quietly(*values: object, **kwargs: Any) -> bool:
    """print() that survives a closed stdout (False): for a run's final summary, whose exit code
    (0/1/3/130) must not be replaced by 141 because nobody read the last lines."""
    try:
        print(*values, **kwargs)
        stream = kwargs.get("file") or sys.stdout
        stream.flush()
    except BrokenPipeError:
        silence_stdout()
        return False
    return True
