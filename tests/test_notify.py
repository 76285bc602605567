from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from pipeline.config import http_url_problem as url_problem
from pipeline.reporting.notify import REDACTED, notify, payload_from_summary, scrub
from pipeline.reporting.stats import RunStats

KEY = "sk-test-7f3a9c-never-send-me"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a local aiohttp server with the given handler; yields its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


def run_summary() -> dict[str, Any]:
    stats = RunStats()
    stats.counters["jobs/succeeded"] = 10
    stats.counters["jobs/failed"] = 2
    stats.stop_reason, stats.stop_message = "api_unreachable", "stopped: API unreachable"
    return stats.summary(
        manifest="/srv/p/jobs/catalog.yaml",
        name="catalog",
        out_dir="/srv/p/jobs/out/catalog",
        exit_code=3,
        settings={"concurrency": 4},
    )


async def no_sleep(_: float) -> None:
    return None


async def test_post_carries_summary_and_no_key(
    server: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEMIN_API_KEY", KEY)
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    url = await server(hook)
    result = await notify(url, payload_from_summary(run_summary()))
    assert result.ok and result.status == 204 and result.attempts == 1
    ((headers, body),) = received
    sent = json.loads(body)
    assert sent["manifest"] == "catalog" and sent["out"] == "/srv/p/jobs/out/catalog"
    assert sent["exit_code"] == 3 and sent["stop_reason"] == "api_unreachable"
    assert sent["counts"]["succeeded"] == 10 and sent["counts"]["failed"] == 2
    assert sent["host"] == socket.gethostname()
    assert sent["started_at"] and sent["finished_at"]
    assert headers["Content-Type"].startswith("application/json")
    assert KEY not in body.decode()
    assert all(KEY not in f"{name}: {value}" for name, value in headers.items())


def test_scrub_removes_a_key_that_crept_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEMIN_API_KEY", KEY)
    summary = run_summary()
    summary["stopped"] = {"reason": "key_rejected", "message": f"key {KEY} was rejected"}
    payload = payload_from_summary(summary)
    assert KEY not in json.dumps(payload)
    assert payload["stop_message"] == f"key {REDACTED} was rejected"
    assert scrub({"a": [KEY, 1]}, KEY) == {"a": [REDACTED, 1]}


async def test_5xx_is_retried_then_succeeds(server: Callable[[Handler], Awaitable[str]]) -> None:
    statuses = iter([503, 500, 200])
    delays: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=next(statuses))

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    result = await notify(url=await server(hook), payload={"x": 1}, sleep=record_sleep)
    assert result.ok and result.attempts == 3 and result.status == 200
    assert delays == [0.5, 1.0]


async def test_4xx_is_not_retried(server: Callable[[Handler], Awaitable[str]]) -> None:
    calls = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=404)

    result = await notify(await server(hook), {"x": 1}, sleep=no_sleep)
    assert not result.ok and calls == 1 and result.reason == "HTTP 404"


async def test_retries_are_bounded(server: Callable[[Handler], Awaitable[str]]) -> None:
    calls = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=502)

    result = await notify(await server(hook), {"x": 1}, attempts=3, sleep=no_sleep)
    assert not result.ok and calls == 3 and result.attempts == 3 and result.reason == "HTTP 502"


async def test_hanging_server_is_cut_off_at_the_deadline(
    server: Callable[[Handler], Awaitable[str]],
) -> None:
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        await release.wait()  # never answers until the test ends
        return web.Response()

    url = await server(hook)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await notify(url, {"x": 1}, deadline=0.5)
    elapsed = loop.time() - started
    release.set()
    assert not result.ok and result.reason == "no answer within 0.5 s"
    assert elapsed < 5.0  # a bound on the deadline doing its job, not a speed measurement


async def test_unreachable_host_gives_a_reason() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await notify(f"http://127.0.0.1:{port}/hook", {"x": 1}, sleep=no_sleep)
    assert not result.ok and result.attempts == 3 and result.status is None
    assert result.reason.startswith(f"cannot connect to 127.0.0.1:{port}: ")


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/x", "http://"])
async def test_bad_url_is_a_reason_not_an_exception(url: str) -> None:
    assert url_problem(url) is not None
    result = await notify(url, {"x": 1}, sleep=no_sleep)
    assert not result.ok and result.attempts == 0 and result.reason.startswith("bad URL")


def test_good_urls_pass() -> None:
    assert url_problem("https://hooks.example.com/T0/B0?x=1") is None
    assert url_problem("http://127.0.0.1:9/hook") is None
