"""The real client against the emulator on 127.0.0.1: each API outcome maps to the right error."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TypedDict, Unpack

import aiohttp
import orjson
import pytest
from aiohttp import web
from PIL import Image

from pipeline.api.client import USER_AGENT, OneMinClient
from pipeline.config import Endpoints, Timeouts
from pipeline.emulator import EmulatorConfig, EmulatorServer
from pipeline.errors import (
    AnswerLost,
    ApiError,
    ApiTimeout,
    AssetNotFound,
    BadRequest,
    BadResponse,
    ConnectionLost,
    DownloadFailed,
    KeyRejected,
    OutOfCredits,
    RateLimited,
    RecordFailed,
    RecordUnknown,
    ServerError,
)
from pipeline.models import Feature, FeatureResult, InputRef, Job

KEY = "test-key-123"


def image_bytes(
    size: tuple[int, int] = (64, 48), mode: str = "RGB", color: float | str = "navy"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    # The seed tables' API (a public asset host, sync answers): these tests are about mapping
    # answers to errors; the live regime's own tests are below and in test_live_*.py.
    async with EmulatorServer(EmulatorConfig.generous(api_key=KEY, seed=1)) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class TimeoutsGiven(TypedDict, total=False):
    """The Timeouts fields a test may set, with their types."""

    connect: float
    upload: float
    feature: float
    download: float
    max_download_bytes: int
    max_json_bytes: int
    poll: float
    processing: float
    poll_initial: float
    poll_max: float
    gateway: float


def client_for(
    server: EmulatorServer,
    session: aiohttp.ClientSession,
    key: str = KEY,
    **timeouts: Unpack[TimeoutsGiven],
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
    assert await client.serves_unsigned(image)  # a public asset host: every result fetchable
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
        ({"rate_5xx": 1.0}, (ServerError, AnswerLost)),  # a JSON 500, or an HTML 502/503
        ({"rate_drop": 1.0}, AnswerLost),  # dropped after the body was sent: maybe charged
        ({"rate_malformed": 1.0}, BadResponse),
        ({"rate_failed": 1.0}, RecordFailed),
        ({"rate_forget": 1.0}, AssetNotFound),
    ],
)
async def test_feature_faults_map_to_errors(
    emulator: EmulatorServer,
    session: aiohttp.ClientSession,
    fault: dict[str, float],
    expected: type | tuple[type, ...],
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
    with pytest.raises(AnswerLost) as caught:  # the body was sent: the edit may have been made
        await client.run_feature(inpaint_job(), image, mask)
    assert caught.value.kind == "timeout"
    with pytest.raises(ApiTimeout):  # an upload is no purchase: an ordinary timeout
        await client_for(emulator, session, upload=0.0001).upload_asset(
            image_bytes(), "a.png", "image/png"
        )


async def done_result(client: OneMinClient) -> FeatureResult:
    image, mask = await uploaded(client)
    return await client.run_feature(inpaint_job(n=1), image, mask)


async def test_expired_temporary_url_falls_back_to_asset_host(
    emulator: EmulatorServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = client_for(emulator, session)
    result = await done_result(client)
    client.unsigned_reads = True  # as after a check that the asset host serves our uploads
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
    assert client.result_urls(result, 0) == []
    client.unsigned_reads = True
    assert client.result_urls(result, 0) == [f"{emulator.asset_base}/{result.result_paths[0]}"]


async def test_private_bucket_serves_the_first_result_signed_only(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The live bucket: the asset host refuses unsigned reads, temporaryUrl signs result 0."""
    async with EmulatorServer(EmulatorConfig.live(api_key=KEY, edit_seconds=0.0)) as server:
        client = client_for(server, session)
        image, mask = await uploaded(client)
        assert not await client.serves_unsigned(image) and not client.unsigned_reads
        result = await client.run_feature(inpaint_job(), image, mask)
        assert len(result.result_paths) == 2
        await client.fetch_result(result, 0, tmp_path / "0")
        asked = len(server.state.log)
        with pytest.raises(DownloadFailed, match="no URL serves it"):
            await client.fetch_result(result, 1, tmp_path / "1")
        assert len(server.state.log) == asked  # nothing was even asked


async def test_an_unsigned_read_refused_is_no_and_one_unanswered_is_transient(
    emulator: EmulatorServer, session: aiohttp.ClientSession
) -> None:
    client = client_for(emulator, session)
    assert not await client.serves_unsigned("development/images/nothing-here.png")  # a 404
    image = (await client.upload_asset(image_bytes(), "a.png", "image/png")).path
    emulator.config.rate_drop = 1.0
    with pytest.raises(ConnectionLost):  # no answer: the caller asks again, or takes it as no
        await client.serves_unsigned(image)
    assert not client.unsigned_reads


def test_key_not_in_repr() -> None:
    client = OneMinClient(None, Endpoints(), "sk-secret")  # type: ignore[arg-type]
    assert "sk-secret" not in repr(client) and "sk-secret" not in str(vars(client).keys())


# -- against small stub servers: what the emulator of this tree does not model yet ------------


class Stub:
    """An aiohttp.web server answering each route with a scripted (status, body, type)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, str]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        status, payload, content_type = self.answers.get(request.path, (404, b"", "text/plain"))
        return web.Response(status=status, body=payload, content_type=content_type)


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, str]]:
    state = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def stub_client(base: str, session: aiohttp.ClientSession) -> OneMinClient:
    return OneMinClient(session, Endpoints(base, base), KEY)


def ai_record(status: str, paths: list[str] | None = None) -> bytes:
    record = {
        "uuid": "rec-7",
        "status": status,
        "aiRecordDetail": {"resultObject": paths or []},
        "teamUser": {"usedCredit": 12, "creditLimit": 100},
    }
    return orjson.dumps({"aiRecord": record})


async def test_async_flag_sent_at_top_level_and_processing_answer_parsed(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    state.answers["/api/features"] = (200, ai_record("PROCESSING"), "application/json")
    client = stub_client(base, session)
    result = await client.run_feature(inpaint_job(), "a.png", "m.png", asynchronous=True)
    assert not result.finished and result.uuid == "rec-7"
    sent = orjson.loads(state.requests[-1][3])
    assert sent["async"] is True and "async" not in sent["promptObject"]
    await client.run_feature(inpaint_job(), "a.png", "m.png")
    assert "async" not in orjson.loads(state.requests[-1][3])


async def test_poll_result_gets_the_record_with_the_key(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    state.answers["/api/results/rec-7"] = (
        200,
        ai_record("SUCCESS", ["r/0.png"]),
        "application/json",
    )
    result = await stub_client(base, session).poll_result("rec-7")
    assert result.finished and result.result_paths == ("r/0.png",)
    method, path, headers, _ = state.requests[-1]
    assert (method, path, headers["API-KEY"]) == ("GET", "/api/results/rec-7", KEY)


@pytest.mark.parametrize(
    ("job", "fields"),
    [
        (
            inpaint_job(),
            {"imageUrl", "maskUrl", "prompt", "size", "n", "quality", "output_format",
             "output_compression"},
        ),
        (
            Job("b", Feature.BACKGROUND, InputRef("file", "/x"), "marble"),
            {"imageUrl", "prompt", "size", "quality", "background"},
        ),
    ],
)  # fmt: skip
def test_every_parameter_of_the_seed_tables_is_sent_defaults_included(
    job: Job, fields: set[str]
) -> None:
    client = OneMinClient(None, Endpoints(), KEY)  # type: ignore[arg-type]
    body = client.feature_body(job, "a.png", "m.png" if job.mask else None)
    assert set(body["promptObject"]) == fields  # the live API required quality, "optional"
    assert body["promptObject"]["quality"] == "medium"


async def test_every_request_names_the_product_in_its_user_agent(
    stub: tuple[Stub, str], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state, base = stub
    state.answers["/api/assets"] = (
        200,
        orjson.dumps({"fileContent": {"path": "p/a.png"}}),
        "application/json",
    )
    state.answers["/p/a.png"] = (200, image_bytes(), "image/png")
    client = stub_client(base, session)
    await client.upload_asset(image_bytes(), "a.png", "image/png")
    await client.serves_unsigned("p/a.png")
    await client.download(f"{base}/p/a.png", tmp_path / "a.png")
    agents = {headers["User-Agent"] for _, _, headers, _ in state.requests}
    assert agents == {USER_AGENT} and USER_AGENT.startswith("onemin-pipeline/")


LIVE_BUSY = orjson.dumps(
    {
        "errorCode": "EXTERNAL_API_RESPONSE_WITH_ERROR",
        "message": "The service is busy, please try again shortly",
        "details": orjson.dumps(
            {"error": {"message": "Invalid mask image format", "code": "invalid_value"}}
        ).decode(),
        "context": {"requestId": "r-1"},
    }
)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected", "seen"),
    [
        (524, b"<html><h1>A timeout occurred</h1></html>", "text/html", AnswerLost, "server_error"),
        (520, b'{"message": "unknown"}', "application/json", AnswerLost, "server_error"),
        (502, b"<html>Bad gateway</html>", "text/html", AnswerLost, "server_error"),
        (500, b'{"message": "Internal"}', "application/json", ServerError, "server_error"),
        (503, b'{"message": "try later"}', "application/json", ServerError, "server_error"),
        (400, LIVE_BUSY, "application/json", BadRequest, "bad_request"),
    ],
)
async def test_lost_answers_of_a_feature_call_are_unknown_outcomes(
    stub: tuple[Stub, str],
    session: aiohttp.ClientSession,
    status: int,
    body: bytes,
    content_type: str,
    expected: type[ApiError],
    seen: str,
) -> None:
    """A 52x or an HTML 5xx may come while the origin makes and charges the edit; a JSON 5xx
    came from the origin (nothing made); a live 400 is job-fatal whatever its words."""
    state, base = stub
    state.answers["/api/features"] = (status, body, content_type)
    with pytest.raises(expected) as caught:
        await stub_client(base, session).run_feature(inpaint_job(), "a.png", "m.png")
    assert type(caught.value) is expected
    assert (caught.value.kind, caught.value.http_status) == (seen, status)


async def test_an_upload_or_poll_meeting_a_52x_is_an_ordinary_transient_error(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    state.answers["/api/assets"] = (524, b"<html>timeout</html>", "text/html")
    state.answers["/api/results/rec-7"] = (522, b"<html>timed out</html>", "text/html")
    client = stub_client(base, session)
    with pytest.raises(ServerError):
        await client.upload_asset(image_bytes(), "a.png", "image/png")
    with pytest.raises(ServerError):
        await client.poll_result("rec-7")


async def test_a_connection_never_made_sent_nothing(session: aiohttp.ClientSession) -> None:
    """Refused at connect: the body never left, so it is no unknown outcome."""
    client = OneMinClient(session, Endpoints("http://127.0.0.1:9", "http://127.0.0.1:9"), KEY)
    with pytest.raises(ConnectionLost) as caught:
        await client.run_feature(inpaint_job(), "a.png", "m.png")
    assert not isinstance(caught.value, AnswerLost)


async def test_a_live_400_shows_its_error_code_and_the_cause_from_details(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    state.answers["/api/features"] = (400, LIVE_BUSY, "application/json")
    with pytest.raises(BadRequest) as caught:
        await stub_client(base, session).run_feature(inpaint_job(), "a.png", "m.png")
    assert "EXTERNAL_API_RESPONSE_WITH_ERROR: Invalid mask image format" in str(caught.value)
    assert "busy" not in str(caught.value)


async def test_poll_of_unknown_record_is_job_fatal(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    state.answers["/api/results/nope"] = (200, b'{"aiRecord": null}', "application/json")
    with pytest.raises(RecordUnknown):
        await stub_client(base, session).poll_result("nope")


async def test_poll_of_failed_record_is_record_failed(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    state.answers["/api/results/rec-7"] = (200, ai_record("FAILURE"), "application/json")
    with pytest.raises(RecordFailed):
        await stub_client(base, session).poll_result("rec-7")


CHALLENGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title><script>x()</script>"
CHALLENGE += b"</head><body><p>Checking your browser before accessing</p></body></html>"


@pytest.mark.parametrize(("body", "content_type"), [(CHALLENGE, "text/html"), (b"", "text/plain")])
async def test_html_or_empty_403_is_transient(
    stub: tuple[Stub, str], session: aiohttp.ClientSession, body: bytes, content_type: str
) -> None:
    state, base = stub
    state.answers["/api/features"] = (403, body, content_type)
    with pytest.raises(ServerError) as caught:
        await stub_client(base, session).run_feature(inpaint_job(), "a.png", "m.png")
    assert caught.value.http_status == 403
    assert "<" not in str(caught.value) and "x()" not in str(caught.value)


async def test_json_403_about_the_key_is_rejected(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, base = stub
    body = orjson.dumps({"error": {"message": f"Invalid API key {KEY}"}})
    state.answers["/api/assets"] = (403, body, "application/json")
    with pytest.raises(KeyRejected) as caught:
        await stub_client(base, session).upload_asset(image_bytes(), "a.png", "image/png")
    assert KEY not in str(caught.value) and "[API key]" in str(caught.value)


async def test_input_download_failure_names_the_url_without_query(
    stub: tuple[Stub, str], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state, base = stub
    state.answers["/photos/a.png"] = (500, b"<h1>Oops</h1>", "text/html")
    with pytest.raises(ServerError) as caught:
        await stub_client(base, session).download(
            f"{base}/photos/a.png?token=s3cret", tmp_path / "x", "input"
        )
    message = str(caught.value)
    assert f"{base}/photos/a.png" in message and "s3cret" not in message and "Oops" in message
