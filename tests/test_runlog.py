from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.events import Event, JobFailed, JobRetrying, JobSucceeded, RunStopping
from pipeline.models import ErrorInfo
from pipeline.reporting.runlog import (
    Heartbeat,
    LogFileError,
    LogListener,
    RunLog,
    log_start,
    log_stop,
)
from pipeline.reporting.stats import RunStats

T0 = 1796091303.0  # 2026-12-01T02:15:03Z


def text_log(verbose: bool = False) -> tuple[RunLog, io.StringIO]:
    stream = io.StringIO()
    return RunLog(stream, "text", clock=lambda: T0, verbose=verbose), stream


def test_text_line_has_utc_stamp_level_and_fields() -> None:
    log, stream = text_log()
    log.info("run started", total=12, out="out/my cat")
    assert stream.getvalue() == '2026-12-01T02:15:03Z INFO run started total=12 out="out/my cat"\n'


def test_json_line_is_one_object_with_ts_level_msg_fields() -> None:
    stream = io.StringIO()
    RunLog(stream, "json", clock=lambda: T0).error("job failed", job="a", http_status=None)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line) == {
        "ts": "2026-12-01T02:15:03Z",
        "level": "error",
        "msg": "job failed",
        "job": "a",
        "http_status": None,
    }


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text or json"):
        RunLog(io.StringIO(), "xml")  # type: ignore[arg-type]


def test_open_appends_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "nightly" / "run.log"
    for message in ("first", "second"):
        with RunLog.open(path, "text") as log:
            log.info(message)
    lines = path.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["first", "second"]


def test_open_unwritable_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LogFileError) as info:
        RunLog.open(blocker / "run.log", "text")
    message = str(info.value)
    assert "\n" not in message and str(blocker / "run.log") in message
    assert message.endswith(f"{blocker} is not a folder")
    with pytest.raises(LogFileError, match="cannot write the log file"):
        RunLog.open(tmp_path, "text")  # a folder, not a file


def test_listener_logs_failures_and_stop_and_retries_only_when_verbose() -> None:
    error = ErrorInfo("http", "server said no", 500)
    events: list[Event] = [
        JobRetrying("a", "k", "feature", 1, error, 2.0),
        JobFailed("a", "k", error, 4),
        JobSucceeded("b", "k", ("b/0.png",), 1, 10, "u"),
        RunStopping("max_credits", "reached --max-credits 100"),
    ]
    quiet, quiet_stream = text_log()
    loud, loud_stream = text_log(verbose=True)
    for log in (quiet, loud):
        listener = LogListener(log, total=2)
        for event in events:
            listener(event)
    quiet_lines = quiet_stream.getvalue().splitlines()
    assert len(quiet_lines) == 2
    assert "ERROR job failed job=a kind=http http_status=500 attempts=4" in quiet_lines[0]
    assert 'message="server said no"' in quiet_lines[0]
    assert "WARNING run stopping reason=max_credits" in quiet_lines[1]
    loud_lines = loud_stream.getvalue().splitlines()
    assert len(loud_lines) == 3
    assert "DEBUG retrying job=a step=feature attempt=1" in loud_lines[0]


@dataclass
class FakeStats:
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    in_flight: set[str] = field(default_factory=lambda: {"a", "b"})
    limit: int | None = 30
    allows: float | None = 75.0

    def budget_allows(self) -> float | None:
        return self.allows


async def test_heartbeat_reports_progress_rates_and_eta() -> None:
    now = [0.0]
    stats = FakeStats(skipped=10)
    stream = io.StringIO()
    log = RunLog(stream, "json", clock=lambda: T0)
    beat = Heartbeat(log, stats, total=110, interval=60.0, clock=lambda: now[0])
    progress = iter([(30, 0), (40, 2)])  # (succeeded, failed) at each beat

    async def fake_sleep(seconds: float) -> None:
        assert seconds == 60.0
        try:
            stats.succeeded, stats.failed = next(progress)
        except StopIteration:
            raise asyncio.CancelledError from None
        now[0] += seconds

    with pytest.raises(asyncio.CancelledError):
        await beat.run(sleep=fake_sleep)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["done"] == "40/110" and first["failed"] == 0
    assert first["rate_recent"] == 30.0 and first["rate_overall"] == 30.0
    assert first["eta"] == "2m20s"  # 70 left at 30/min
    assert first["in_flight"] == "2/30" and first["budget_allows"] == 75.0
    assert second["done"] == "50/110" and second["failed"] == 2
    assert second["rate_recent"] == 10.0 and second["rate_overall"] == 20.0
    assert second["eta"] == "5m48s"  # 58 left at the recent 10/min


async def test_heartbeat_start_stop_with_real_stats() -> None:
    log, stream = text_log()
    beat = Heartbeat(log, RunStats(), total=5, interval=3600.0)
    beat.start()
    beat.beat()
    await beat.stop()
    await beat.stop()  # twice is harmless
    assert "INFO heartbeat done=0/5 failed=0" in stream.getvalue()
    assert "eta=unknown" in stream.getvalue()


def test_start_and_stop_lines() -> None:
    log, stream = text_log()
    log_start(log, "catalog", Path("out/catalog"), 12, 3, {"concurrency": 4, "rpm": 60})
    summary = RunStats().summary()
    summary["counts"]["failed"] = 2
    summary["stopped"] = {"reason": "api_unreachable", "message": "API unreachable"}
    log_stop(log, 3, summary)
    start, stop = stream.getvalue().splitlines()
    assert start.endswith(
        "INFO run started manifest=catalog out=out/catalog total=12 pending=3 concurrency=4 rpm=60"
    )
    assert "WARNING run finished exit_code=3 succeeded=0 failed=2" in stop
    assert stop.endswith("stop_reason=api_unreachable")


def test_json_fields_never_hide_the_stamp() -> None:
    stream = io.StringIO()
    RunLog(stream, "json", clock=lambda: T0).info("x", ts="mine", level=3)
    record = json.loads(stream.getvalue())
    assert record["ts"] == "2026-12-01T02:15:03Z" and record["level"] == "info"
    assert record["field_ts"] == "mine" and record["field_level"] == 3


def test_lines_above_a_progress_bar_are_whole(capsys: pytest.CaptureFixture[str]) -> None:
    log = RunLog.open(None, "text", above_bar=True)
    log.warning("run stopping", reason="interrupted")
    assert capsys.readouterr().err.endswith("WARNING run stopping reason=interrupted\n")
