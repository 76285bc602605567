"""The output folder misbehaves: a damaged ledger, a full disk, a folder that cannot be written.

Pass: never a traceback; a damaged ledger line is skipped (and named by its line number unless
it is a torn tail); a full disk or an unwritable folder stops the run with exit 3 and one clear
line, leaving a ledger that the same command resumes to the end once the cause is gone.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.ledger import LedgerWriter, Record
from tests.helpers.e2e import (
    CliResult,
    assert_ledger_parses,
    assert_no_partial_final_files,
    run_inprocess,
    states,
    summary,
    write_profile,
)
from tests.helpers.e2e import (
    write_mixed_catalog as write_catalog,
)
from tests.helpers.emulator import RunningEmulator
from tests.reliability.figures import tally
from tests.reliability.harness import (
    QUIET,
    assert_outputs_whole,
    emulator,
    paid_feature_calls,
)

JOBS = 6
# A storage error that escapes the scheduler used to hang the run forever (a dead worker left
# the feeder blocked on a full queue): fail fast instead of at the suite-wide timeout.
pytestmark = pytest.mark.timeout(30)
DEV_FULL = Path("/dev/full")  # every write fails with ENOSPC: a real full disk, no root needed


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with emulator() as running:
        yield running


def _args(tmp_path: Path, out: Path | None = None) -> tuple[list[str], dict[str, Any]]:
    manifest, expected = write_catalog(tmp_path, JOBS, n=2)
    profile = write_profile(tmp_path)
    out = out or tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--config", str(profile), *QUIET]
    return [*args, "--concurrency", "2"], expected


def _run(args: list[str], emu: RunningEmulator, monkeypatch: Any, capsys: Any) -> CliResult:
    return run_inprocess(args, emu.env, monkeypatch, capsys)


# -- a damaged ledger --------------------------------------------------------------------------

DAMAGE: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    # name: (how the ledger is damaged, whether a warning must name a line)
    "torn last line": (lambda data: data + b'{"ts": "2025-01-01T00:0', False),
    "garbage last line": (lambda data: data + b"\x00\x00\xff\xfe garbage\n", True),
    "corrupt middle line": (lambda data: _replace_line(data, 3, b'{"job_id": "sku-00'), True),
    "zero-filled block": (lambda data: _replace_line(data, 2, b"\x00" * 4096), True),
    "json but not a record": (lambda data: _replace_line(data, 4, b'["sku-0001", 3]'), True),
}


def _replace_line(data: bytes, number: int, replacement: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[number - 1] = replacement
    return b"\n".join(lines)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_ledger_is_read_around_never_a_crash(
    damage: str,
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, expected = _args(tmp_path)
    out = tmp_path / "out"
    assert _run(args, emu, monkeypatch, capsys).code == 0
    damaged, names_a_line = DAMAGE[damage]
    ledger = out / "ledger.jsonl"
    ledger.write_bytes(damaged(ledger.read_bytes()))
    tally(f"hostile/ledger damage/{damage}")

    status = run_inprocess(["status", str(out)], {}, monkeypatch, capsys)
    assert status.code == 0
    again = _run(args, emu, monkeypatch, capsys)
    assert again.code == 0, again.streams
    warned = "skipped unreadable line(s)" in again.stderr
    assert warned == names_a_line, again.stderr
    if names_a_line:
        assert "unreadable ledger lines skipped" in status.stdout
    # Whatever the damage, the outputs stand and every job still ends succeeded.
    assert set(states(out).values()) == {"succeeded"}
    assert_outputs_whole(out, expected)


def test_the_line_number_of_a_corrupt_middle_line_is_reported(
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, _expected = _args(tmp_path)
    out = tmp_path / "out"
    assert _run(args, emu, monkeypatch, capsys).code == 0
    ledger = out / "ledger.jsonl"
    ledger.write_bytes(_replace_line(ledger.read_bytes(), 5, b"#not json#"))
    result = _run(args, emu, monkeypatch, capsys)
    assert f"{ledger}: skipped unreadable line(s) 5" in result.stderr


# -- a full disk -------------------------------------------------------------------------------

needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full (Linux)")


@needs_dev_full
def test_disk_full_while_writing_a_result_stops_cleanly_and_resumes(
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The download's temporary file is a link to /dev/full: its writes fail with ENOSPC."""
    from pipeline.store.local import Store

    original = Store.temp_path

    def full_disk(self: Store, job_id: str, label: int | str) -> Path:
        temp = original(self, job_id, label)
        if label != "input":
            temp.symlink_to(DEV_FULL)
        return temp

    args, expected = _args(tmp_path)
    monkeypatch.setattr(Store, "temp_path", full_disk)
    stopped = _run(args, emu, monkeypatch, capsys)
    _assert_stopped_for_space(stopped, tmp_path / "out")
    monkeypatch.setattr(Store, "temp_path", original)  # space freed
    _assert_resumes(args, emu, expected, monkeypatch, capsys)


@needs_dev_full
def test_disk_full_while_renaming_into_place_stops_cleanly_and_resumes(
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import pipeline.store.local

    def no_space(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    args, expected = _args(tmp_path)
    monkeypatch.setattr(pipeline.store.local.os, "replace", no_space)
    stopped = _run(args, emu, monkeypatch, capsys)
    monkeypatch.undo()
    _assert_stopped_for_space(stopped, tmp_path / "out", summary_written=False)
    _assert_resumes(args, emu, expected, monkeypatch, capsys)


@needs_dev_full
def test_disk_full_while_writing_the_ledger_stops_cleanly_and_resumes(
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After a few lines the ledger's file handle is swapped for /dev/full: the real write,
    flush and close code meets a real ENOSPC, as when the disk fills mid-run."""
    original = LedgerWriter.write
    written = {"lines": 0}

    def filling_up(self: LedgerWriter, record: Record) -> None:
        written["lines"] += 1
        if written["lines"] == 6:
            self._file = DEV_FULL.open("ab", buffering=0)  # as the writer opens its own
        original(self, record)

    args, expected = _args(tmp_path)
    monkeypatch.setattr(LedgerWriter, "write", filling_up)
    stopped = _run(args, emu, monkeypatch, capsys)
    monkeypatch.setattr(LedgerWriter, "write", original)
    _assert_stopped_for_space(stopped, tmp_path / "out")
    # A paid answer whose submitted line could not be written is bought again: at most one per
    # worker (--concurrency 2), as with a crash between the answer and its ledger line.
    _assert_resumes(args, emu, expected, monkeypatch, capsys, rebought=2)


def _assert_stopped_for_space(result: CliResult, out: Path, summary_written: bool = True) -> None:
    assert result.code == 3, result.streams
    assert "No space left on device" in result.streams, result.streams
    assert "run the same command again to resume" in result.stdout
    assert_ledger_parses(out)
    assert_no_partial_final_files(out)
    assert "failed" not in states(out).values()  # stopped, not failed: all resumable
    if summary_written and (out / "summary.json").exists():
        assert summary(out)["exit_code"] == 3
    tally("crash/point/disk full")


def _assert_resumes(
    args: list[str],
    emu: RunningEmulator,
    expected: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rebought: int = 0,
) -> None:
    out = Path(args[args.index("--out") + 1])
    result = _run(args, emu, monkeypatch, capsys)
    assert result.code == 0, result.streams
    assert_outputs_whole(out, expected)
    assert not list(out.glob("*/.part-*"))
    # A result that could not be stored is fetched again, never bought again.
    assert JOBS <= paid_feature_calls(emu.log) <= JOBS + rebought


# -- a folder that cannot be written -----------------------------------------------------------


@pytest.mark.parametrize("where", ["under a regular file", "is a regular file"])
def test_an_unwritable_output_folder_is_one_clear_line_and_exit_3(
    where: str,
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """We run as root, so permission bits stop nothing; a regular file in the way does."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker / "out" if where == "under a regular file" else blocker
    args, _expected = _args(tmp_path, out)
    result = _run(args, emu, monkeypatch, capsys)
    assert result.code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot create the output folder")
    assert emu.log == []  # nothing was sent
    tally("hostile/fixed/unwritable output folder")


def test_a_file_where_a_job_folder_should_be_stops_cleanly(
    tmp_path: Path,
    emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, expected = _args(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sku-0003").write_text("someone's notes")
    result = _run(args, emu, monkeypatch, capsys)
    assert result.code == 3, result.streams
    assert "sku-0003" in result.stdout
    assert_ledger_parses(out)
    (out / "sku-0003").unlink()
    _assert_resumes(args, emu, expected, monkeypatch, capsys)
    tally("hostile/fixed/file in place of a job folder")
