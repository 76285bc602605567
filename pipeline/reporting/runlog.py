"""Timestamped log lines for operators (docs/ledger.md#operator-log): start, stop, each failure, a
heartbeat.

Text (`2026-12-01T02:15:03Z INFO message key=value`) for people reading a cron mail, or JSON
lines (`{"ts", "level", "msg", ...fields}`) for a log shipper. A listener at the side of the
event bus, like the ledger and the statistics: it never asks the scheduler anything.

Nothing here takes the API key, so nothing here can log it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import orjson

from pipeline.errors import LogFileError
from pipeline.events import (
    AnswerLostAfterSending,
    Event,
    JobFailed,
    JobPartial,
    JobRetrying,
    RunStopping,
    UnknownStatusWord,
)
from pipeline.reporting.stats import in_flight_text

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


class LineStream(Protocol):
    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class AboveProgressBar:
    """A stream whose lines tqdm prints above the bar, so a log line never tears the bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def write(self, text: str, /) -> int:
        from tqdm import tqdm

        for line in text.splitlines():
            tqdm.write(line, file=self.stream or sys.stderr)
        return len(text)

    def flush(self) -> None:
        (self.stream or sys.stderr).flush()


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text_value(value: Any) -> str:
    text = "" if value is None else str(value)
    # quote what would otherwise split into two fields or two lines
    if not text or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class RunLog:
    def __init__(
        self,
        stream: LineStream,
        fmt: LogFormat = "text",
        clock: Callable[[], float] = time.time,
        *,
        verbose: bool = False,
    ) -> None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be text or json, not {fmt!r}")
        self.stream, self.fmt, self.clock, self.verbose = stream, fmt, clock, verbose
        self._file: TextIO | None = None  # a log file this object opened, and closes

    @classmethod
    def open(
        cls,
        path: Path | str | None,
        fmt: LogFormat = "text",
        *,
        verbose: bool = False,
        above_bar: bool = False,
    ) -> RunLog:
        """Append to `path` (parents created), or write to stderr when there is none.

        `above_bar`: a progress bar shares stderr, so lines go above it through tqdm.
        """
        if path is None:
            return cls(AboveProgressBar() if above_bar else sys.stderr, fmt, verbose=verbose)
        target = Path(path)
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:  # mkdir would only say "File exists"
            raise LogFileError(f"cannot write the log file {target}: {blocker} is not a folder")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # line-buffered: a cron job killed mid-run still leaves every whole line behind
            stream = target.open("a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise LogFileError(
                f"cannot write the log file {target}: {exc.strerror or exc}"
            ) from None
        log = cls(stream, fmt, verbose=verbose)
        log._file = stream
        return log

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def debug(self, msg: str, /, **fields: Any) -> None:
        if self.verbose:
            self._write("DEBUG", msg, fields)

    def info(self, msg: str, /, **fields: Any) -> None:
        self._write("INFO", msg, fields)

    def warning(self, msg: str, /, **fields: Any) -> None:
        self._write("WARNING", msg, fields)

    def error(self, msg: str, /, **fields: Any) -> None:
        self._write("ERROR", msg, fields)

    def _write(self, level: str, message: str, fields: Mapping[str, Any]) -> None:
        ts = _stamp(self.clock())
        if self.fmt == "json":
            record: dict[str, Any] = {"ts": ts, "level": level.lower(), "msg": message}
            for key, value in fields.items():  # a field never hides the stamp or the level
                record[f"field_{key}" if key in record else key] = value
            line = orjson.dumps(record, default=str).decode()
        else:
            pairs = "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
            line = f"{ts} {level} {message}{pairs}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log must never stop a run that is spending credits


class LogListener:
    """Subscribe to the event bus: failures at error level, retries at debug, the stop."""

    def __init__(self, log: RunLog, total: int) -> None:
        self.log, self.total = log, total

    def __call__(self, event: Event) -> None:
        match event:
            case JobFailed(job_id=job_id, error=error, attempts=attempts):
                self.log.error(
                    "job failed",
                    job=job_id,
                    kind=error.kind,
                    http_status=error.http_status,
                    attempts=attempts,
                    message=error.message,
                )
            case JobRetrying(job_id=job_id, step=step, attempt=attempt, error=error, delay=delay):
                self.log.debug(
                    "retrying",
                    job=job_id,
                    step=step,
                    attempt=attempt,
                    kind=error.kind,
                    http_status=error.http_status,
                    delay=round(delay, 2),
                    message=error.message,
                )
            case JobPartial(job_id=job_id, missing=missing, error=error):
                self.log.error(
                    "job partial: paid images could not be fetched",
                    job=job_id,
                    missing=",".join(map(str, missing)),
                    kind=error.kind,
                    message=error.message,
                )
            case AnswerLostAfterSending(job_id=job_id, attempt=attempt, error=error):
                self.log.warning(
                    "answer lost after sending: possibly charged",
                    job=job_id,
                    attempt=attempt,
                    kind=error.kind,
                    http_status=error.http_status,
                    message=error.message,
                )
            case UnknownStatusWord(word=word, uuid=uuid):
                self.log.warning(
                    "unknown record status: polled as unfinished", status=word, record=uuid
                )
            case RunStopping(reason=reason, message=message):
                self.log.warning("run stopping", reason=reason, message=message)
            case _:
                pass


class StatsSource(Protocol):
    """What the heartbeat reads; `pipeline.reporting.stats.RunStats` is one."""

    @property
    def succeeded(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    @property
    def in_flight(self) -> set[str]: ...

    @property
    def limit(self) -> int | None: ...

    def budget_allows(self) -> float | None: ...


Sleep = Callable[[float], Awaitable[object]]


class Heartbeat:
    """Every `interval` seconds: done/total, failed, rate over the last interval and overall, ETA;
    jobs in flight and the pool's limit; the edits a minute the request budget allows (`--rpm`
    over the requests an edit has cost), beside which `rate_recent` is read.

    For runs without a progress bar (cron, `--no-progress`): an hour of silence looks like a hang.
    """

    def __init__(
        self,
        log: RunLog,
        stats: StatsSource,
        total: int,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.stats, self.total, self.interval, self.clock = (
            log,
            stats,
            total,
            interval,
            clock,
        )
        self._started = clock()
        self._start_done = self._done()
        self._last_time, self._last_done = self._started, self._start_done
        self._task: asyncio.Task[None] | None = None

    def _done(self) -> int:
        return self.stats.succeeded + self.stats.skipped

    def beat(self) -> None:
        """Log one heartbeat line now (the loop calls this; tests may too)."""
        now, done = self.clock(), self._done()
        recent = _per_minute(done - self._last_done, now - self._last_time)
        overall = _per_minute(done - self._start_done, now - self._started)
        settled = done + self.stats.failed
        remaining = max(self.total - settled, 0)
        self._last_time, self._last_done = now, done
        self.log.info(
            "heartbeat",
            done=f"{done}/{self.total}",
            failed=self.stats.failed,
            rate_recent=recent,
            rate_overall=overall,
            budget_allows=_rounded(self.stats.budget_allows()),
            in_flight=in_flight_text(len(self.stats.in_flight), self.stats.limit),
            eta=_eta(remaining, recent or overall),
        )

    async def run(self, sleep: Sleep = asyncio.sleep) -> None:
        while True:
            await sleep(self.interval)
            self.beat()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _per_minute(jobs: int, seconds: float) -> float | None:
    """Jobs per minute, or None before any time has passed."""
    return round(jobs / seconds * 60, 1) if seconds > 0 else None


def _eta(remaining: int, per_minute: float | None) -> str:
    if remaining == 0:
        return "0s"
    if not per_minute:
        return "unknown"
    seconds = int(remaining / per_minute * 60)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def log_start(
    log: RunLog,
    manifest_name: str,
    out: str | Path,
    total: int,
    pending: int,
    settings_summary: Mapping[str, Any],
) -> None:
    log.info(
        "run started",
        manifest=manifest_name,
        out=str(out),
        total=total,
        pending=pending,
        **settings_summary,
    )


def log_stop(log: RunLog, exit_code: int, summary: Mapping[str, Any]) -> None:
    """One line for a morning reader: the code, the counts, the spend, why it stopped."""
    counts = summary.get("counts") or {}
    credits = summary.get("credits") or {}
    stopped = summary.get("stopped") or {}
    fields: dict[str, Any] = {
        "exit_code": exit_code,
        **{
            key: counts[key]
            for key in ("succeeded", "failed", "partial", "skipped", "interrupted")
            if key in counts
        },
        "credits": credits.get("estimated"),
        "wall_seconds": summary.get("wall_seconds"),
    }
    if credits.get("possibly_charged"):
        fields["possibly_charged"] = credits["possibly_charged"]
    if stopped:
        fields["stop_reason"] = stopped.get("reason")
    level = log.info if exit_code == 0 else log.warning
    level("run finished", **fields)
