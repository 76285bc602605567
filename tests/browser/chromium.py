"""Headless Chromium from the command line: rendered DOM and screenshots, no driver needed.

``--dump-dom`` prints the DOM after the page's scripts ran (``--virtual-time-budget`` lets them
finish), ``--screenshot`` writes a PNG. Every switch that could reach the network is off, so a
page that tried to load something from outside would simply show it missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 60
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def find_chromium() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_chromium() -> str | None:
    """``apt-get install chromium`` (after an update if the first try fails); root only."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]

    def run(command: list[str]) -> int:
        done = subprocess.run(command, env=env, capture_output=True, timeout=INSTALL_TIMEOUT)
        return done.returncode

    if run(install) != 0:
        run(["apt-get", "update", "-q"])  # a fresh machine may have no package lists yet
        run(install)
    return find_chromium()


def _run(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )


def dump_dom(binary: str, url: str, budget_ms: int = 2000) -> str:
    """The DOM after the page's scripts ran."""
    done = _run(binary, f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({done.returncode}): {done.stderr[-800:]}")
    return done.stdout


def screenshot(
    binary: str, url: str, path: Path, size: tuple[int, int] = (1400, 1000), budget_ms: int = 2000
) -> Path:
    done = _run(
        binary,
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={path}",
        url,
    )
    if done.returncode != 0 or not path.is_file():
        raise RuntimeError(
            f"chromium --screenshot failed ({done.returncode}): {done.stderr[-800:]}"
        )
    return path
