"""What a run is asked to do (``RunOptions``) and where its words go (``Console``).

The CLI builds ``RunOptions`` from its arguments, the Python API from keyword arguments; both
hand them to ``runner.start.run_manifest``. The API key is never part of the options (a frozen
dataclass's repr would print it): it is passed beside them and goes straight to the client.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pipeline.config import Settings, SubmitMode
from pipeline.manifest import Manifest
from pipeline.reporting.runlog import LogFormat, RunLog
from pipeline.store.bucket import OutputTarget


@dataclass(frozen=True)
class RunOptions:
    """``pipeline run``'s options; see ``docs/cli.md#pipeline-run`` for each."""

    manifest: Path
    out: str | None = None  # a folder or an object-store URL; default out/<name> beside it
    state: Path | None = None  # with a bucket OUT: the local state folder
    config: Path | None = None
    api_base: str | None = None
    asset_base: str | None = None
    concurrency: int | str | None = None  # a number, or "auto" (--concurrency auto)
    max_concurrency: int | None = None  # the most jobs "auto" keeps in flight
    rpm: float | None = None
    max_attempts: int | None = None
    max_credits: float | None = None
    max_total_credits: float | None = None
    submit: SubmitMode | None = None  # "auto", "async" (--async) or "sync"; None: the settings'
    retry_failed: bool = False
    rehash: bool = False  # read every input again, ignoring the stat cache
    redo_missing: bool = False
    limit: int | None = None
    only: frozenset[str] | None = None
    dry_run: bool = False
    report: bool = True  # write report.html at the end
    emulator: bool = False  # run against the built-in emulator (no key needed)
    ray: str | None = None  # a Ray address, or "local"
    shards: int = 2
    log_file: Path | None = None
    log_stderr: bool = True  # without a log file, log to stderr (the CLI) or nowhere (the API)
    log_format: LogFormat = "text"
    verbose: bool = False
    metrics_file: Path | None = None
    notify: str | None = None
    progress: bool = False  # a progress bar on stderr (the CLI: when it is a terminal)

    def settings_flags(self) -> dict[str, Any]:
        """The options that are settings, as ``config.apply`` takes them (flags win)."""
        flags: dict[str, Any] = {
            "endpoints": {"api_base": self.api_base, "asset_base": self.asset_base},
            "rate": {
                "rpm": self.rpm,
                "concurrency": self.concurrency,
                "max_concurrency": self.max_concurrency,
            },
            "retry": {"max_attempts": self.max_attempts},
        }
        if self.max_credits is not None:
            flags["max_credits"] = self.max_credits
        if self.max_total_credits is not None:
            flags["max_total_credits"] = self.max_total_credits
        if self.submit is not None:
            flags["submit"] = self.submit
        return flags


@dataclass(frozen=True)
class Console:
    """Where a command's words for a person go: the CLI's stdout and stderr, or nowhere (the
    Python API; its results carry the same facts, and the run log is unchanged)."""

    out: TextIO | None = None
    err: TextIO | None = None

    @classmethod
    def stdio(cls) -> Console:
        return cls(sys.stdout, sys.stderr)

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        if self.err is not None:
            print(text, file=self.err, flush=True)

    def sayer(self, to_err: bool) -> Callable[[str], None]:
        return self.warn if to_err else self.say


@dataclass
class RunContext:
    """One run's givens, from its start to what it leaves behind."""

    options: RunOptions
    manifest: Manifest
    settings: Settings
    target: OutputTarget  # where outputs go, and the local folder of the ledger and summaries
    api_key: str | None
    log: RunLog
    console: Console

    def __repr__(self) -> str:  # the dataclass repr would show the key
        return f"RunContext(manifest={self.manifest.path!s}, out={self.target.out!r})"
