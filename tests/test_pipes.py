from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.cli.codes import ExitCode
from pipeline.cli.pipes import (
    QuietPipes,
    cannot_write_message,
    print_quietly,
    quiet_pipes,
    run_quietly,
)

ROOT = Path(__file__).resolve().parents[1]

CHATTY = textwrap.dedent(
    """
    import sys
    from pipeline.cli.pipes import run_quietly

    def main() -> int:
        for i in range(200_000):
            print(f"line {i} of a long status listing")
        return 0

    raise SystemExit(run_quietly(main))
    """
)


def pipe_into_head(script: str, tmp_path: Path) -> tuple[int, str, bytes]:
    """Run `python script | head -1`; returns the script's exit code, its stderr, head's output."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert writer.stdout is not None and writer.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True, check=True)
    writer.stdout.close()  # only head holds the read end now: its exit breaks the pipe
    stderr = writer.stderr.read().decode()
    writer.stderr.close()
    return writer.wait(timeout=60), stderr, head.stdout


@pytest.mark.slow  # real processes and pipes
def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    code, stderr, first = pipe_into_head(CHATTY, tmp_path)
    assert first == b"line 0 of a long status listing\n"
    assert stderr == ""  # no traceback, no "Exception ignored"
    assert code == ExitCode.BROKEN_PIPE


@pytest.mark.slow  # real processes and pipes
def test_unguarded_script_does_show_the_traceback(tmp_path: Path) -> None:
    """The control: without the guard, the same script fails loudly (what the issue saw)."""
    bare = CHATTY.replace("raise SystemExit(run_quietly(main))", "raise SystemExit(main())")
    _, stderr, _ = pipe_into_head(bare, tmp_path)
    assert "BrokenPipeError" in stderr


@pytest.mark.slow  # real processes and pipes
def test_print_quietly_keeps_the_run_exit_code(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from pipeline.cli.pipes import print_quietly, run_quietly

        def main() -> int:
            for i in range(200_000):
                if not print_quietly(f"summary line {i}"):
                    break
            return 3

        raise SystemExit(run_quietly(main))
        """
    )
    code, stderr, _ = pipe_into_head(script, tmp_path)
    assert (code, stderr) == (3, "")


def test_unwritable_file_is_one_line_and_a_code(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where a folder should be")
    stderr = io.StringIO()
    with QuietPipes(write_error_code=3, stderr=stderr) as guard:
        (blocker / "report.html").write_text("<html>")
    assert guard.code == 3
    assert stderr.getvalue() == f"error: cannot write {blocker / 'report.html'}: Not a directory\n"


def test_read_only_folder_message() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "out/cat/report.html")
    assert cannot_write_message(exc) == "error: cannot write out/cat/report.html: Permission denied"
    renamed = OSError(errno.EROFS, "Read-only file system", "out/.tmp", None, "out/summary.json")
    assert cannot_write_message(renamed).startswith("error: cannot write out/summary.json:")


def test_decorator_returns_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    @quiet_pipes(write_error_code=2)
    def main(path: str) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    assert main("logs/run.log") == 2
    assert capsys.readouterr().err == "error: cannot write logs/run.log: Permission denied\n"
    assert run_quietly(lambda: 1) == 1


def test_other_errors_pass_through() -> None:
    with pytest.raises(ConnectionResetError), QuietPipes():
        raise ConnectionResetError(errno.ECONNRESET, "reset")  # no file name: a bug, not a path
    with pytest.raises(ValueError), QuietPipes():
        raise ValueError("not ours")


def test_print_quietly_on_a_healthy_stream() -> None:
    stream = io.StringIO()
    assert print_quietly("hello", file=stream)
    assert stream.getvalue() == "hello\n"
