"""`--notify URL`: POST the run summary as JSON when a run ends or stops (docs/ledger.md#notify).

A notification is a courtesy, never a reason to fail or to hang: bounded retries on 5xx and
connection errors, the whole exchange under one deadline (15 s by default) so a cron job's exit is
never delayed beyond it, and the result is returned, never raised. What is sent comes from the run
summary, which holds no key; a scrub removes the key anyway, should one ever creep in.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from pipeline import __version__
from pipeline.api.retry import backoff, retry_loop
from pipeline.config import KEY_ENV, http_url_problem

REDACTED = "[redacted]"
NOTIFY_BACKOFF = 0.5  # seconds before the second try, doubled after
NOTIFY_BACKOFF_MAX = 4.0
Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class NotifyResult:
    ok: bool
    attempts: int
    status: int | None = None  # the last HTTP status received, if any
    reason: str = ""  # why it failed, one short line; empty on success


async def notify(
    url: str,
    payload: Mapping[str, Any],
    *,
    session: aiohttp.ClientSession | None = None,
    deadline: float = 15.0,
    attempts: int = 3,
    sleep: Sleep = asyncio.sleep,
) -> NotifyResult:
    """POST `payload` to `url`; never raises, never takes longer than `deadline` seconds."""
    problem = http_url_problem(url)
    if problem:
        return NotifyResult(False, 0, reason=f"bad URL: {problem}")
    body = scrub(payload)
    tried = 0
    last = NotifyResult(False, 0, reason="not sent")
    try:
        async with asyncio.timeout(deadline):
            owned = session is None
            http = session or aiohttp.ClientSession()
            try:

                async def post(attempt: int) -> NotifyResult:
                    nonlocal tried, last
                    tried = attempt
                    last = await _post_once(http, url, body, attempt)
                    return last

                return await retry_loop(
                    post,
                    tries=attempts,
                    delay=lambda n: backoff(n, NOTIFY_BACKOFF, NOTIFY_BACKOFF_MAX),
                    retry_if=_worth_retrying,
                    sleep=sleep,
                )
            finally:
                if owned:
                    await http.close()
    except TimeoutError:
        return NotifyResult(False, tried, last.status, f"no answer within {deadline:g} s")
    except (ValueError, aiohttp.InvalidURL) as exc:  # a malformed URL: the flag was wrong
        return NotifyResult(False, tried, None, f"bad URL: {exc}")
    return last


async def _post_once(
    http: aiohttp.ClientSession, url: str, body: Mapping[str, Any], attempt: int
) -> NotifyResult:
    headers = {"User-Agent": f"onemin-pipeline/{__version__}"}
    try:
        async with http.post(url, json=body, headers=headers) as response:
            await response.read()
            if response.status < 300:
                return NotifyResult(True, attempt, response.status)
            return NotifyResult(False, attempt, response.status, f"HTTP {response.status}")
    except aiohttp.InvalidURL:
        raise
    except (aiohttp.ClientError, OSError) as exc:
        return NotifyResult(False, attempt, None, _connection_reason(exc))


def _worth_retrying(result: NotifyResult) -> bool:
    """Connection errors and 5xx may pass; a 4xx will say the same thing again."""
    if result.ok:
        return False
    return result.status is None or result.status >= 500 or result.status == 429


def _connection_reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port}: {why}"
    return f"connection failed: {exc or type(exc).__name__}"


def scrub(value: Any, secret: str | None = None) -> Any:
    """A copy of `value` with the API key replaced wherever it occurs (defence in depth)."""
    secret = os.environ.get(KEY_ENV) if secret is None else secret
    if not secret:
        return _plain(value)
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, Mapping):
        return {scrub(str(k), secret): scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, secret) for item in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def payload_from_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a chat hook or an incident tool needs about a run, from `RunStats.summary(...)`."""
    stopped = summary.get("stopped") or {}
    payload = {
        "event": "run_finished",
        "manifest": summary.get("name"),
        "manifest_path": summary.get("manifest"),
        "out": summary.get("out_dir"),
        "exit_code": summary.get("exit_code"),
        "counts": dict(summary.get("counts") or {}),
        "credits": dict(summary.get("credits") or {}),
        "stop_reason": stopped.get("reason"),
        "stop_message": stopped.get("message"),
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "wall_seconds": summary.get("wall_seconds"),
        "host": socket.gethostname(),
    }
    return scrub(payload)
