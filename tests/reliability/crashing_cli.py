"""The real CLI, killed by SIGKILL at a chosen point: ``python -m tests.reliability.crashing_cli
POINT COUNT pipeline-args...``.

Random kill delays hit wide windows (requests in flight) but almost never the narrow ones: the
microseconds between a paid answer and its ledger line, between two renames, inside one ledger
write. This wrapper makes those exact: it patches one function so that its COUNT-th call kills
the process, from inside, with the same signal a crash or the OOM killer sends. Nothing is
cleaned up, flushed or closed on the way out, exactly as with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from pipeline import cli
from pipeline.api.client import OneMinClient
from pipeline.ledger import LedgerWriter, Record

# How long a request is left in flight before the kill (the emulator's latency keeps it open).
IN_FLIGHT = 0.05


def die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit("unreachable")  # SIGKILL cannot be caught


class Countdown:
    """True on the COUNT-th call, and only then."""

    def __init__(self, count: int) -> None:
        self.left = count

    def __call__(self) -> bool:
        self.left -= 1
        return self.left == 0


def before_upload(hit: Countdown) -> None:
    original = OneMinClient.upload_asset

    async def patched(self: OneMinClient, *args: Any, **kwargs: Any) -> Any:
        if hit():
            die()  # the bytes were read, nothing was sent
        return await original(self, *args, **kwargs)

    OneMinClient.upload_asset = patched  # type: ignore[method-assign]


def mid_upload(hit: Countdown) -> None:
    _kill_while_in_flight(OneMinClient.upload_asset, "upload_asset", hit)


def mid_feature(hit: Countdown) -> None:
    _kill_while_in_flight(OneMinClient.run_feature, "run_feature", hit)


def _kill_while_in_flight(original: Callable[..., Any], name: str, hit: Countdown) -> None:
    async def patched(self: OneMinClient, *args: Any, **kwargs: Any) -> Any:
        if not hit():
            return await original(self, *args, **kwargs)
        task = asyncio.ensure_future(original(self, *args, **kwargs))
        await asyncio.sleep(IN_FLIGHT)  # the request is on the wire, unanswered
        die()
        return await task

    setattr(OneMinClient, name, patched)


def after_feature_answer(hit: Countdown) -> None:
    """The edit is paid and answered, but the ledger has not heard of it (submitted line)."""
    original = OneMinClient.run_feature

    async def patched(self: OneMinClient, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        if hit():
            die()
        return result

    OneMinClient.run_feature = patched  # type: ignore[method-assign]


def mid_download(hit: Countdown) -> None:
    """Half a result is in the temporary file when the process dies."""
    original = OneMinClient.download

    async def patched(self: OneMinClient, url: str, dest: Path, *args: Any, **kw: Any) -> int:
        written = await original(self, url, dest, *args, **kw)
        if hit():
            with dest.open("r+b") as handle:
                handle.truncate(written // 2)
            die()
        return written

    OneMinClient.download = patched  # type: ignore[method-assign]


def mid_rename(hit: Countdown) -> None:
    """Dies just before an ``os.replace`` of a result: with n=2, between a job's two files."""
    original = os.replace

    def patched(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(src).name.startswith(".part-") and hit():
            die()
        original(src, dst, **kwargs)

    os.replace = patched


def mid_ledger_line(hit: Countdown) -> None:
    """Half a ledger line reaches the file: the torn tail a crash mid-write leaves."""
    original = LedgerWriter.write

    def patched(self: LedgerWriter, record: Record) -> None:
        if hit():
            self._file.write(b'{"ts": "2025-01-01T00:00:00.000Z", "job_id": "sku-')
            self._file.flush()
            die()
        original(self, record)

    LedgerWriter.write = patched  # type: ignore[method-assign]


POINTS: dict[str, Callable[[Countdown], None]] = {
    "before-upload": before_upload,
    "mid-upload": mid_upload,
    "mid-feature-call": mid_feature,
    "after-feature-answer": after_feature_answer,
    "mid-download": mid_download,
    "mid-rename": mid_rename,
    "mid-ledger-line": mid_ledger_line,
}


def main(argv: list[str]) -> int:
    point, count, *args = argv
    POINTS[point](Countdown(int(count)))
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
