"""Command-line wiring: `pipeline emulator [options]` (and `python -m pipeline.emulator`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any

from .arguments import add_arguments
from .config import EmulatorConfig
from .profiles import DEFAULT_PROFILE

if TYPE_CHECKING:
    from .server import EmulatorServer

# The older names of the edit duration, passed on as given.
_ALIASES = ("processing_seconds", "processing_jitter")

__all__ = ["add_arguments", "config_from_args", "main", "serve_forever"]


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    """The config from parsed options: the profile's settings, then every option given.

    ValueError for combinations argparse cannot check.
    """
    names = (*EmulatorConfig.field_names(), *_ALIASES)
    values: dict[str, Any] = {name: getattr(ns, name) for name in names if hasattr(ns, name)}
    return EmulatorConfig.profile(getattr(ns, "profile", DEFAULT_PROFILE), **values)


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
    lines.append(f"  regime:     {_regime(config)}")
    if config.request_log is not None:
        lines.append(f"  request log: {config.request_log}")
    if config.charge_log is not None:
        lines.append(f"  charge log: {config.charge_log}")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def _regime(config: EmulatorConfig) -> str:
    """One line on what a client meets: edit time, the CDN, the bucket, the window."""
    gateway = config.gateway_timeout
    window = config.window
    parts = [
        f"edits {config.edit_seconds:g} s +-{config.edit_jitter:.0%}",
        "no gateway" if gateway is None else f"gateway {gateway:g} s",
        "public assets" if config.public_assets else "private bucket",
        "no window" if window is None else f"{window[0]:g} requests / {window[1]:g} s",
        f"{config.error_bodies} error bodies",
    ]
    return ", ".join(parts)


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
