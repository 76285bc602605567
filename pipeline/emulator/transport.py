"""HTTP chores of the emulator's routes: reading bodies, naming uploads, seeing a client leave."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from .validation import ApiError

CHUNK = 1 << 20


def url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        # Listening on every interface; this machine reaches itself on loopback.
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class BadJson:
    reason: str


def decode_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return BadJson(str(exc))


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def safe_name(filename: str, pil_format: str) -> str:
    """The upload's base name restricted to URL-safe characters, with an extension."""
    # Clients percent-encode odd characters in multipart filenames (aiohttp does).
    base = unquote(filename).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")[:100] or "image"
    if "." not in cleaned:
        cleaned += "." + pil_format.lower().replace("jpeg", "jpg")
    return cleaned


async def discard_body(request: web.Request) -> None:
    # A dropped upload is dropped after the bytes arrived, as when a server dies mid-request.
    with contextlib.suppress(Exception):
        while await request.content.read(CHUNK):
            pass


async def read_asset_field(request: web.Request, max_bytes: int) -> tuple[str, bytes]:
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "asset: expected a multipart/form-data body with a file field 'asset'")
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "asset":
                return part.filename or "image", await read_limited(part, max_bytes)
            await part.release()
    except ValueError as exc:  # aiohttp's complaint about a broken multipart body
        raise ApiError(400, f"asset: malformed multipart body ({exc})") from exc
    raise ApiError(400, "asset: missing file field 'asset'")


async def read_limited(part: BodyPartReader, max_bytes: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > max_bytes:
            raise ApiError(413, f"asset: file is larger than {max_bytes // 2**20} MiB")
    return bytes(data)
