"""The emulator in its own process on 127.0.0.1, as a user would start it.

``pipeline emulator --port 0`` binds a free port and prints it in its banner ("api base:
http://127.0.0.1:PORT"), so no port is guessed. It is stopped with SIGTERM to its own pid.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from bench.common import PYTHON, REPO

KEY = "bench-key"
HOST = "127.0.0.1"
CREDIT_LIMIT = 10**15  # never the limit under test here
START_TIMEOUT = 60.0  # a loaded machine starts Python slowly
STOP_TIMEOUT = 10.0


class EmulatorProcess:
    """``with EmulatorProcess("--latency", "2") as emulator: emulator.env`` → client settings."""

    def __init__(self, *flags: str, request_log: Path | None = None) -> None:
        self.flags = list(flags)
        self.request_log = request_log
        self.api_base = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def asset_base(self) -> str:
        return f"{self.api_base}/asset"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach this emulator (the key is a throwaway)."""
        return {
            "ONEMIN_API_KEY": KEY,
            "ONEMIN_API_BASE": self.api_base,
            "ONEMIN_ASSET_BASE": self.asset_base,
        }

    def __enter__(self) -> EmulatorProcess:
        command = [PYTHON, "-m", "pipeline", "emulator", "--host", HOST, "--port", "0"]
        command += ["--key", KEY, "--credit-limit", str(CREDIT_LIMIT), *self.flags]
        if self.request_log is not None:
            command += ["--request-log", str(self.request_log)]
        self._process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.api_base = self._wait_for_base()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _pump(self) -> None:
        # Reads every line so the emulator never blocks on a full pipe.
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def _wait_for_base(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        seen: list[str] = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if "api base:" in line:
                base = line.split("api base:", 1)[1].strip()
                if not base.startswith(f"http://{HOST}:"):
                    raise RuntimeError(f"emulator listens on {base}, not on {HOST}")
                return base
        raise RuntimeError("emulator did not start: " + "".join(seen)[-2000:])

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
