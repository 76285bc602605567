"""The pipeline's own command line, with stopwatch readings: ``python -m bench.probe ARGS...``.

Runs ``pipeline.cli.main(ARGS)`` in this process, exactly as ``python -m pipeline ARGS`` does,
and appends JSON lines to the file named by ``$BENCH_EVENTS``:

- ``ready``: the modules are imported (what follows is the pipeline's work, not Python's);
- ``ledger_read_start`` / ``_end`` and ``preflight_start`` / ``_end``: around reading the
  ledger and the full preflight pass (``summarize``);
- ``scheduler_start``: ``Scheduler.run`` was entered, i.e. preflight is over;
- ``first_feature``: the first feature call is about to be sent;
- ``end``: ``main`` returned (with its exit code).

With ``$BENCH_NO_CHECKS=1`` the marketplace checks of stored results are skipped (the one
change a hook makes to the work, so the ``checks`` scenario can measure them inside a run; a
``protect`` job's result is still judged, on the pixels it was composited from).

Each line has ``t`` (wall clock, comparable with the parent's), ``cpu`` (user + system seconds
of this process so far), ``maxrss_kb`` (peak resident memory so far) and the I/O counters
``rchar`` / ``read_bytes`` (``readings.io_counters``). The hooks only note the time and call
the original; they change nothing the pipeline does.

With ``$BENCH_OPENS_UNDER`` set to a folder, an audit hook (PEP 578) also counts every
``open()`` of a file under it, whoever opens it; the ``end`` line then has ``opens`` (how
many), ``opened_bytes`` (the sizes of the files opened, once per open) and ``read_from``: the
bytes the reads of those files returned (``readings.ReadCounter``). A look at a header opens
a file but reads a few kB of it: ``read_from`` tells the two apart.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import pipeline.cli
import pipeline.runner.start as run_module
from bench.readings import EVENTS_ENV, Events, ReadCounter
from pipeline.api.client import OneMinClient
from pipeline.scheduler import Scheduler
from pipeline.store.local import Store

F = TypeVar("F", bound=Callable[..., Any])
NO_CHECKS_ENV = "BENCH_NO_CHECKS"
OPENS_ENV = "BENCH_OPENS_UNDER"


def _noting(events: Events, name: str, method: F) -> F:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        events.note(name)
        return await method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _timing(events: Events, name: str, function: F) -> F:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        events.note(f"{name}_start")
        try:
            return function(*args, **kwargs)
        finally:
            events.note(f"{name}_end")

    return wrapper  # type: ignore[return-value]


def without_checks() -> None:
    """``$BENCH_NO_CHECKS=1``: results are stored unjudged, so a scenario can run the same
    catalog with and without the marketplace checks and bill them their difference."""
    Store.check_marketplace = lambda self, temp: None  # type: ignore[method-assign]


def install_hooks(events: Events) -> None:
    """Note the moments the scenarios time; each hook calls the original and nothing else."""
    # ``pipeline.runner.start`` imported these names, so they are replaced where it looks them up.
    # ``prepare`` runs the whole first pass (preflight) before it returns the second.
    run_module.read_ledger = _timing(events, "ledger_read", run_module.read_ledger)
    run_module.prepare = _timing(events, "preflight", run_module.prepare)
    Scheduler.run = _noting(events, "scheduler_start", Scheduler.run)  # type: ignore[method-assign]
    OneMinClient.run_feature = _noting(  # type: ignore[method-assign]
        events, "first_feature", OneMinClient.run_feature
    )


def count_opens(folder: str) -> Counter[str]:
    """Every ``open()`` of a file under ``folder`` from now on, counted by path."""
    prefix = os.path.join(os.path.realpath(folder), "")
    opened: Counter[str] = Counter()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | bytes) and args[0]:
            path = os.fsdecode(args[0])
            if path.startswith(prefix) or os.path.abspath(path).startswith(prefix):
                opened[path] += 1

    sys.addaudithook(hook)
    return opened


def _opened_bytes(opened: Counter[str]) -> int:
    total = 0
    for path, times in opened.items():
        with contextlib.suppress(OSError):
            total += os.path.getsize(path) * times
    return total


def main(argv: list[str]) -> int:
    events = Events(os.environ.get(EVENTS_ENV))
    install_hooks(events)
    if os.environ.get(NO_CHECKS_ENV) == "1":
        without_checks()
    under = os.environ.get(OPENS_ENV)
    opened = count_opens(under) if under else None
    reads = ReadCounter(under) if under else None
    if reads is not None:
        reads.install()
    events.note("ready")
    code = 130
    try:
        code = pipeline.cli.main(argv)
    finally:
        extra: dict[str, Any] = {"code": code}
        if opened is not None:
            extra |= {"opens": sum(opened.values()), "opened_bytes": _opened_bytes(opened)}
        if reads is not None:
            extra["read_from"] = reads.total
        events.note("end", **extra)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
