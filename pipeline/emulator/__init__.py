"""A faithful local stand-in of the 1min.ai API (uploads, IMAGE_INPAINTER, BACKGROUND_REPLACER,
records still processing and their results endpoint, asset downloads), with seeded fault
injection, in the regime the seed documents describe (`generous`) or the one live calls showed
(`live`, `realistic`: see profiles.py), and a charge log of what the account paid.

It is written from the API's documents and public notes of live calls alone and imports nothing
else from `pipeline`, so a misunderstanding in the client cannot make both sides agree on
something wrong.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .arguments import add_arguments
    from .charges import Charge, read_charge_log
    from .cli import config_from_args, serve_forever
    from .config import EmulatorConfig
    from .server import EmulatorServer
    from .state import EmulatorState, StoredAsset
    from .timing import ManualTime

# Loaded on first use (PEP 562): every `pipeline` command builds the emulator's argument parser,
# and none but `pipeline emulator` and `run --emulator` needs the server and its image code.
_EXPORTS = {
    "add_arguments": ".arguments",
    "Charge": ".charges",
    "read_charge_log": ".charges",
    "ManualTime": ".timing",
    "config_from_args": ".cli",
    "serve_forever": ".cli",
    "EmulatorConfig": ".config",
    "EmulatorServer": ".server",
    "EmulatorState": ".state",
    "StoredAsset": ".state",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)


__all__ = [
    "Charge",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "ManualTime",
    "StoredAsset",
    "add_arguments",
    "config_from_args",
    "read_charge_log",
    "serve_forever",
]
