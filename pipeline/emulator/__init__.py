"""A faithful local stand-in of the 1min.ai API (uploads, IMAGE_INPAINTER, BACKGROUND_REPLACER,
asset downloads), with seeded fault injection.

It is written from the seed documents alone and imports nothing else from `pipeline`, so a
misunderstanding in the client cannot make both sides agree on something wrong.
"""

from __future__ import annotations

from .cli import add_arguments, config_from_args, serve_forever
from .config import EmulatorConfig
from .server import EmulatorServer, EmulatorState, StoredAsset

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "StoredAsset",
    "add_arguments",
    "config_from_args",
    "serve_forever",
]
