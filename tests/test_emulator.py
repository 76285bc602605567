"""The emulator against the seed contract: happy paths, every validation rule, credits, rate
limiting, each fault, reproducibility and the request log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps

import pipeline.emulator.uploads as uploads_module
from pipeline.emulator import (
    EmulatorConfig,
    EmulatorServer,
    add_arguments,
    config_from_args,
)
from pipeline.emulator.faults import FaultPlan

KEY = "test-key-5f0c"
HEADERS = {"API-KEY": KEY}
REPO = Path(__file__).resolve().parents[1]

StartEmulator = Callable[..., Awaitable[EmulatorServer]]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def start_emulator() -> AsyncIterator[StartEmulator]:
    """Factory: start an emulator with config overrides; all are stopped at teardown."""
    servers: list[EmulatorServer] = []

    async def start(**overrides: Any) -> EmulatorServer:
        # The seed documents' API: these tests are about its answers; the live regime's are
        # in test_emulator_live*.py.
        server = EmulatorServer(EmulatorConfig.generous(api_key=KEY, **overrides))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> EmulatorServer:
    return await start_emulator()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# --------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def product_photo(size: tuple[int, int] = (64, 48)) -> bytes:
    """A red box on a plain white backdrop."""
    image = Image.new("RGB", size, (255, 255, 255))
    width, height = size
    ImageDraw.Draw(image).rectangle(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(200, 20, 20)
    )
    return encode(image)


def largest_difference(first: Image.Image, second: Image.Image) -> int:
    """The largest per-channel difference between two images of one size and mode."""
    extrema = ImageChops.difference(first, second).getextrema()
    bands = cast(tuple[tuple[int, int], ...], extrema)
    return max(high for _, high in bands)


def rgba_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return cast(tuple[int, ...], image.getpixel(xy))


def half_mask(size: tuple[int, int] = (64, 48)) -> bytes:
    """Left half black (keep), right half white (edit)."""
    image = Image.new("L", size, 0)
    width, height = size
    ImageDraw.Draw(image).rectangle((width // 2, 0, width, height), fill=255)
    return encode(image)


async def upload(
    session: aiohttp.ClientSession,
    server: EmulatorServer,
    data: bytes,
    filename: str = "photo.png",
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("asset", data, filename=filename, content_type="application/octet-stream")
    async with session.post(
        f"{server.api_base}/api/assets", data=form, headers=HEADERS if headers is None else headers
    ) as response:
        await response.read()
        return response


async def upload_path(
    session: aiohttp.ClientSession, server: EmulatorServer, data: bytes, filename: str = "p.png"
) -> str:
    response = await upload(session, server, data, filename)
    assert response.status == 200
    return str((await response.json())["fileContent"]["path"])


async def post_feature(
    session: aiohttp.ClientSession,
    server: EmulatorServer,
    payload: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Status, decoded JSON (None if the body is not JSON) and the response."""
    async with session.post(
        f"{server.api_base}/api/features",
        json=payload,
        headers=HEADERS if headers is None else headers,
    ) as response:
        text = await response.text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        body = None
    return response.status, body, response


def inpaint_payload(image: str, mask: str, **prompt_fields: Any) -> dict[str, Any]:
    prompt_object = {
        "imageUrl": image,
        "maskUrl": mask,
        "prompt": "modern pendant light, brushed metal",
        "size": "1024x1024",
        "n": 1,
    }
    prompt_object.update(prompt_fields)
    return {"type": "IMAGE_INPAINTER", "model": "gpt-image-1-mini", "promptObject": prompt_object}


def background_payload(image: str, **prompt_fields: Any) -> dict[str, Any]:
    prompt_object = {"imageUrl": image, "prompt": "blue sky over a green lawn", "size": "1024x1024"}
    prompt_object.update(prompt_fields)
    return {
        "type": "BACKGROUND_REPLACER",
        "model": "gpt-image-1-mini",
        "promptObject": prompt_object,
    }


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with session.get(url) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


@pytest.fixture
async def uploaded(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> tuple[EmulatorServer, str, str]:
    image = await upload_path(session, emulator, product_photo(), "chair.png")
    mask = await upload_path(session, emulator, half_mask(), "mask.png")
    return emulator, image, mask


# --------------------------------------------------------------------------- packaging


# Imports every module of the emulator (the package's own __init__ loads its parts lazily, so
# importing the package alone proves nothing), then names every `pipeline` module outside it.
_ISOLATION_PROBE = """
import importlib, pkgutil, sys
import pipeline.emulator as emulator
names = [emulator.__name__]
for info in pkgutil.walk_packages(emulator.__path__, emulator.__name__ + "."):
    if info.name.endswith(".__main__"):
        continue  # running it serves forever; it imports only .cli, which is imported here
    importlib.import_module(info.name)
    names.append(info.name)
print(len(names))
foreign = sorted(
    name for name in sys.modules
    if name.startswith("pipeline.") and not name.startswith("pipeline.emulator")
)
print(" ".join(foreign))
"""


def _isolation_probe(preload: str = "") -> tuple[int, list[str]]:
    process = subprocess.run(
        [sys.executable, "-c", preload + _ISOLATION_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    count, foreign = process.stdout.splitlines()
    return int(count), foreign.split()


def test_emulator_imports_nothing_else_from_pipeline() -> None:
    count, foreign = _isolation_probe()
    modules = {path.stem for path in (REPO / "pipeline" / "emulator").glob("*.py")}
    # Every module was really imported, not just the lazy __init__.
    assert count == len(modules - {"__main__"})
    assert foreign == []


def test_isolation_probe_can_fail() -> None:
    # The same probe sees a client module when one is loaded, so the test above can fail.
    _, foreign = _isolation_probe("import pipeline.errors\n")
    assert "pipeline.errors" in foreign


def test_cli_flags_map_onto_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        [
            "--port", "0", "--key", "k", "--credit-limit", "5", "--rpm-limit", "30",
            "--retry-after", "http-date", "--latency", "0.5", "--rate-429", "0.25",
            "--rate-huge", "1", "--huge-bytes", "10", "--foreign-temporary-url",
            "--seed", "9", "--request-log", "log.jsonl",
        ]
    )  # fmt: skip
    config = config_from_args(ns)
    assert (ns.host, ns.port) == ("127.0.0.1", 0)
    assert config.api_key == "k" and config.credit_limit == 5 and config.rpm_limit == 30
    assert config.retry_after == "http-date" and config.latency == 0.5
    assert config.rate_429 == 0.25 and config.rate_huge == 1.0 and config.huge_bytes == 10
    assert config.foreign_temporary_url and config.seed == 9
    assert config.request_log == Path("log.jsonl")
    assert parser.parse_args([]).port == 8765
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate-5xx", "1.5"])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="rate_drop"):
        EmulatorConfig(rate_drop=2)
    with pytest.raises(ValueError, match="retry_after"):
        EmulatorConfig(retry_after="minutes")


def test_serve_forever_prints_bases_and_stops_on_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "pipeline.emulator", "--port", "0", "--key", "fake-key"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(4)]
            assert "api base:   http://127.0.0.1:" in banner[1]
            assert banner[2].strip().endswith("/asset")
            assert "ONEMIN_API_KEY=fake-key" in banner[3]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


# --------------------------------------------------------------------------- happy paths


async def test_upload_answer_has_path_and_key(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    data = product_photo()
    response = await upload(session, emulator, data, "../my chair?.png")
    body = await response.json()
    path = body["fileContent"]["path"]
    assert path.startswith("development/images/") and path.endswith("_my_chair_.png")
    assert body["asset"]["key"] == path
    assert body["fileContent"]["type"] == "image/png"
    assert body["fileContent"]["size"] == len(data)
    # Uploads of the same name in the same millisecond still get distinct paths.
    second = await upload_path(session, emulator, data, "../my chair?.png")
    assert second != path
    status, downloaded, content_type = await fetch(session, f"{emulator.asset_base}/{path}")
    assert (status, downloaded, content_type) == (200, data, "image/png")


async def test_upload_accepts_jpeg_and_webp(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    image = Image.new("RGB", (20, 10), (1, 2, 3))
    for fmt, mime in (("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        response = await upload(session, emulator, encode(image, fmt), f"x.{fmt.lower()}")
        assert response.status == 200
        assert (await response.json())["fileContent"]["type"] == mime


async def test_upload_rejections(
    emulator: EmulatorServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = await upload(session, emulator, b"this is not an image", "x.png")
    assert response.status == 400
    assert (await response.json())["message"].startswith("asset:")
    async with session.post(
        f"{emulator.api_base}/api/assets", data={"other": "x"}, headers=HEADERS
    ) as missing:
        assert missing.status == 400
        assert "asset" in (await missing.json())["message"]
    monkeypatch.setattr(uploads_module, "MAX_UPLOAD_BYTES", 1000)
    response = await upload(session, emulator, product_photo((400, 400)) + bytes(2000), "big.png")
    assert response.status == 413


async def test_inpaint_round_trip(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, mask = uploaded
    payload = inpaint_payload(image, mask, n=2, size="1536x1024", output_format="webp")
    status, body, _ = await post_feature(session, server, payload)
    assert status == 200, body
    record = body["aiRecord"]
    assert record["status"] == "SUCCESS" and record["type"] == "IMAGE_INPAINTER"
    assert record["model"] == "gpt-image-1-mini" and record["uuid"]
    detail = record["aiRecordDetail"]
    assert detail["promptObject"]["quality"] == "medium"  # defaults are filled in
    assert detail["promptObject"]["output_compression"] == 85
    assert detail["responseObject"] == {}
    assert record["teamUser"]["usedCredit"] == 2 * 4000
    assert record["teamUser"]["creditLimit"] == server.config.credit_limit
    results = detail["resultObject"]
    assert len(results) == 2 and all(path.endswith(".webp") for path in results)
    assert record["temporaryUrl"].startswith(f"{server.api_base}/s3/asset.1min.ai/{results[0]}?")
    assert "X-Amz-Signature=" in record["temporaryUrl"]
    bodies = []
    for url in [record["temporaryUrl"]] + [f"{server.asset_base}/{p}" for p in results]:
        status, data, content_type = await fetch(session, url)
        assert status == 200 and content_type == "image/webp"
        decoded = Image.open(io.BytesIO(data))
        assert decoded.format == "WEBP" and decoded.size == (1536, 1024)
        bodies.append(data)
    assert bodies[0] == bodies[1]  # temporaryUrl is the first result
    assert bodies[1] != bodies[2]  # the n results differ
    assert server.state.used_credit == 8000


async def test_inpaint_follows_the_mask(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, mask = uploaded
    status, body, _ = await post_feature(session, server, inpaint_payload(image, mask))
    assert status == 200
    path = body["aiRecord"]["aiRecordDetail"]["resultObject"][0]
    _, data, _ = await fetch(session, f"{server.asset_base}/{path}")
    result = Image.open(io.BytesIO(data)).convert("RGB")
    assert result.size == (1024, 1024)
    photo = Image.open(io.BytesIO(product_photo())).convert("RGB")
    source = ImageOps.fit(photo, (1024, 1024), method=Image.Resampling.BILINEAR)
    # Left (black mask) keeps the source within the drift; right (white mask) is generated fill.
    drift = server.config.drift
    box = (0, 0, 480, 1024)
    assert largest_difference(result.crop(box), source.crop(box)) <= drift
    right = [(x, y) for x in range(600, 1000, 37) for y in range(30, 1000, 41)]
    changed = sum(result.getpixel(xy) != source.getpixel(xy) for xy in right)
    assert changed > 0.9 * len(right)


async def test_jpeg_output_and_low_quality_cost(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, mask = uploaded
    payload = inpaint_payload(
        image, mask, output_format="jpeg", quality="low", output_compression=40
    )
    status, body, _ = await post_feature(session, server, payload)
    assert status == 200
    path = body["aiRecord"]["aiRecordDetail"]["resultObject"][0]
    _, data, content_type = await fetch(session, f"{server.asset_base}/{path}")
    assert content_type == "image/jpeg" and Image.open(io.BytesIO(data)).format == "JPEG"
    assert body["aiRecord"]["teamUser"]["usedCredit"] == 1000


async def test_background_replacer_transparent_clears_backdrop(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    image = await upload_path(session, emulator, product_photo((80, 80)))
    payload = background_payload(image, background="transparent", quality="high")
    status, body, _ = await post_feature(session, emulator, payload)
    assert status == 200, body
    record = body["aiRecord"]
    assert record["aiRecordDetail"]["promptObject"]["background"] == "transparent"
    assert record["teamUser"]["usedCredit"] == 8000
    _, data, content_type = await fetch(session, record["temporaryUrl"])
    result = Image.open(io.BytesIO(data))
    assert content_type == "image/png" and result.format == "PNG"
    assert result.mode == "RGBA" and result.size == (1024, 1024)
    assert rgba_at(result, (10, 10))[3] == 0  # the plain backdrop is gone
    assert rgba_at(result, (1000, 1000))[3] == 0
    red, green, _, alpha = rgba_at(result, (512, 512))
    assert alpha == 255 and red > 150 and green < 80  # the product is kept


async def test_background_replacer_opaque_paints_a_scene(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    image = await upload_path(session, emulator, product_photo((80, 80)))
    status, body, _ = await post_feature(session, emulator, background_payload(image))
    assert status == 200
    _, data, _ = await fetch(session, body["aiRecord"]["temporaryUrl"])
    result = Image.open(io.BytesIO(data))
    assert result.mode == "RGB" and result.size == (1024, 1024)
    assert rgba_at(result, (512, 512))[0] > 150  # product kept
    assert result.getpixel((10, 1000)) != (255, 255, 255)  # backdrop replaced


async def test_same_request_gives_identical_bytes(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    outputs = []
    for _ in range(2):  # a fresh server each time: no shared cache
        server = await start_emulator()
        image = await upload_path(session, server, product_photo())
        mask = await upload_path(session, server, half_mask())
        for _ in range(2):
            status, body, _ = await post_feature(session, server, inpaint_payload(image, mask))
            assert status == 200
            path = body["aiRecord"]["aiRecordDetail"]["resultObject"][0]
            outputs.append((await fetch(session, f"{server.asset_base}/{path}"))[1])
    assert len(set(outputs)) == 1
    different_prompt = inpaint_payload(image, mask, prompt="a red vase")
    _, body, _ = await post_feature(session, server, different_prompt)
    path = body["aiRecord"]["aiRecordDetail"]["resultObject"][0]
    assert (await fetch(session, f"{server.asset_base}/{path}"))[1] != outputs[0]


async def test_latency_sleeps_do_not_serialize_calls(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(latency=0.2)
    bad = inpaint_payload("x", "y", size="1x1")
    started = time.monotonic()
    results = await asyncio.gather(*(post_feature(session, server, bad) for _ in range(5)))
    assert [status for status, _, _ in results] == [400] * 5
    assert 0.2 <= time.monotonic() - started < 0.6


# --------------------------------------------------------------------------- validation

VALIDATION_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("bad type", lambda p: p.update(type="IMAGE_EDITOR"), "type"),
    ("missing type", lambda p: p.pop("type"), "type"),
    ("bad model", lambda p: p.update(model="gpt-image-1"), "model"),
    ("promptObject not object", lambda p: p.update(promptObject=[1]), "promptObject"),
    ("unknown top-level key", lambda p: p.update(extra=1), "extra"),
    ("missing imageUrl", lambda p: p["promptObject"].pop("imageUrl"), "imageUrl"),
    ("missing maskUrl", lambda p: p["promptObject"].pop("maskUrl"), "maskUrl"),
    ("missing prompt", lambda p: p["promptObject"].pop("prompt"), "prompt"),
    ("missing size", lambda p: p["promptObject"].pop("size"), "size"),
    ("missing n", lambda p: p["promptObject"].pop("n"), "n"),
    ("imageUrl not string", lambda p: p["promptObject"].update(imageUrl=5), "imageUrl"),
    ("prompt empty", lambda p: p["promptObject"].update(prompt=""), "prompt"),
    ("prompt 4001", lambda p: p["promptObject"].update(prompt="x" * 4001), "prompt"),
    ("prompt not string", lambda p: p["promptObject"].update(prompt=["a"]), "prompt"),
    ("n zero", lambda p: p["promptObject"].update(n=0), "n"),
    ("n eleven", lambda p: p["promptObject"].update(n=11), "n"),
    ("n string", lambda p: p["promptObject"].update(n="2"), "n"),
    ("n bool", lambda p: p["promptObject"].update(n=True), "n"),
    ("n float", lambda p: p["promptObject"].update(n=1.5), "n"),
    ("bad size", lambda p: p["promptObject"].update(size="512x512"), "size"),
    ("bad quality", lambda p: p["promptObject"].update(quality="ultra"), "quality"),
    ("bad output_format", lambda p: p["promptObject"].update(output_format="gif"), "output_format"),
    (
        "compression 101",
        lambda p: p["promptObject"].update(output_compression=101),
        "output_compression",
    ),
    (
        "compression negative",
        lambda p: p["promptObject"].update(output_compression=-1),
        "output_compression",
    ),
    (
        "background on inpainter",
        lambda p: p["promptObject"].update(background="auto"),
        "background",
    ),
    ("unknown key", lambda p: p["promptObject"].update(style="vivid"), "style"),
]

BACKGROUND_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("bg missing size", lambda p: p["promptObject"].pop("size"), "size"),
    ("bg bad background", lambda p: p["promptObject"].update(background="clear"), "background"),
    ("bg n not allowed", lambda p: p["promptObject"].update(n=1), "n"),
    ("bg maskUrl not allowed", lambda p: p["promptObject"].update(maskUrl="m"), "maskUrl"),
    ("bg bad quality", lambda p: p["promptObject"].update(quality="best"), "quality"),
]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [(m, f) for _, m, f in VALIDATION_CASES],
    ids=[c[0] for c in VALIDATION_CASES],
)
async def test_inpainter_validation(
    uploaded: tuple[EmulatorServer, str, str],
    session: aiohttp.ClientSession,
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    server, image, mask = uploaded
    payload = inpaint_payload(image, mask)
    mutate(payload)
    status, body, _ = await post_feature(session, server, payload)
    assert status == 400
    assert body["message"].startswith(f"{field}: "), body
    assert server.state.used_credit == 0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [(m, f) for _, m, f in BACKGROUND_CASES],
    ids=[c[0] for c in BACKGROUND_CASES],
)
async def test_background_validation(
    uploaded: tuple[EmulatorServer, str, str],
    session: aiohttp.ClientSession,
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    server, image, _ = uploaded
    payload = background_payload(image)
    mutate(payload)
    status, body, _ = await post_feature(session, server, payload)
    assert status == 400
    assert body["message"].startswith(f"{field}: "), body


async def test_prompt_of_4000_characters_is_fine(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, mask = uploaded
    status, _, _ = await post_feature(
        session, server, inpaint_payload(image, mask, prompt="x" * 4000)
    )
    assert status == 200


async def test_unknown_assets_are_404(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, mask = uploaded
    status, body, _ = await post_feature(
        session, server, inpaint_payload("development/nope.png", mask)
    )
    assert status == 404
    assert body["message"] == "imageUrl: asset not found: development/nope.png"
    status, body, _ = await post_feature(session, server, inpaint_payload(image, "gone.png"))
    assert (status, body["message"]) == (404, "maskUrl: asset not found: gone.png")


async def test_mask_size_must_match(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, _ = uploaded
    small_mask = await upload_path(session, server, half_mask((32, 24)))
    status, body, _ = await post_feature(session, server, inpaint_payload(image, small_mask))
    assert status == 400 and body["message"].startswith("maskUrl: ")


async def test_malformed_json_body(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    for raw in (b"{not json", b"[1, 2]"):
        async with session.post(
            f"{emulator.api_base}/api/features",
            data=raw,
            headers={**HEADERS, "Content-Type": "application/json"},
        ) as response:
            assert response.status == 400
            assert (await response.json())["message"].startswith("body: ")


# --------------------------------------------------------------------------- key, credits, limits


async def test_api_key_is_required(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    payload = inpaint_payload("a", "b")
    for headers in ({}, {"API-KEY": "wrong"}):
        status, body, _ = await post_feature(session, emulator, payload, headers=headers)
        assert (status, body) == (401, {"message": "Invalid API key"})
        response = await upload(session, emulator, product_photo(), headers=headers)
        assert response.status == 401


async def test_credits_run_out(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(credit_limit=10_000, used_credit=1_000)
    image = await upload_path(session, server, product_photo())
    mask = await upload_path(session, server, half_mask())
    status, body, _ = await post_feature(session, server, inpaint_payload(image, mask, n=2))
    assert status == 200 and body["aiRecord"]["teamUser"]["usedCredit"] == 9_000
    status, body, _ = await post_feature(session, server, inpaint_payload(image, mask))
    assert (status, body) == (402, {"message": "Insufficient credit balance"})
    status, body, _ = await post_feature(
        session, server, inpaint_payload(image, mask, quality="low")
    )
    assert status == 200 and body["aiRecord"]["teamUser"]["usedCredit"] == 10_000
    assert server.state.used_credit == 10_000
    assert [entry["credits"] for entry in server.state.log if entry["route"] == "features"] == [
        8_000,
        0,
        1_000,
    ]


async def test_concurrent_calls_cannot_overspend(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(credit_limit=12_000)
    image = await upload_path(session, server, product_photo())
    mask = await upload_path(session, server, half_mask())
    calls = [
        post_feature(session, server, inpaint_payload(image, mask, prompt=f"p{i}"))
        for i in range(6)
    ]
    statuses = sorted(status for status, _, _ in await asyncio.gather(*calls))
    assert statuses == [200, 200, 200, 402, 402, 402]
    assert server.state.used_credit == 12_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("retry_format", ["seconds", "http-date", "none"])
async def test_rpm_window(
    start_emulator: StartEmulator, session: aiohttp.ClientSession, retry_format: str
) -> None:
    server = await start_emulator(rpm_limit=2, retry_after=retry_format)
    clock = FakeClock()
    server.clock = clock
    cheap = inpaint_payload("x", "y", size="1x1")  # admitted, then a fast 400
    assert (await post_feature(session, server, cheap))[0] == 400
    clock.now += 20
    assert (await post_feature(session, server, cheap))[0] == 400
    clock.now += 10
    for _ in range(3):  # refused calls do not count: the first slot still frees at +60
        status, body, response = await post_feature(session, server, cheap)
        assert (status, body) == (429, {"message": "Too many requests"})
    header = response.headers.get("Retry-After")
    if retry_format == "seconds":
        assert header == "30"
    elif retry_format == "http-date":
        assert header is not None
        wait = parsedate_to_datetime(header).timestamp() - time.time()
        assert 29 <= wait <= 32
    else:
        assert header is None
    clock.now += 30
    assert (await post_feature(session, server, cheap))[0] == 400
    assert (await post_feature(session, server, cheap))[0] == 429
    faults = [entry["fault"] for entry in server.state.log]
    assert faults == [None, None, "rate_limit", "rate_limit", "rate_limit", None, "rate_limit"]


# --------------------------------------------------------------------------- faults


async def test_fault_429(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_429=1.0, retry_after="http-date")
    status, body, response = await post_feature(session, server, inpaint_payload("a", "b"))
    assert (status, body) == (429, {"message": "Too many requests"})
    assert parsedate_to_datetime(response.headers["Retry-After"]).timestamp() > time.time()
    assert server.state.log[-1]["fault"] == "429" and server.state.faults["429"] == 1


async def test_fault_5xx(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_5xx=1.0)
    statuses = {
        (await post_feature(session, server, inpaint_payload("a", "b")))[0] for _ in range(12)
    }
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    assert {entry["fault"] for entry in server.state.log} == {"5xx"}


async def test_fault_drop(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_drop=1.0)
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await post_feature(session, server, inpaint_payload("a", "b"))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await upload(session, server, product_photo())
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await fetch(session, f"{server.asset_base}/whatever.png")
    entries = [(e["route"], e["status"], e["fault"]) for e in server.state.log]
    assert entries[:2] == [("features", None, "drop"), ("assets", None, "drop")]
    # aiohttp's client itself retries an idempotent GET once after a disconnect.
    assert entries[2:] in ([("asset", None, "drop")], [("asset", None, "drop")] * 2)


async def test_fault_malformed(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(rate_malformed=1.0)
    image = await upload_path(session, server, product_photo())
    mask = await upload_path(session, server, half_mask())
    for _ in range(4):
        status, body, response = await post_feature(session, server, inpaint_payload(image, mask))
        assert status == 200 and body is None
        assert response.headers["Content-Type"].startswith("application/json")
    assert server.state.used_credit == 0
    assert [e["fault"] for e in server.state.log if e["route"] == "features"] == ["malformed"] * 4


async def test_fault_failed(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_failed=1.0)
    image = await upload_path(session, server, product_photo())
    mask = await upload_path(session, server, half_mask())
    status, body, _ = await post_feature(session, server, inpaint_payload(image, mask))
    assert status == 200
    record = body["aiRecord"]
    assert record["status"] in ("FAILED", "FAILURE")
    assert record["aiRecordDetail"]["resultObject"] == []
    assert record["teamUser"]["usedCredit"] == 0 and server.state.used_credit == 0
    entry = server.state.log[-1]
    assert (entry["fault"], entry["credits"], entry["uuid"]) == ("failed", 0, record["uuid"])


async def test_fault_forget(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_forget=1.0)
    image = await upload_path(session, server, product_photo())
    status, body, _ = await post_feature(session, server, background_payload(image))
    assert (status, body) == (404, {"message": f"imageUrl: asset not found: {image}"})
    assert image not in server.state.assets
    assert server.state.log[-1]["fault"] == "forget"


async def test_fault_slow(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_slow=1.0, slow_seconds=0.2)
    image = await upload_path(session, server, product_photo())
    started = time.monotonic()
    status, _, _ = await post_feature(session, server, background_payload(image))
    assert status == 200 and time.monotonic() - started >= 0.2
    assert server.state.log[-1]["fault"] == "slow"
    # A client that gives up is not charged for the work it never receives.
    logged = len(server.state.log)
    with pytest.raises(asyncio.TimeoutError):
        await post_feature_with_timeout(session, server, background_payload(image), timeout=0.05)
    for _ in range(200):  # the handler logs the call once its slow sleep ends (0.2 s)
        if len(server.state.log) > logged:
            break
        await asyncio.sleep(0.01)
    assert server.state.used_credit == 4000
    assert server.state.log[-1]["status"] is None and server.state.log[-1]["credits"] == 0


async def post_feature_with_timeout(
    session: aiohttp.ClientSession, server: EmulatorServer, payload: Any, timeout: float
) -> None:
    async with session.post(
        f"{server.api_base}/api/features",
        json=payload,
        headers=HEADERS,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        await response.read()


async def test_fault_truncate(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(rate_truncate=1.0)
    path = await upload_path(session, server, product_photo((300, 300)))
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(session, f"{server.asset_base}/{path}")
    assert server.state.log[-1]["fault"] == "truncate" and server.state.log[-1]["status"] == 200


async def test_fault_expire(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_expire=1.0)
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, background_payload(image))
    record = body["aiRecord"]
    status, data, content_type = await fetch(session, record["temporaryUrl"])
    assert status == 403 and "xml" in content_type
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in data
    assert server.state.log[-1]["fault"] == "expire"
    # The plain asset URL has no signature to expire.
    path = record["aiRecordDetail"]["resultObject"][0]
    assert (await fetch(session, f"{server.asset_base}/{path}"))[0] == 200


async def test_fault_huge(start_emulator: StartEmulator, session: aiohttp.ClientSession) -> None:
    server = await start_emulator(rate_huge=1.0, huge_bytes=3 * 1024 * 1024 + 5)
    path = await upload_path(session, server, product_photo())
    async with session.get(f"{server.asset_base}/{path}") as response:
        assert response.content_length == 3 * 1024 * 1024 + 5
        assert len(await response.read()) == 3 * 1024 * 1024 + 5
    assert server.state.log[-1]["fault"] == "huge"


async def test_fault_huge_stops_when_client_leaves(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(rate_huge=1.0, huge_bytes=1 << 40)
    path = await upload_path(session, server, product_photo())
    async with session.get(f"{server.asset_base}/{path}") as response:
        await response.content.readexactly(1 << 20)
        response.close()
    for _ in range(100):  # the server notices within a few writes
        if server.state.log and server.state.log[-1]["route"] == "asset":
            break
        await asyncio.sleep(0.02)
    assert server.state.log[-1]["fault"] == "huge"


async def test_foreign_temporary_url(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(foreign_temporary_url=True)
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, background_payload(image))
    assert body["aiRecord"]["temporaryUrl"].startswith("http://203.0.113.1/s3/asset.1min.ai/")


async def test_temporary_url_signature_is_checked(
    uploaded: tuple[EmulatorServer, str, str], session: aiohttp.ClientSession
) -> None:
    server, image, _ = uploaded
    _, body, _ = await post_feature(session, server, background_payload(image))
    url = body["aiRecord"]["temporaryUrl"]
    assert (await fetch(session, url))[0] == 200
    tampered = url.replace("X-Amz-Expires=604800", "X-Amz-Expires=999999")
    unsigned = url.split("?")[0]
    for bad in (tampered, unsigned):
        status, data, _ = await fetch(session, bad)
        assert status == 403 and b"<Code>AccessDenied</Code>" in data
    assert (await fetch(session, f"{server.asset_base}/development/images/none.png"))[0] == 404


def test_same_seed_same_fault_sequence() -> None:
    config = EmulatorConfig(rate_429=0.2, rate_5xx=0.2, rate_failed=0.3, rate_drop=0.1, seed=42)

    def sequence(cfg: EmulatorConfig) -> list[Any]:
        plan = FaultPlan(cfg)
        return [plan.feature() for _ in range(50)] + [plan.download(True) for _ in range(20)]

    first = sequence(config)
    assert first == sequence(config)
    assert first != sequence(EmulatorConfig(rate_429=0.2, rate_5xx=0.2, rate_failed=0.3, seed=43))
    assert any(f.storm_429 for f in first[:50]) and any(f.failed for f in first[:50])


async def test_same_seed_same_answers_over_http(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    sequences = []
    for _ in range(2):
        server = await start_emulator(rate_429=0.3, rate_5xx=0.3, seed=7)
        for _ in range(15):
            await post_feature(session, server, inpaint_payload("a", "b"))
        sequences.append([(e["status"], e["fault"]) for e in server.state.log])
    assert sequences[0] == sequences[1]
    assert {fault for _, fault in sequences[0]} == {None, "429", "5xx"}


# --------------------------------------------------------------------------- request log


async def test_request_log_file(
    start_emulator: StartEmulator, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    log_path = tmp_path / "logs" / "requests.jsonl"
    server = await start_emulator(request_log=log_path)
    image = await upload_path(session, server, product_photo())
    mask = await upload_path(session, server, half_mask())
    _, body, _ = await post_feature(session, server, inpaint_payload(image, mask))
    await fetch(session, body["aiRecord"]["temporaryUrl"])
    await post_feature(session, server, inpaint_payload(image, mask), headers={"API-KEY": "nope"})
    text = log_path.read_text()
    assert KEY not in text and "nope" not in text and "X-Amz-Signature" not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries == server.state.log
    assert [e["route"] for e in entries] == [
        "assets",
        "assets",
        "features",
        "temporary",
        "features",
    ]
    feature = entries[2]
    assert set(feature) == {
        "ts", "arrived", "method", "path", "route", "status", "fault", "type", "uuid", "record",
        "credits",
    }  # fmt: skip
    assert feature["arrived"] <= feature["ts"] and feature["record"] == "SUCCESS"
    assert feature["status"] == 200 and feature["type"] == "IMAGE_INPAINTER"
    assert feature["uuid"] == body["aiRecord"]["uuid"] and feature["credits"] == 4000
    assert entries[3]["path"].startswith("/s3/asset.1min.ai/") and "?" not in entries[3]["path"]
    assert entries[4]["status"] == 401 and entries[4]["type"] == "IMAGE_INPAINTER"
    counters = server.state.counters
    assert (counters["uploads"], counters["feature_calls"], counters["downloads"]) == (2, 2, 1)
    assert os.path.getsize(log_path) > 0


async def test_stop_does_not_wait_for_slow_calls(
    start_emulator: StartEmulator, session: aiohttp.ClientSession
) -> None:
    server = await start_emulator(rate_slow=1.0, slow_seconds=30)
    image = await upload_path(session, server, product_photo())
    call = asyncio.create_task(post_feature(session, server, background_payload(image)))
    while server.state.faults["slow"] == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 2
    # The woken call may still be answered or cut off; either way it is over now.
    with contextlib.suppress(aiohttp.ClientError):
        await asyncio.wait_for(call, 1)


async def test_oversized_json_body_is_413(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{emulator.api_base}/api/features", data=io.BytesIO(b"x" * (2 << 20)), headers=HEADERS
    ) as response:
        assert response.status == 413
        assert (await response.json())["message"].startswith("body: ")
