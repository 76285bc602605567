"""The real client against the emulator on 127.0.0.1: each API outcome maps to the right error."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from pipeline.client import OneMinClient
from pipeline.config import Endpoints, Timeouts
from pipeline.emulator import EmulatorConfig, EmulatorServer
from pipeline.errors import (
    ApiTimeout,
    AssetNotFound,
    BadRequest,
    BadResponse,
    ConnectionLost,
    KeyRejected,
    OutOfCredits,
    RateLimited,
    RecordFailed,
    ServerError,
)
from pipeline.models import Feature, FeatureResult, InputRef, Job

KEY = "test-key-123"


def image_bytes(
    size: tuple[int, int] = (64, 48), mode: str = "RGB", color: object = "navy"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(api_key=KEY, seed=1)) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_for(
    server: EmulatorServer, session: aiohttp.ClientSession, key: str = KEY, **timeouts: float
) -> OneMinClient:
    endpoints = Endpoints(server.api_base, server.asset_base)
    return OneMinClient(session, endpoints, key, replace(Timeouts(), **timeouts))


def inpaint_job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "id": "sku-1",
        "feature": Feature.INPAINT,
        "image": InputRef("file", "/x.png"),
        "mask": InputRef("file", "/m.png"),
        "prompt": "a brass lamp",
        "size": "1024x1536",
        "n": 2,
        "output_format": "webp",
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


async def uploaded(client: OneMinClient) -> tuple[str, str]:
    image = await client.upload_asset(image_bytes(), "chair.png", "image/png")
    mask = await client.upload_asset(image_bytes(mode="L", color=255), "mask.png", "image/png")
    return image.path, mask.path


async def test_upload_edit_and_fetch_every_result(
    emulator: EmulatorServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = client_for(emulator, session)
    image, mask = await uploaded(client)
    result = await client.run_feature(inpaint_job(), image, mask)
    assert len(result.result_paths) == 2 and result.uuid and result.used_credit
    for index in range(2):
        dest = tmp_path / f"{index}.webp"
        assert await client.fetch_result(result, index, dest) == dest.stat().st_size
        with Image.open(dest) as output:
            assert (output.format, output.size) == ("WEBP", (1024, 1536))


async def test_background_replacer(
    emulator: EmulatorServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = client_for(emulator, session)
    image, _ = await uploaded(client)
    job = Job("b", Feature.BACKGROUND, InputRef("file", "/x"), "marble", background="transparent")
    result = await client.run_feature(job, image, None)
    await client.fetch_result(result, 0, tmp_path / "0")
    with Image.open(tmp_path / "0") as output:
        assert output.size == (1024, 1024) and output.mode == "RGBA"


async def test_wrong_key_is_rejected(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(emulator, session, key="wrong-key")
    with pytest.raises(KeyRejected) as caught:
        await client.upload_asset(image_bytes(), "a.png", "image/png")
    assert "wrong-key" not in str(caught.value)


async def test_out_of_credits(emulator: EmulatorServer, session: aiohttp.ClientSession) -> None:
    client = client_for(emulator, session)
    image, mask = await uploaded(client)
    emulator.state.credit_limit = emulator.state.used_credit + 100
    with pytest.raises(OutOfCredits):
        await client.run_feature(inpaint_job(), image, mask)


async def test_invalid_request_is_job_fatal(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(emulator, session)
    image, mask = await uploaded(client)
    with pytest.raises(BadRequest, match="prompt"):
        await client.run_feature(inpaint_job(prompt="x" * 4001), image, mask)


async def test_unknown_asset(emulator: EmulatorServer, session: aiohttp.ClientSession) -> None:
    client = client_for(emulator, session)
    _, mask = await uploaded(client)
    with pytest.raises(AssetNotFound):
        await client.run_feature(inpaint_job(), "development/images/nope.png", mask)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"rate_429": 1.0}, RateLimited),
        ({"rate_5xx": 1.0}, ServerError),
        ({"rate_drop": 1.0}, ConnectionLost),
        ({"rate_malformed": 1.0}, BadResponse),
        ({"rate_failed": 1.0}, RecordFailed),
        ({"rate_forget": 1.0}, AssetNotFound),
    ],
)
async def test_feature_faults_map_to_errors(
    emulator: EmulatorServer,
    session: aiohttp.ClientSession,
    fault: dict[str, float],
    expected: type,
) -> None:
    client = client_for(emulator, session)
    image, mask = await uploaded(client)
    for name, rate in fault.items():
        setattr(emulator.config, name, rate)
    with pytest.raises(expected):
        await client.run_feature(inpaint_job(), image, mask)


async def test_429_retry_after_parsed_in_both_forms(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(emulator, session)
    image, mask = await uploaded(client)
    emulator.config.rate_429 = 1.0
    for form in ("seconds", "http-date"):
        emulator.config.retry_after = form
        with pytest.raises(RateLimited) as caught:
            await client.run_feature(inpaint_job(), image, mask)
        assert caught.value.retry_after is not None and 0 <= caught.value.retry_after <= 2
    emulator.config.retry_after = "none"
    with pytest.raises(RateLimited) as caught:
        await client.run_feature(inpaint_job(), image, mask)
    assert caught.value.retry_after is None


async def test_slow_answer_times_out(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(emulator, session, feature=0.3)
    image, mask = await uploaded(client)
    emulator.config.rate_slow, emulator.config.slow_seconds = 1.0, 5.0
    with pytest.raises(ApiTimeout):
        await client.run_feature(inpaint_job(), image, mask)


async def done_result(client: OneMinClient) -> FeatureResult:
    image, mask = await uploaded(client)
    return await client.run_feature(inpaint_job(n=1), image, mask)


async def test_expired_temporary_url_falls_back_to_asset_host(
    emulator: EmulatorServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = client_for(emulator, session)
    result = await done_result(client)
    emulator.config.rate_expire = 1.0
    await client.fetch_result(result, 0, tmp_path / "out")
    routes = [entry["route"] for entry in emulator.state.log[-2:]]
    assert routes == ["temporary", "asset"]


async def test_truncated_download_is_bad_response(
    emulator: EmulatorServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = client_for(emulator, session)
    result = await done_result(client)
    emulator.config.rate_truncate = 1.0
    with pytest.raises((BadResponse, ConnectionLost)):
        await client.fetch_result(result, 0, tmp_path / "out")


async def test_absurdly_large_body_is_refused(
    emulator: EmulatorServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = client_for(emulator, session, max_download_bytes=2_000_000)
    result = await done_result(client)
    emulator.config.rate_huge, emulator.config.huge_bytes = 1.0, 50_000_000
    with pytest.raises(BadResponse, match="allowed"):
        await client.fetch_result(result, 0, tmp_path / "out")


async def test_foreign_temporary_url_is_never_contacted(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(emulator, session)
    emulator.config.foreign_temporary_url = True
    result = await done_result(client)
    assert result.temporary_url and "127.0.0.1" not in result.temporary_url
    urls = client.result_urls(result, 0)
    assert urls == [f"{emulator.asset_base}/{result.result_paths[0]}"]


def test_key_not_in_repr() -> None:
    client = OneMinClient(None, Endpoints(), "sk-secret")  # type: ignore[arg-type]
    assert "sk-secret" not in repr(client) and "sk-secret" not in str(vars(client).keys())
