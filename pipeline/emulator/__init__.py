"""A faithful local stand-in of the 1min.ai API (uploads, IMAGE_INPAINTER, BACKGROUND_REPLACER,
records still processing and their results endpoint, asset downloads), with seeded fault
injection.

It is written from the seed documents and SPEC 1a alone and imports nothing else from `pipeline`,
so a misunderstanding in the client cannot make both sides agree on something wrong.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cli import add_arguments, config_from_args, serve_forever
    from .config import EmulatorConfig
    from .server import EmulatorServer
    from .state import EmulatorState, StoredAsset

# Loaded on first use (PEP 562): every `pipeline` command builds the emulator's argument parser,
# and none but `pipeline emulator` and `run --emulator` needs the server and its image code.
_EXPORTS = {
    "add_arguments": ".cli",
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
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "StoredAsset",
    "add_arguments",
    "config_from_args",
    "serve_forever",
]
