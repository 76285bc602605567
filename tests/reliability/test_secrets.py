"""The API key never leaves the process except in the API-KEY header of API calls.

Every file under OUT (ledger, summary.json, report.html, outputs, anything) and every captured
stream of ``run``, ``status`` and ``report`` is scanned for the key's value, including when the
server quotes the request back: a 401 that names the key it refused, a 400 or a 5xx that echoes
every request header. Real APIs and proxies do both.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.helpers.e2e import (
    CliResult,
    run_inprocess,
    scan_for_secret,
    write_profile,
)
from tests.helpers.e2e import (
    write_mixed_catalog as write_catalog,
)
from tests.helpers.emulator import RunningEmulator, serve_in_thread
from tests.reliability.figures import tally, tally_faults

JOBS = 6


class EchoingEmulator(EmulatorServer):
    """The emulator, except that chosen routes first answer errors quoting the request."""

    def __init__(self, config: EmulatorConfig, echo: dict[str, list[int]]) -> None:
        self.echo = echo  # route name -> statuses to answer, in order, before behaving
        super().__init__(config)

    def _build_app(self) -> web.Application:
        app = super()._build_app()
        app.middlewares.insert(0, self._echo_middleware)  # before the app is frozen
        return app

    @web.middleware
    async def _echo_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        statuses = self.echo.get(request.match_info.route.name or "")
        if not statuses:
            return await handler(request)
        status = statuses.pop(0)
        await request.read()
        headers = ", ".join(f"{name}: {value}" for name, value in request.headers.items())
        key = request.headers.get("API-KEY", "")
        message = f"{request.method} {request.path} refused (key {key!r}); headers: {headers}"
        return web.json_response(
            {"message": message, "request": dict(request.headers)}, status=status
        )


@contextmanager
def serve(server: EmulatorServer) -> Iterator[RunningEmulator]:
    """The echoing emulator in a background thread; its faults count toward the figures."""
    try:
        with serve_in_thread(server) as running:
            yield running
    finally:
        tally_faults(server.state.log)


CASES: dict[str, tuple[dict[str, list[int]], dict[str, Any], int]] = {
    # name: (echoed errors by route, emulator faults, expected exit code)
    "faults, report on": ({}, {"rate_5xx": 0.2, "rate_429": 0.1, "rate_drop": 0.1}, 0),
    "401 naming the key": ({"assets": [401]}, {}, 3),
    "403 on the feature call": ({"features": [403]}, {}, 3),
    "400 echoing the request": ({"features": [400] * JOBS}, {}, 1),
    "upload 400 echoing": ({"assets": [400] * 2 * JOBS}, {}, 1),
    "5xx echoing, then fine": ({"features": [500, 502, 503]}, {}, 0),
    "402 quoting the key": ({"features": [402]}, {}, 3),
}


@pytest.mark.parametrize("case", CASES)
def test_the_key_is_in_no_file_and_no_stream(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    echo, faults, want = CASES[case]
    key = "sk-live-" + secrets.token_hex(20)
    manifest, _expected = write_catalog(tmp_path, JOBS)
    out = tmp_path / "out"
    profile = write_profile(tmp_path)
    args = ["run", str(manifest), "--out", str(out), "--config", str(profile), "--no-progress"]
    args += ["--rpm", "60000", "--max-attempts", "8"]  # the report stays on: it is scanned too
    # One job at a time: the seeded faults meet the calls in one order (a call dropped or
    # answered by a gateway page twice fails its job, outcome_unknown: an exit code of its own).
    args += ["--concurrency", "1"]
    server = EchoingEmulator(EmulatorConfig(api_key=key, seed=3, **faults), echo)
    with serve(server) as emu:
        env = {**emu.env, "ONEMIN_API_KEY": key}
        streams = _all_streams(args, out, env, monkeypatch, capsys, want)
    assert (out / "report.html").is_file()
    leaks = scan_for_secret(out, key, streams)
    assert not leaks, f"{case}: the key leaked into {leaks}"
    tally("hostile/fixed/secret leak scenario")


def _all_streams(
    args: list[str],
    out: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    want: int,
) -> str:
    runs: list[CliResult] = [run_inprocess(args, env, monkeypatch, capsys)]
    assert runs[0].code == want, runs[0].streams
    # Every command that reads the run back is a way to leak what the run stored.
    runs.append(run_inprocess(["status", str(out)], env, monkeypatch, capsys))
    runs.append(run_inprocess(["report", str(out)], env, monkeypatch, capsys))
    runs.append(run_inprocess([*args, "--dry-run"], env, monkeypatch, capsys))
    return "".join(result.streams for result in runs)
