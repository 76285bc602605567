"""The emulator against docs/api.md#unfinished-records: unfinished records and the results endpoint,
one request window over every API-host request, HTML 403s, failure words, error bodies and drift
outside the mask.

Time is the server's injectable clock: records finish and windows roll when the test moves it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageOps

from pipeline.emulator import EmulatorConfig, EmulatorServer, add_arguments, config_from_args
from pipeline.emulator.faults import FaultPlan
from pipeline.emulator.imaging import EditRequest, SourceImage, drift_offsets
from tests.test_emulator import (
    HEADERS,
    KEY,
    FakeClock,
    background_payload,
    fetch,
    half_mask,
    inpaint_payload,
    largest_difference,
    post_feature,
    product_photo,
    upload,
    upload_path,
)

Start = Callable[..., Awaitable[EmulatorServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Factory: an emulator with config overrides and a fake clock at `server.clock`."""
    servers: list[EmulatorServer] = []

    async def make(**overrides: Any) -> EmulatorServer:
        # The seed documents' API (the live regime's own tests are in test_emulator_live*.py).
        server = EmulatorServer(EmulatorConfig.generous(api_key=KEY, **overrides))
        server.clock = FakeClock()
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def clock(server: EmulatorServer) -> FakeClock:
    assert isinstance(server.clock, FakeClock)
    return server.clock


async def poll(
    session: aiohttp.ClientSession,
    server: EmulatorServer,
    record_id: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with session.get(
        f"{server.api_base}/api/results/{record_id}",
        headers=HEADERS if headers is None else headers,
    ) as response:
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else text
    return response.status, body, response


async def inputs(session: aiohttp.ClientSession, server: EmulatorServer) -> tuple[str, str]:
    return (
        await upload_path(session, server, product_photo()),
        await upload_path(session, server, half_mask()),
    )


def asynchronous(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "async": True}


# --------------------------------------------------------------------------- unfinished records


async def test_async_body_is_always_processing_and_charged_once_at_submit(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(processing_seconds=30)
    image, mask = await inputs(session, server)
    status, body, _ = await post_feature(
        session, server, asynchronous(inpaint_payload(image, mask))
    )
    assert status == 200
    record = body["aiRecord"]
    assert record["status"] == "PROCESSING" and record["uuid"]
    assert record["aiRecordDetail"]["resultObject"] == [] and record["temporaryUrl"] is None
    assert record["teamUser"]["usedCredit"] == 4000 == server.state.used_credit
    entry = server.state.log[-1]
    assert (entry["record"], entry["fault"], entry["credits"]) == ("PROCESSING", "processing", 4000)
    assert entry["uuid"] == record["uuid"]


async def test_processing_record_succeeds_once_the_clock_has_moved(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(processing_seconds=30, rate_processing=1.0)
    image, mask = await inputs(session, server)
    _, body, _ = await post_feature(session, server, inpaint_payload(image, mask, n=2))
    record_id = body["aiRecord"]["uuid"]
    clock(server).now += 29.9
    status, body, _ = await poll(session, server, record_id)
    assert status == 200 and body["aiRecord"]["status"] == "PROCESSING"
    assert body["aiRecord"]["aiRecordDetail"]["resultObject"] == []
    clock(server).now += 0.2
    status, body, _ = await poll(session, server, record_id)
    record = body["aiRecord"]
    assert status == 200 and record["status"] == "SUCCESS" and record["uuid"] == record_id
    paths = record["aiRecordDetail"]["resultObject"]
    assert len(paths) == 2 and record["aiRecordDetail"]["promptObject"]["n"] == 2
    # The results exist as soon as the record says SUCCESS, on both hosts.
    for url in [record["temporaryUrl"], *(f"{server.asset_base}/{p}" for p in paths)]:
        got, data, content_type = await fetch(session, url)
        assert got == 200 and content_type == "image/png"
        assert Image.open(io.BytesIO(data)).size == (1024, 1024)
    # Later polls give the same record; the edit stays bought exactly once.
    again = (await poll(session, server, record_id))[1]["aiRecord"]
    assert again["aiRecordDetail"]["resultObject"] == paths
    assert again["teamUser"]["usedCredit"] == 8000 == server.state.used_credit
    assert sum(entry["credits"] for entry in server.state.log) == 8000
    assert server.state.successes == 1 and server.state.polls == 3
    polls = [entry for entry in server.state.log if entry["route"] == "results"]
    assert [entry["record"] for entry in polls] == ["PROCESSING", "SUCCESS", "SUCCESS"]
    assert {entry["uuid"] for entry in polls} == {record_id}


async def test_concurrent_polls_finish_a_record_once(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(processing_seconds=5)
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, asynchronous(background_payload(image)))
    clock(server).now += 5
    answers = await asyncio.gather(
        *(poll(session, server, body["aiRecord"]["uuid"]) for _ in range(6))
    )
    paths = {tuple(b["aiRecord"]["aiRecordDetail"]["resultObject"]) for _, b, _ in answers}
    assert {b["aiRecord"]["status"] for _, b, _ in answers} == {"SUCCESS"} and len(paths) == 1
    assert server.state.successes == 1 and server.state.used_credit == 4000


async def test_processing_record_can_end_failed_for_free(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(rate_processing=1.0, rate_processing_failed=1.0, failure_status="FAILURE")
    image, mask = await inputs(session, server)
    _, body, _ = await post_feature(session, server, inpaint_payload(image, mask))
    assert body["aiRecord"]["status"] == "PROCESSING" and server.state.used_credit == 0
    clock(server).now += server.config.processing_seconds
    _, body, _ = await poll(session, server, body["aiRecord"]["uuid"])
    record = body["aiRecord"]
    assert record["status"] == "FAILURE" and record["aiRecordDetail"]["resultObject"] == []
    assert record["aiRecordDetail"]["responseObject"]["error"]["message"]
    assert record["temporaryUrl"] is None and server.state.used_credit == 0
    assert sum(entry["credits"] for entry in server.state.log) == 0


async def test_rate_processing_is_a_seeded_share(
    start: Start, session: aiohttp.ClientSession
) -> None:
    sequences = []
    for _ in range(2):
        server = await start(rate_processing=0.5, seed=3)
        image = await upload_path(session, server, product_photo())
        statuses = []
        for index in range(6):  # seed 3 gives both fates within six calls
            payload = background_payload(image, quality="low", prompt=f"p{index}")
            statuses.append((await post_feature(session, server, payload))[1]["aiRecord"]["status"])
        sequences.append(statuses)
    assert sequences[0] == sequences[1]
    assert set(sequences[0]) == {"PROCESSING", "SUCCESS"}


def test_processing_jitter_spreads_finish_times() -> None:
    plan = FaultPlan(EmulatorConfig(processing_seconds=10, processing_jitter=2, seed=5))
    spans = [plan.feature().processing_seconds for _ in range(40)]
    assert all(8 <= span <= 12 for span in spans) and len(set(spans)) > 30


def test_new_faults_leave_the_old_fault_sequence_alone() -> None:
    # Old seeds keep their old fates: the new options draw from streams of their own.
    old = EmulatorConfig(rate_429=0.2, rate_5xx=0.2, rate_failed=0.3, seed=11)
    new = dataclasses.replace(old, rate_processing=0.5, rate_processing_failed=0.5)

    def fates(config: EmulatorConfig) -> list[tuple[Any, ...]]:
        plan = FaultPlan(config)
        return [
            (f.storm_429, f.server_error, f.failed) for f in (plan.feature() for _ in range(60))
        ]

    assert fates(old) == fates(new)


async def test_async_must_be_a_boolean(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start()
    payload = {**inpaint_payload("a", "b"), "async": "yes"}
    status, body, _ = await post_feature(session, server, payload)
    assert (status, body) == (400, {"message": "async: must be true or false, got 'yes'"})
    status, body, _ = await post_feature(session, server, {**inpaint_payload("a", "b"), "x": 1})
    assert (status, body) == (400, {"message": "x: unknown field"})


# --------------------------------------------------------------------------- results endpoint


async def test_results_endpoint_unknown_uuid_and_keys(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start()
    status, body, _ = await poll(session, server, "00000000-0000-0000-0000-000000000000")
    assert (status, body) == (200, {"aiRecord": None})
    status, body, _ = await poll(session, server, "anything", headers={"API-KEY": "wrong"})
    assert (status, body) == (401, {"message": "Invalid API key"})
    assert server.state.log[-1]["route"] == "results"


async def test_results_endpoint_knows_direct_answers_too(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start()
    image, mask = await inputs(session, server)
    _, direct, _ = await post_feature(session, server, inpaint_payload(image, mask))
    _, polled, _ = await poll(session, server, direct["aiRecord"]["uuid"])
    for key in ("uuid", "status", "type", "aiRecordDetail", "createdAt"):
        assert polled["aiRecord"][key] == direct["aiRecord"][key]
    assert (
        polled["aiRecord"]["temporaryUrl"].split("?")[0]
        == (direct["aiRecord"]["temporaryUrl"].split("?")[0])
    )
    assert server.state.used_credit == 4000


async def test_bad_key_can_answer_403_json(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start(bad_key_status=403)
    wrong = {"API-KEY": "wrong"}
    status, body, response = await post_feature(session, server, inpaint_payload("a", "b"), wrong)
    assert (status, body) == (403, {"message": "Invalid API key"})
    assert response.content_type == "application/json"
    assert (await upload(session, server, product_photo(), headers=wrong)).status == 403
    assert (await poll(session, server, "x", headers=wrong))[:2] == (
        403,
        {"message": "Invalid API key"},
    )


# --------------------------------------------------------------------------- request window


async def test_window_counts_uploads_features_and_polls_not_downloads(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(window_limit=3, window_seconds=10)
    image = await upload_path(session, server, product_photo())  # 1
    _, body, _ = await post_feature(session, server, background_payload(image))  # 2
    record = body["aiRecord"]
    assert (await poll(session, server, record["uuid"]))[0] == 200  # 3
    for _ in range(3):  # downloads are not API requests: never counted, never refused
        assert (await fetch(session, record["temporaryUrl"]))[0] == 200
    clock(server).now += 4
    refused = [
        (await upload(session, server, product_photo())).status,
        (await post_feature(session, server, background_payload(image)))[0],
        (await poll(session, server, record["uuid"]))[0],
    ]
    assert refused == [429, 429, 429]
    status, body, response = await poll(session, server, record["uuid"])
    assert (status, body) == (429, {"message": "Too many requests"})
    assert response.headers["Retry-After"] == "6"  # the first slot frees 10 s after it was used
    clock(server).now += 6
    assert (await upload(session, server, product_photo())).status == 200
    routes = [(e["route"], e["fault"]) for e in server.state.log if e["fault"] == "rate_limit"]
    assert (
        routes
        == [("assets", "rate_limit"), ("features", "rate_limit")] + [("results", "rate_limit")] * 2
    )


async def test_rpm_limit_is_the_same_window_per_60_seconds(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(rpm_limit=2)
    await upload_path(session, server, product_photo())
    assert (await poll(session, server, "x"))[0] == 200
    assert (await poll(session, server, "x"))[0] == 429
    clock(server).now += 59.9
    assert (await poll(session, server, "x"))[0] == 429
    clock(server).now += 0.1
    assert (await poll(session, server, "x"))[0] == 200


def test_window_options_are_checked() -> None:
    assert EmulatorConfig(rpm_limit=180).window == (180, 60.0)
    assert EmulatorConfig(window_limit=22, window_seconds=10).window == (22, 10)
    assert EmulatorConfig().window is None
    with pytest.raises(ValueError, match=r"rpm_limit .* or window_limit"):
        EmulatorConfig(rpm_limit=10, window_limit=5)
    with pytest.raises(ValueError, match="window_limit with window_seconds"):
        EmulatorConfig(rpm_limit=10, window_seconds=10)
    with pytest.raises(ValueError, match="window_seconds"):
        EmulatorConfig(window_limit=1, window_seconds=0)
    for bad in ({"bad_key_status": 404}, {"failure_status": "ERROR"}, {"error_bodies": "x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EmulatorConfig(**bad)
    with pytest.raises(ValueError, match="drift"):
        EmulatorConfig(drift=-1)


# --------------------------------------------------------------------------- 403 pages, bodies


async def test_html_403_on_every_api_route(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start(rate_403_html=1.0, window_limit=1, window_seconds=60)
    wrong = {"API-KEY": "wrong"}  # the CDN answers before the API looks at the key
    answers = [
        await upload(session, server, product_photo(), headers=wrong),
        (await post_feature(session, server, inpaint_payload("a", "b"), wrong))[2],
        (await poll(session, server, "x", headers=wrong))[2],
        (await poll(session, server, "y"))[2],
    ]
    assert [response.status for response in answers] == [403] * 4
    assert {response.content_type for response in answers} == {"text/html"}
    _, body, _ = await poll(session, server, "z")
    assert body.startswith("<!DOCTYPE html>") and "key" not in body.lower()
    assert [e["fault"] for e in server.state.log] == ["html_403"] * 5
    # Stopped in front of the API, so the window never counted them.
    server.config.rate_403_html = 0.0
    assert (await poll(session, server, "x"))[0] == 200


async def test_html_403_share_is_seeded(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start(rate_403_html=0.3, seed=2)
    statuses = [(await poll(session, server, "x"))[0] for _ in range(30)]
    assert set(statuses) == {200, 403}


@pytest.mark.parametrize(
    ("word", "expected"),
    [("FAILED", {"FAILED"}), ("FAILURE", {"FAILURE"}), ("mixed", {"FAILED", "FAILURE"})],
)
async def test_failure_status_word(
    start: Start, session: aiohttp.ClientSession, word: str, expected: set[str]
) -> None:
    server = await start(rate_failed=1.0, failure_status=word, seed=1)
    image = await upload_path(session, server, product_photo())
    seen = set()
    for _ in range(12):
        _, body, _ = await post_feature(session, server, background_payload(image))
        seen.add(body["aiRecord"]["status"])
        polled = (await poll(session, server, body["aiRecord"]["uuid"]))[1]["aiRecord"]
        assert polled["status"] == body["aiRecord"]["status"]
    assert seen == expected and server.state.used_credit == 0


SHAPES = {
    json.dumps({"message": "Internal server error"}): "message",
    json.dumps({"error": {"message": "Internal server error"}}): "error.message",
    json.dumps({"error": "Internal server error"}): "error",
}


@pytest.mark.parametrize("mode", ["varied", "message"])
async def test_error_bodies(start: Start, session: aiohttp.ClientSession, mode: str) -> None:
    server = await start(rate_5xx=1.0, error_bodies=mode, seed=4)
    shapes = set()
    for _ in range(40):
        status, body, _ = await post_feature(session, server, inpaint_payload("a", "b"))
        if status == 500:
            shapes.add(SHAPES[json.dumps(body)])
        else:
            assert status in (502, 503) and body is None  # HTML, as gateways answer
    assert shapes == ({"message", "error.message", "error"} if mode == "varied" else {"message"})


# --------------------------------------------------------------------------- drift


async def test_drift_bounds_the_change_where_the_mask_keeps(
    start: Start, session: aiohttp.ClientSession
) -> None:
    photo = Image.open(io.BytesIO(product_photo())).convert("RGB")
    source = ImageOps.fit(photo, (1024, 1024), method=Image.Resampling.BILINEAR)
    kept_box = (0, 0, 480, 1024)  # left of the half mask's edge (512), clear of its blend
    for drift in (0, 6):
        server = await start(drift=drift)
        image, mask = await inputs(session, server)
        _, body, _ = await post_feature(session, server, inpaint_payload(image, mask, n=3))
        for path in body["aiRecord"]["aiRecordDetail"]["resultObject"]:
            data = (await fetch(session, f"{server.asset_base}/{path}"))[1]
            result = Image.open(io.BytesIO(data)).convert("RGB")
            largest = largest_difference(result.crop(kept_box), source.crop(kept_box))
            # Some drift is always there (the red box is far from 0 and 255), never more.
            assert largest == 0 if drift == 0 else 1 <= largest <= drift


def test_drift_offsets_are_seeded_nonzero_and_bounded() -> None:
    base = EditRequest(
        kind="IMAGE_INPAINTER",
        image=SourceImage("d" * 64, b""),
        mask=None,
        prompt="p",
        size=(8, 8),
        n=1,
        quality="low",
        output_format="png",
        output_compression=85,
        background="auto",
        drift=4,
    )
    offsets = [drift_offsets(dataclasses.replace(base, prompt=f"p{i}"), i) for i in range(50)]
    assert all(1 <= abs(o) <= 4 for triple in offsets for o in triple)
    assert {o for triple in offsets for o in triple} == {-4, -3, -2, -1, 1, 2, 3, 4}
    assert offsets[7] == drift_offsets(dataclasses.replace(base, prompt="p7"), 7)
    assert drift_offsets(dataclasses.replace(base, drift=0), 0) == (0, 0, 0)


# --------------------------------------------------------------------------- command line


def test_new_flags_map_onto_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        [
            "--window-limit", "22", "--window-seconds", "10", "--bad-key-status", "403",
            "--rate-processing", "0.6", "--processing-seconds", "20", "--processing-jitter",
            "3", "--rate-processing-failed", "0.1", "--rate-403-html", "0.08",
            "--failure-status", "FAILURE", "--error-bodies", "message", "--drift", "6",
        ]
    )  # fmt: skip
    config = config_from_args(ns)
    assert config.window == (22, 10) and config.bad_key_status == 403
    assert (config.rate_processing, config.processing_seconds) == (0.6, 20)
    assert (config.processing_jitter, config.rate_processing_failed) == (3, 0.1)
    assert config.rate_403_html == 0.08 and config.failure_status == "FAILURE"
    assert config.error_bodies == "message" and config.drift == 6
    defaults = config_from_args(parser.parse_args([]))
    assert defaults == EmulatorConfig()
    with pytest.raises(ValueError, match="window_limit with window_seconds"):
        config_from_args(parser.parse_args(["--rpm-limit", "132", "--window-seconds", "10"]))
    for bad in (
        ["--bad-key-status", "404"],
        ["--window-limit", "0"],
        ["--drift", "x"],
        ["--rpm-limit", "10", "--window-limit", "5"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
