"""Command-line wiring: `pipeline emulator [options]` (and `python -m pipeline.emulator`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import (
    BAD_KEY_STATUSES,
    ERROR_BODIES,
    FAILURE_WORDS,
    RATE_FIELDS,
    RETRY_AFTER_FORMATS,
    EmulatorConfig,
)

if TYPE_CHECKING:
    from .server import EmulatorServer

_RATE_HELP = {
    "rate_429": "share of feature calls answered 429 at random (Retry-After 1 s)",
    "rate_5xx": "share of feature calls answered 500/502/503",
    "rate_drop": "share of requests whose connection is closed without an answer",
    "rate_malformed": "share of feature answers that are 200 with broken JSON",
    "rate_failed": "share of feature calls answered 200 with a failed record (free; see "
    "--failure-status)",
    "rate_truncate": "share of downloads cut short after a full Content-Length",
    "rate_expire": "share of temporaryUrl downloads answered 403 (expired signature)",
    "rate_forget": "share of feature calls that first forget their image asset (404)",
    "rate_slow": "share of feature calls that sleep --slow-seconds before answering",
    "rate_huge": "share of downloads that stream --huge-bytes of garbage",
    "rate_403_html": "share of API requests (uploads, feature calls, polls) answered 403 with "
    "an HTML challenge page, as a CDN in front of the API does (transient)",
    "rate_processing": 'share of feature calls answered 200 with status "PROCESSING" (a body '
    'with "async": true always is); poll GET /api/results/{uuid}',
    "rate_processing_failed": "share of PROCESSING records that end failed (free) instead of "
    "SUCCESS",
}
# Shown in their own group, not among the faults.
_RECORD_RATES = ("rate_processing", "rate_processing_failed")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _non_negative(text: str, kind: type[float] | type[int] = float) -> float:
    try:
        value = kind(text)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _count(text: str) -> int:
    return int(_non_negative(text, int))


def _positive_count(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --host, --port and one option per EmulatorConfig field (dest = the field's name)."""
    d = EmulatorConfig()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 for any free one (%(default)s)"
    )
    account = parser.add_argument_group("account")
    account.add_argument(
        "--key", dest="api_key", metavar="KEY", default=d.api_key, help="the accepted API key"
    )
    account.add_argument(
        "--credit-limit",
        type=_count,
        metavar="N",
        default=d.credit_limit,
        help="credits the account may use in all; beyond: 402 (%(default)s)",
    )
    account.add_argument(
        "--used-credit", type=_count, metavar="N", default=d.used_credit, help="used at start"
    )
    # One window, given per minute or over any length: never both.
    limits = account.add_mutually_exclusive_group()
    limits.add_argument(
        "--rpm-limit",
        type=_positive,
        metavar="N",
        default=None,
        help="API requests (uploads, feature calls and result polls together; not downloads) "
        "admitted in any rolling 60 s; beyond: 429 with Retry-After (default: no limit)",
    )
    limits.add_argument(
        "--window-limit",
        type=_positive_count,
        metavar="N",
        default=None,
        help="the same limit over another window: N API requests in any --window-seconds "
        "(instead of --rpm-limit)",
    )
    account.add_argument(
        "--window-seconds",
        type=_positive,
        metavar="S",
        default=d.window_seconds,
        help="length of the --window-limit window (%(default)s)",
    )
    account.add_argument(
        "--bad-key-status",
        type=int,
        choices=BAD_KEY_STATUSES,
        default=d.bad_key_status,
        help='status of a wrong or missing key, JSON {"message": "Invalid API key"} (%(default)s)',
    )
    account.add_argument(
        "--retry-after",
        choices=RETRY_AFTER_FORMATS,
        default=d.retry_after,
        help="Retry-After format on 429 answers (%(default)s)",
    )
    timing = parser.add_argument_group("timing (seconds)")
    timing.add_argument(
        "--latency", type=_non_negative, metavar="S", default=d.latency, help="per feature call"
    )
    timing.add_argument(
        "--jitter", type=_non_negative, metavar="S", default=d.jitter, help="+- on --latency"
    )
    timing.add_argument(
        "--asset-latency",
        type=_non_negative,
        metavar="S",
        default=d.asset_latency,
        help="per upload and download",
    )
    _add_record_arguments(parser, d)
    faults = parser.add_argument_group("faults (rates are probabilities 0..1)")
    _add_rates(faults, [rate for rate in RATE_FIELDS if rate not in _RECORD_RATES])
    faults.add_argument(
        "--slow-seconds",
        type=_non_negative,
        metavar="S",
        default=d.slow_seconds,
        help="sleep of a slow call (%(default)s)",
    )
    faults.add_argument(
        "--huge-bytes",
        type=_count,
        metavar="N",
        default=d.huge_bytes,
        help="length of a huge download (%(default)s)",
    )
    faults.add_argument(
        "--foreign-temporary-url",
        action="store_true",
        help="point temporaryUrl at another, unreachable host (203.0.113.1)",
    )
    faults.add_argument(
        "--failure-status",
        choices=FAILURE_WORDS,
        default=d.failure_status,
        help="status word of a failed record; mixed: FAILED or FAILURE, seeded (%(default)s)",
    )
    faults.add_argument(
        "--error-bodies",
        choices=ERROR_BODIES,
        default=d.error_bodies,
        help="where JSON 5xx answers put their text: varied among message, error.message and "
        "error (a string), seeded; or always message (%(default)s)",
    )
    faults.add_argument(
        "--drift",
        type=_count,
        metavar="LEVELS",
        default=d.drift,
        help="inpainted results change the pixels the mask keeps by up to this many levels per "
        "channel (a seeded shift per result, as the real model does not keep them exactly); "
        "0 keeps them exactly (%(default)s)",
    )
    faults.add_argument(
        "--seed", type=int, default=d.seed, help="seed of every random decision (%(default)s)"
    )
    parser.add_argument(
        "--request-log",
        type=Path,
        metavar="PATH",
        default=None,
        help="append one JSON line per request here (never headers or the key)",
    )


def _add_record_arguments(parser: argparse.ArgumentParser, d: EmulatorConfig) -> None:
    records = parser.add_argument_group("unfinished records")
    _add_rates(records, _RECORD_RATES)
    records.add_argument(
        "--processing-seconds",
        type=_non_negative,
        metavar="S",
        default=d.processing_seconds,
        help="how long a PROCESSING record takes to finish (%(default)s)",
    )
    records.add_argument(
        "--processing-jitter",
        type=_non_negative,
        metavar="S",
        default=d.processing_jitter,
        help="+- on --processing-seconds, seeded (%(default)s)",
    )


def _add_rates(group: argparse._ArgumentGroup, names: Iterable[str]) -> None:
    """One ``--rate-x P`` option a fault rate, each off (0.0) unless given."""
    for name in names:
        flag = "--" + name.replace("_", "-")
        group.add_argument(
            flag, dest=name, type=_rate, metavar="P", default=0.0, help=_RATE_HELP[name]
        )


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    """The config from parsed options; ValueError for combinations argparse cannot check."""
    values = {name: getattr(ns, name) for name in EmulatorConfig.field_names() if hasattr(ns, name)}
    return EmulatorConfig(**values)


def serve_forever(config: EmulatorConfig, host: str, port: int) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 after a clean stop, 1 if it cannot listen."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(config, host, port))
    return 0


async def _serve(config: EmulatorConfig, host: str, port: int) -> int:
    from .server import EmulatorServer  # not at import: every `pipeline` command loads this file

    server = EmulatorServer(config)
    try:
        await server.start(host, port)
    except OSError as exc:
        print(f"emulator: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on every platform; Ctrl-C then arrives as KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    _print_banner(server, config)
    try:
        await stop.wait()
    finally:
        print("emulator: stopping", flush=True)
        await server.stop()
    return 0


def _print_banner(server: EmulatorServer, config: EmulatorConfig) -> None:
    # The emulator's key is a fake one chosen on the command line; showing it is the point.
    lines = [
        "1min.ai emulator listening",
        f"  api base:   {server.api_base}",
        f"  asset base: {server.asset_base}",
        f"  API key:    set ONEMIN_API_KEY={config.api_key}",
        f"  try:        ONEMIN_API_BASE={server.api_base} ONEMIN_ASSET_BASE={server.asset_base}",
    ]
    if config.request_log is not None:
        lines.append(f"  request log: {config.request_log}")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.emulator",
        description="A local stand-in of the 1min.ai API, with seeded fault injection.",
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except ValueError as exc:
        parser.error(str(exc))
    return serve_forever(config, ns.host, ns.port)
