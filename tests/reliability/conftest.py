"""Fixtures shared by the reliability suite: a guard that keeps all traffic on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.reliability.figures import report_lines

LOOPBACK = frozenset({"127.0.0.1"})


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every in-process HTTP request must go to 127.0.0.1; anything else fails the test.

    Patched at ``ClientSession._request``, which every aiohttp call goes through, so a hostile
    ``temporaryUrl`` (or a bug) cannot reach the network even for a moment. The refused URLs are
    collected too, because the pipeline might swallow the error and carry on.
    """
    refused: list[str] = []
    original = aiohttp.ClientSession._request

    async def guarded(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        host = URL(str(url)).host
        if host not in LOOPBACK:
            refused.append(str(url))
            raise AssertionError(f"test traffic to {host!r} refused: {url}")
        return await original(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", guarded)
    yield refused
    assert not refused, f"the pipeline tried to reach other hosts: {refused}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The whole reliability suite is slow: real processes, kills, signals, fault matrices."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = report_lines()
    if lines:
        terminalreporter.write_sep("-", "reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
