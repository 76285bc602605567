"""`pipeline doctor` against the emulator and stub servers: what it prints and its exit codes."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pipeline.cli.doctor import run_doctor
from pipeline.config import Endpoints, Timeouts
from pipeline.emulator import EmulatorConfig, EmulatorServer

KEY = "doctor-key-0123456789"


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(api_key=KEY, seed=3)) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def doctor(endpoints: Endpoints, key: str | None) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_doctor(endpoints, key, Timeouts(connect=2.0, upload=5.0, download=5.0), out)
    return code, out.getvalue()


async def test_all_good_spends_nothing_and_never_shows_the_key(emulator: EmulatorServer) -> None:
    used_before = emulator.state.used_credit
    code, text = await doctor(Endpoints(emulator.api_base, emulator.asset_base), KEY)
    assert code == 0, text
    assert "key accepted" in text and "ok   asset host" in text and "ready" in text
    assert KEY not in text and KEY[-4:] not in text
    routes = [entry["route"] for entry in emulator.state.log]
    assert not any("feature" in route for route in routes)  # no credit-spending call
    assert emulator.state.used_credit == used_before


async def test_rejected_key_exits_3(emulator: EmulatorServer) -> None:
    code, text = await doctor(Endpoints(emulator.api_base, emulator.asset_base), "wrong-key")
    assert code == 3
    assert "rejected" in text and "wrong-key" not in text


async def test_missing_key_says_how_to_set_it() -> None:
    code, text = await doctor(Endpoints("http://127.0.0.1:9", "http://127.0.0.1:9"), None)
    assert code == 1 and "ONEMIN_API_KEY" in text


async def test_unreachable_api_host_exits_1() -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    code, text = await doctor(Endpoints(base, base), KEY)
    assert code == 1
    assert "FAIL api host" in text and "connection failed" in text


async def test_not_a_url_exits_1() -> None:
    code, text = await doctor(Endpoints("127.0.0.1:8765", "https://asset.example"), KEY)
    assert code == 1 and "not an http(s) URL" in text


async def test_asset_host_down_exits_1(emulator: EmulatorServer) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    code, text = await doctor(Endpoints(emulator.api_base, base), KEY)
    assert code == 1
    assert "ok   api host" in text and "FAIL asset host" in text


async def test_html_403_from_a_cdn_is_not_a_rejected_key() -> None:
    async def challenge(request: web.Request) -> web.Response:
        return web.Response(
            status=403, text="<html><p>Just a moment</p></html>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", challenge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        base = f"http://127.0.0.1:{port}"
        code, text = await doctor(Endpoints(base, base), KEY)
    finally:
        await runner.cleanup()
    assert code == 1 and "Just a moment" in text and "<" not in text.split("Just")[0][-3:]


async def live_doctor(check_async: bool, **config: object) -> tuple[int, str, EmulatorServer]:
    server = EmulatorServer(EmulatorConfig.live(api_key=KEY, edit_seconds=0.0, **config))
    async with server:
        out = io.StringIO()
        endpoints = Endpoints(server.api_base, server.asset_base)
        timeouts = Timeouts(connect=2.0, upload=5.0, download=5.0)
        code = await run_doctor(endpoints, KEY, timeouts, out, check_async=check_async)
        await server.drain()
    return code, out.getvalue(), server


async def test_a_private_asset_host_is_reported_not_failed_and_nothing_is_spent() -> None:
    code, text, server = await live_doctor(check_async=False)
    assert code == 0, text
    assert "ok   asset host" in text and "private (HTTP 403" in text
    assert "one call per image" in text and "temporaryUrl" in text
    assert "ok   records" in text and "async       not checked" in text
    assert server.state.charges == [] and server.state.feature_calls == 0


@pytest.mark.parametrize(("honour", "word"), [(True, "honoured"), (False, "ignored")])
async def test_check_async_spends_one_edit_and_says_whether_async_is_honoured(
    honour: bool, word: str
) -> None:
    code, text, server = await live_doctor(check_async=True, honour_async=honour)
    assert code == 0, text
    assert f"ok   async       {word}" in text
    assert server.state.edits_charged == 1  # the one edit it says it spends
    answered = "async" if honour else "sync"
    assert [charge.answered for charge in server.state.charges] == [answered]


async def test_a_public_asset_host_is_reported_as_serving_unsigned_reads() -> None:
    async with EmulatorServer(EmulatorConfig.generous(api_key=KEY)) as server:
        code, text = await doctor(Endpoints(server.api_base, server.asset_base), KEY)
    assert code == 0 and "serves unsigned reads" in text and "fetched back" in text
