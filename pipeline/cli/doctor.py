"""``pipeline doctor``: first contact without spending a credit (docs/cli.md#doctor).

Checks, in order, and prints one line for each: the key is set (never shown, not even in
part), the base URLs are http(s), the API host takes an upload (a generated 8x8 PNG, the
cheapest authenticated request there is: uploads cost no credit), and the asset host serves
that upload back. Exit 0 when all is well, 3 when the key is rejected (or the account is out of
credits), 1 when a host is unreachable or anything else is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from PIL import Image

from pipeline.api.client import OneMinClient, public_url
from pipeline.cli.codes import ExitCode
from pipeline.cli.options import http_url
from pipeline.config import KEY_ENV, Endpoints, Settings, Timeouts, http_url_problem, load_settings
from pipeline.errors import ApiError, RunFatal

PROBE_SIZE = (8, 8)
PROBE_NAME = "pipeline-doctor.png"


def add_arguments(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check the key, the API and asset hosts and the settings; spends no credit",
        epilog="exit codes: 0 all is well, 3 key rejected (or no credits), 1 unreachable",
    )
    doctor.add_argument("--config", type=Path, help="settings file (see configs/)")
    doctor.add_argument("--api-base", type=http_url, help="API base URL")
    doctor.add_argument("--asset-base", type=http_url, help="asset host base URL")
    doctor.add_argument(
        "--emulator", action="store_true", help="check against the built-in emulator (no key)"
    )
    doctor.set_defaults(handler=command_doctor)


def command_doctor(args: argparse.Namespace) -> int:
    flags = {"endpoints": {"api_base": args.api_base, "asset_base": args.asset_base}}
    settings = load_settings(args.config, os.environ, flags)
    return asyncio.run(_doctor(settings, args.emulator))


async def _doctor(settings: Settings, emulator: bool) -> int:
    if not emulator:
        key = os.environ.get(KEY_ENV) or None
        return await run_doctor(settings.endpoints, key, settings.timeouts, sys.stdout)
    # Imported here: only --emulator needs the server and its image code (startup time).
    from pipeline.emulator import EmulatorConfig, EmulatorServer

    key = secrets.token_urlsafe(16)  # a throwaway key for a throwaway server
    async with EmulatorServer(EmulatorConfig(api_key=key)) as server:
        endpoints = Endpoints(server.api_base, server.asset_base)
        return await run_doctor(endpoints, key, settings.timeouts, sys.stdout)


def probe_png() -> bytes:
    """A tiny image that is unmistakably ours: 8x8, one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", PROBE_SIZE, (12, 34, 56)).save(buffer, "PNG")
    return buffer.getvalue()


def _line(out: TextIO, ok: bool | None, what: str, detail: str) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "    "}[ok]
    out.write(f"{mark} {what:<11} {detail}\n")
    out.flush()


async def run_doctor(
    endpoints: Endpoints, api_key: str | None, timeouts: Timeouts, out: TextIO
) -> int:
    """Run every check, print what was found line by line, return the exit code."""
    if not api_key:
        _line(out, False, "key", f"not set: export {KEY_ENV}=... (from your 1min.ai account)")
        return ExitCode.FAILED
    _line(out, True, "key", f"set ({KEY_ENV}; never shown)")
    for name, url in (("api host", endpoints.api_base), ("asset host", endpoints.asset_base)):
        problem = http_url_problem(url)
        if problem:
            _line(out, False, name, problem)
            return ExitCode.FAILED
    async with aiohttp.ClientSession() as session:
        client = OneMinClient(session, endpoints, api_key, timeouts)
        path = await _check_upload(client, endpoints, out)
        if isinstance(path, int):
            return path
        return await _check_fetch(client, endpoints, path, out)


async def _check_upload(client: OneMinClient, endpoints: Endpoints, out: TextIO) -> str | int:
    started = time.monotonic()
    try:
        asset = await client.upload_asset(probe_png(), PROBE_NAME, "image/png")
    except RunFatal as exc:
        _line(out, False, "api host", f"{endpoints.api_base}: {exc}")
        return ExitCode.STOPPED
    except ApiError as exc:
        _line(out, False, "api host", f"{endpoints.api_base}: {exc}")
        return ExitCode.FAILED
    elapsed = (time.monotonic() - started) * 1000
    _line(
        out, True, "api host", f"{endpoints.api_base}: key accepted, upload took {elapsed:.0f} ms"
    )
    _line(out, None, "", f"uploaded {PROBE_NAME} as {asset.path} (no credit spent)")
    return asset.path


async def _check_fetch(client: OneMinClient, endpoints: Endpoints, path: str, out: TextIO) -> int:
    url = f"{endpoints.asset_base}/{path.lstrip('/')}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pipeline-doctor-") as folder:
        dest = Path(folder) / PROBE_NAME
        try:
            await client.download(url, dest, "asset fetch")
            with Image.open(dest) as image:
                size = image.size
        except ApiError as exc:
            _line(out, False, "asset host", str(exc))
            return ExitCode.FAILED
        except OSError as exc:  # Pillow: not an image
            _line(out, False, "asset host", f"{public_url(url)} did not answer an image: {exc}")
            return ExitCode.FAILED
    elapsed = (time.monotonic() - started) * 1000
    if size != PROBE_SIZE:
        _line(out, False, "asset host", f"{public_url(url)} answered a {size} image, not ours")
        return ExitCode.FAILED
    _line(out, True, "asset host", f"{public_url(url)}: fetched back in {elapsed:.0f} ms")
    _line(out, True, "all", "ready: the pipeline can reach the API and fetch results")
    return ExitCode.OK
