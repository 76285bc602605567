"""``pipeline doctor``: first contact without spending a credit (docs/cli.md#pipeline-doctor).

Checks, in order, and prints one line for each: the key is set (never shown, not even in
part), the base URLs are http(s), the API host takes an upload (a generated PNG, the cheapest
authenticated request there is: uploads cost no credit), the asset host's answer to an
unsigned read of that upload, and the results endpoint records are polled at.

The asset host's answer decides how results are fetched (docs/api.md#private-result-bucket):
one that serves the upload back serves every result; one that refuses it (the live API's
private bucket) leaves each record's ``temporaryUrl``, which signs its first result only, so
jobs of several images are bought one call per image. Both are fine; only an unreachable host
is a failure.

Whether the API honours ``"async": true`` shows only on a feature call, which costs credits:
``--check-async`` makes one (the cheapest: a background replacement of the probe image at low
quality); without it the line says so.

Exit 0 when all is well, 3 when the key is rejected (or the account is out of credits), 1 when
a host is unreachable or anything else is wrong.
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
from pipeline.errors import ApiError, BadRequest, RecordUnknown, RunFatal
from pipeline.models import Feature, InputRef, Job

PROBE_SIZE = (64, 64)  # big enough for a feature call to accept (--check-async)
PROBE_NAME = "pipeline-doctor.png"
ASYNC_PROBE_PROMPT = "plain light grey studio background"


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
    doctor.add_argument(
        "--check-async",
        action="store_true",
        help='also make one low-quality edit (it costs credits) to see whether "async": true '
        "is honoured",
    )
    doctor.set_defaults(handler=command_doctor)


def command_doctor(args: argparse.Namespace) -> int:
    flags = {"endpoints": {"api_base": args.api_base, "asset_base": args.asset_base}}
    settings = load_settings(args.config, os.environ, flags)
    return asyncio.run(_doctor(settings, args.emulator, args.check_async))


async def _doctor(settings: Settings, emulator: bool, check_async: bool = False) -> int:
    if not emulator:
        key = os.environ.get(KEY_ENV) or None
        return await run_doctor(
            settings.endpoints, key, settings.timeouts, sys.stdout, check_async=check_async
        )
    # Imported here: only --emulator needs the server and its image code (startup time).
    from pipeline.emulator import EmulatorConfig, EmulatorServer

    key = secrets.token_urlsafe(16)  # a throwaway key for a throwaway server
    async with EmulatorServer(EmulatorConfig(api_key=key)) as server:
        endpoints = Endpoints(server.api_base, server.asset_base)
        return await run_doctor(
            endpoints, key, settings.timeouts, sys.stdout, check_async=check_async
        )


def probe_png() -> bytes:
    """A tiny image that is unmistakably ours: one colour, PROBE_SIZE."""
    buffer = io.BytesIO()
    Image.new("RGB", PROBE_SIZE, (12, 34, 56)).save(buffer, "PNG")
    return buffer.getvalue()


def _line(out: TextIO, ok: bool | None, what: str, detail: str) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "    "}[ok]
    out.write(f"{mark} {what:<11} {detail}\n")
    out.flush()


async def run_doctor(
    endpoints: Endpoints,
    api_key: str | None,
    timeouts: Timeouts,
    out: TextIO,
    *,
    check_async: bool = False,
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
        for check in (_check_asset_host, _check_records):
            code = await check(client, endpoints, path, out)
            if code != ExitCode.OK:
                return code
        if check_async:
            code = await _check_async(client, path, out)
            if code != ExitCode.OK:
                return code
        else:
            _line(
                out,
                None,
                "async",
                "not checked: it shows on a feature call, which costs credits "
                "(pipeline doctor --check-async makes one low-quality edit)",
            )
    _line(out, True, "all", "ready: the pipeline can reach the API and fetch results")
    return ExitCode.OK


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


async def _check_asset_host(
    client: OneMinClient, endpoints: Endpoints, path: str, out: TextIO
) -> int:
    """An unsigned read of our upload: served (a public host), refused (a private bucket: fine,
    results come from temporaryUrl), or unreachable (a failure)."""
    url = client.asset_url(path)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pipeline-doctor-") as folder:
        dest = Path(folder) / PROBE_NAME
        try:
            await client.download(url, dest, "asset fetch")
            with Image.open(dest) as image:
                size = image.size
        except BadRequest as exc:  # 401, 403, 404, 410: the host answered, and refused
            _line(out, True, "asset host", f"{public_url(url)}: private ({_status_of(exc)})")
            _line(
                out,
                None,
                "",
                "results come from each record's temporaryUrl (its first result only): jobs "
                "of several images are bought as one call per image, for the same credits",
            )
            return ExitCode.OK
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
    _line(
        out,
        True,
        "asset host",
        f"{public_url(url)}: serves unsigned reads (fetched back in {elapsed:.0f} ms): every "
        "result of a record can be fetched, a job is one call",
    )
    return ExitCode.OK


async def _check_records(client: OneMinClient, endpoints: Endpoints, path: str, out: TextIO) -> int:
    """The results endpoint async records are polled at: an unknown uuid answers
    ``{"aiRecord": null}``. One API-host request, no credit."""
    probe = f"pipeline-doctor-{secrets.token_hex(8)}"
    try:
        await client.poll_result(probe)
    except RecordUnknown:
        _line(out, True, "records", "the results endpoint answers: records can be polled")
        return ExitCode.OK
    except RunFatal as exc:
        _line(out, False, "records", str(exc))
        return ExitCode.STOPPED
    except ApiError as exc:
        _line(
            out,
            False,
            "records",
            f"GET /api/results/<uuid> failed ({exc}): async records cannot be polled; "
            "run with --sync",
        )
        return ExitCode.FAILED
    _line(out, True, "records", "the results endpoint answers: records can be polled")
    return ExitCode.OK


async def _check_async(client: OneMinClient, path: str, out: TextIO) -> int:
    """One feature call with ``"async": true`` (it costs credits): answered at once with a
    processing record (honoured), or with a finished one (ignored: the pipeline takes it as
    finished, and sync calls risk the gateway's timeout)."""
    job = Job(
        id="doctor",
        feature=Feature.BACKGROUND,
        image=InputRef("asset", path),
        prompt=ASYNC_PROBE_PROMPT,
        quality="low",
    )
    try:
        result = await client.run_feature(job, path, None, asynchronous=True)
    except RunFatal as exc:
        _line(out, False, "async", str(exc))
        return ExitCode.STOPPED
    except ApiError as exc:
        _line(out, False, "async", f"the feature call failed: {exc}")
        return ExitCode.FAILED
    if result.finished:
        _line(
            out,
            True,
            "async",
            f"ignored: the call answered {result.status or 'SUCCESS'} at once (record "
            f"{result.uuid}); the pipeline takes such an answer as finished",
        )
    else:
        _line(
            out,
            True,
            "async",
            f"honoured: the call answered {result.status} at once (record {result.uuid}); "
            "one edit was spent",
        )
    return ExitCode.OK


def _status_of(error: ApiError) -> str:
    return f"HTTP {error.http_status}: unsigned reads refused" if error.http_status else str(error)
