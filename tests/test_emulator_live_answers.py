"""The emulator's live answers (docs/api.md): the private result bucket and its signed URLs, live
error bodies (the busy 400 above all), status words, required parameters, and the profiles and
options that turn all of it on."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pipeline.emulator import EmulatorConfig, EmulatorServer, add_arguments, config_from_args
from pipeline.emulator.faults import FaultPlan
from pipeline.emulator.profiles import DEFAULT_PROFILE
from pipeline.emulator.words import LIVE_FAILED, LIVE_FINISHED, LIVE_UNFINISHED
from tests.test_emulator import (
    background_payload,
    fetch,
    inpaint_payload,
    post_feature,
    product_photo,
    upload_path,
)
from tests.test_emulator_live import (
    Start,
    asynchronous,
    full_background,
    full_inpaint,
    inputs,
    launch,
    manual,
)
from tests.test_emulator_records import poll


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Factory: `await start(profile, **overrides)` on a ManualTime; stopped at teardown."""
    servers: list[EmulatorServer] = []

    async def make(profile: str = "generous", **overrides: Any) -> EmulatorServer:
        servers.append(await launch(profile, **overrides))
        return servers[-1]

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# --------------------------------------------------------------------------- the private bucket


async def test_unsigned_reads_are_refused_by_the_private_bucket(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live")
    path = await upload_path(session, server, product_photo())
    for url in (f"{server.asset_base}/{path}", f"{server.asset_base}/development/images/none.png"):
        status, data, content_type = await fetch(session, url)
        assert status == 403 and "xml" in content_type
        assert b"<Code>AccessDenied</Code><Message>Access Denied</Message>" in data
    server.config.public_assets = True  # today's generous host serves the very same object
    assert (await fetch(session, f"{server.asset_base}/{path}"))[0] == 200


async def test_temporary_url_reads_the_first_result_only(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live")
    image, mask = await inputs(session, server)
    _, body, _ = await post_feature(session, server, full_inpaint(image, mask, n=3))
    record = body["aiRecord"]
    first, second, third = record["aiRecordDetail"]["resultObject"]
    url = record["temporaryUrl"]
    assert first in url and (await fetch(session, url))[0] == 200
    for other in (second, third):  # the signature covers its own object only
        status, data, _ = await fetch(session, url.replace(first, other))
        assert status == 403 and b"<Code>AccessDenied</Code>" in data
        assert (await fetch(session, f"{server.asset_base}/{other}"))[0] == 403


async def test_every_poll_signs_a_fresh_temporary_url(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live")
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, full_background(image))
    urls = [body["aiRecord"]["temporaryUrl"]]
    for _ in range(2):
        _, polled, _ = await poll(session, server, body["aiRecord"]["uuid"])
        urls.append(polled["aiRecord"]["temporaryUrl"])
    assert len(set(urls)) == 3  # signed anew each time, even within one second
    assert {url.split("?")[0] for url in urls} == {urls[0].split("?")[0]}
    for url in urls:
        assert (await fetch(session, url))[0] == 200


async def test_expired_signature_fault_and_a_fresh_url_from_a_poll(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live", rate_expire=1.0)
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, full_background(image))
    status, data, _ = await fetch(session, body["aiRecord"]["temporaryUrl"])
    assert status == 403
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in data
    assert server.state.log[-1]["fault"] == "expire"
    server.config.rate_expire = 0.0
    _, polled, _ = await poll(session, server, body["aiRecord"]["uuid"])
    assert (await fetch(session, polled["aiRecord"]["temporaryUrl"]))[0] == 200


# --------------------------------------------------------------------------- live error bodies


def innermost_message(body: dict[str, Any]) -> str:
    return str(json.loads(body["details"])["error"]["message"])


@pytest.mark.parametrize("profile", ["generous", "live"])
async def test_busy_400_carries_the_cause_in_details_and_is_free(
    start: Start, session: aiohttp.ClientSession, profile: str
) -> None:
    server = await start(profile, rate_busy_400=1.0, seed=3)
    image = await upload_path(session, server, product_photo())
    causes, messages = set(), set()
    for _ in range(8):
        status, body, response = await post_feature(session, server, full_background(image))
        assert status == 400 and response.content_type == "application/json"
        assert body["errorCode"] == "EXTERNAL_API_RESPONSE_WITH_ERROR"
        assert "busy" in body["message"].lower() and "try again shortly" in body["message"]
        assert isinstance(body["details"], str) and isinstance(body["context"], dict)
        causes.add(innermost_message(body))
        messages.add(body["message"])
    assert len(causes) > 1 and len(messages) > 1
    assert not any("busy" in cause.lower() for cause in causes)
    assert server.state.charges == [] and server.state.used_credit == 0
    assert server.state.faults["busy_400"] == 8


async def test_live_error_bodies_for_the_apis_own_refusals(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live", credit_limit=1_000, seed=5)
    image = await upload_path(session, server, product_photo())
    answers = [
        await post_feature(session, server, full_background(image)),  # 4000 > 1000
        await post_feature(session, server, full_background("development/images/x.png")),
        await post_feature(session, server, full_background(image), {"API-KEY": "wrong"}),
    ]
    codes = [(status, body["errorCode"]) for status, body, _ in answers]
    assert codes == [(402, "INSUFFICIENT_CREDITS"), (404, "NOT_FOUND"), (401, "UNAUTHORIZED")]
    assert answers[2][1]["message"] == "Invalid API key"
    bodies = [(await post_feature(session, server, full_background(image)))[1] for _ in range(12)]
    for body in bodies:
        assert set(body) - {"details"} == {"errorCode", "message", "context"}
        if "details" in body:
            assert json.loads(body["details"])["message"] == body["message"]
    # Some live answers come without details (seeded).
    assert {"details" in body for body in bodies} == {True, False}


async def test_live_json_5xx(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start("live", rate_5xx=1.0, seed=4)
    bodies = [(await post_feature(session, server, inpaint_payload("a", "b"))) for _ in range(12)]
    json_bodies = [body for status, body, _ in bodies if status == 500]
    assert json_bodies and all(b["errorCode"] == "INTERNAL_SERVER_ERROR" for b in json_bodies)


# --------------------------------------------------------------------------- status words


async def test_live_status_words_are_seeded_per_record_and_kept(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live", edit_seconds=5, edit_jitter=0.5, seed=7)
    time = manual(server)
    image = await upload_path(session, server, product_photo())
    records = []
    for index in range(16):
        payload = asynchronous(full_background(image, quality="low", prompt=f"p{index}"))
        records.append((await post_feature(session, server, payload))[1]["aiRecord"])
    unfinished = [record["status"] for record in records]
    assert set(unfinished) <= set(LIVE_UNFINISHED) and len(set(unfinished)) >= 3
    again = [(await poll(session, server, r["uuid"]))[1]["aiRecord"]["status"] for r in records]
    assert again == unfinished
    time.advance(7.5)  # the slowest edit: 5 s + 50 %
    finished = [(await poll(session, server, r["uuid"]))[1]["aiRecord"] for r in records]
    assert {record["status"] for record in finished} == set(LIVE_FINISHED)
    assert all(record["temporaryUrl"] for record in finished)


async def test_live_failure_words(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start("live", rate_failed=1.0, seed=2)
    image = await upload_path(session, server, product_photo())
    words = {
        (await post_feature(session, server, full_background(image)))[1]["aiRecord"]["status"]
        for _ in range(24)
    }
    assert words == set(LIVE_FAILED) and server.state.charges == []


async def test_unknown_status_word_for_unfinished_records(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(edit_seconds=5, unknown_status_word="WAITING_FOR_GPU")
    time = manual(server)
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, asynchronous(background_payload(image)))
    assert body["aiRecord"]["status"] == "WAITING_FOR_GPU"
    time.advance(5)
    assert (await poll(session, server, body["aiRecord"]["uuid"]))[1]["aiRecord"]["status"] == (
        "SUCCESS"
    )


# --------------------------------------------------------------------------- required parameters


@pytest.mark.parametrize(
    ("kind", "missing"),
    [("inpaint", "quality"), ("inpaint", "n"), ("inpaint", "output_format"),
     ("inpaint", "output_compression"), ("background", "quality"), ("background", "background")],
)  # fmt: skip
async def test_every_seed_parameter_is_required(
    start: Start, session: aiohttp.ClientSession, kind: str, missing: str
) -> None:
    server = await start("live")
    image, mask = await inputs(session, server)
    payload = full_inpaint(image, mask) if kind == "inpaint" else full_background(image)
    assert (await post_feature(session, server, payload))[0] == 200
    del payload["promptObject"][missing]
    status, body, _ = await post_feature(session, server, payload)
    assert status == 400 and body["message"] == f"{missing}: is required"
    assert body["errorCode"] == "VALIDATION_ERROR"
    assert server.state.edits_charged == 1


async def test_generous_defaults_fill_in_missing_parameters_unless_all_are_required(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start()
    image = await upload_path(session, server, product_photo())
    _, body, _ = await post_feature(session, server, background_payload(image))
    assert body["aiRecord"]["aiRecordDetail"]["promptObject"]["quality"] == "medium"
    # Required on their own, they are refused in the live API's words (only it refuses them).
    server.config.require_all_params = True
    status, body, _ = await post_feature(session, server, background_payload(image))
    assert status == 400 and body["errorCode"] == "VALIDATION_ERROR"
    assert body["message"] == "quality: is required"


# --------------------------------------------------------------------------- profiles and options


def test_live_profile_turns_everything_on() -> None:
    live = EmulatorConfig.live()
    assert (live.public_assets, live.gateway_timeout, live.honour_async) == (False, 100.0, True)
    assert (live.error_bodies, live.credit_lag, live.upload_concurrency) == ("live", True, 5)
    assert (live.status_words, live.require_all_params) == ("live", True)
    assert live.edit_seconds <= 1.0 and live.window is None  # demos stay quick
    realistic = EmulatorConfig.realistic()
    assert realistic.window == (180, 60.0) and realistic.public_assets is False
    assert round(realistic.edit_seconds * (1 - realistic.edit_jitter), 6) == 10
    assert round(realistic.edit_seconds * (1 + realistic.edit_jitter), 6) == 60
    generous = EmulatorConfig.generous()
    assert (generous.public_assets, generous.gateway_timeout, generous.error_bodies) == (
        True,
        None,
        "varied",
    )
    assert EmulatorConfig() == EmulatorConfig.profile(DEFAULT_PROFILE)
    assert EmulatorConfig.live(public_assets=True).public_assets is True
    assert EmulatorConfig.realistic(window_limit=22, window_seconds=10).window == (22, 10)
    with pytest.raises(ValueError, match="profile"):
        EmulatorConfig.profile("harsh")


def parse(*argv: str) -> EmulatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_profile_options_and_overrides() -> None:
    assert parse() == EmulatorConfig()
    assert parse("--profile", "live") == EmulatorConfig.live()
    assert parse("--realistic") == EmulatorConfig.realistic()
    config = parse(
        "--realistic", "--public-assets", "--no-gateway", "--upload-concurrency", "0",
        "--error-bodies", "varied", "--status-words", "seed", "--no-credit-lag",
        "--no-require-all-params", "--no-honour-async", "--edit-seconds", "2",
        "--edit-jitter", "0.1", "--rpm-limit", "90",
    )  # fmt: skip
    assert (config.public_assets, config.gateway_timeout, config.upload_concurrency) == (
        True,
        None,
        None,
    )
    assert (config.error_bodies, config.status_words, config.credit_lag) == (
        "varied",
        "seed",
        False,
    )
    assert (config.require_all_params, config.honour_async) == (False, False)
    assert (config.edit_seconds, config.edit_jitter, config.rpm_limit) == (2, 0.1, 90)
    config = parse(
        "--gateway-timeout", "5", "--rate-lost-after-charge", "0.2", "--rate-busy-400", "0.1",
        "--unknown-status-word", "WAITING_FOR_GPU", "--team-balance", "500",
        "--charge-log", "c.jsonl", "--no-public-assets",
    )  # fmt: skip
    assert (config.gateway_timeout, config.rate_lost_after_charge, config.rate_busy_400) == (
        5,
        0.2,
        0.1,
    )
    assert config.unknown_status_word == "WAITING_FOR_GPU" and config.team_balance == 500
    assert str(config.charge_log) == "c.jsonl" and config.public_assets is False
    assert config.error_bodies == EmulatorConfig().error_bodies  # the rest: the default profile


def test_old_processing_names_are_aliases_of_the_edit_duration() -> None:
    config = EmulatorConfig(processing_seconds=20, processing_jitter=5)
    assert (config.edit_seconds, config.edit_jitter) == (20, 0.25)
    assert (config.processing_seconds, config.processing_jitter) == (20, 5)
    config.processing_seconds = 0.5
    assert config.edit_seconds == 0.5
    assert parse("--processing-seconds", "8", "--processing-jitter", "2").edit_jitter == 0.25
    assert dataclasses.replace(config, seed=3).edit_seconds == 0.5
    with pytest.raises(ValueError, match="processing_jitter"):
        EmulatorConfig(processing_seconds=2, processing_jitter=3)
    for bad in ({"edit_jitter": 1.5}, {"gateway_timeout": 0}, {"upload_concurrency": 0},
                {"status_words": "x"}, {"error_bodies": "y"}, {"edit_seconds": -1},
                {"team_balance": -1}, {"unknown_status_word": " "}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            EmulatorConfig(**bad)


def test_new_faults_leave_old_sequences_alone() -> None:
    old = EmulatorConfig(rate_429=0.2, rate_5xx=0.2, rate_failed=0.3, rate_drop=0.1, seed=11)
    new = dataclasses.replace(
        old,
        rate_lost_after_charge=0.5,
        rate_busy_400=0.5,
        status_words="live",
        error_bodies="live",
    )

    def fates(config: EmulatorConfig) -> list[object]:  # features' fault tuples, then downloads'
        plan = FaultPlan(config)
        features = [plan.feature() for _ in range(60)]
        downloads = [plan.download(True) for _ in range(20)]
        return [*[(f.drop, f.storm_429, f.server_error, f.failed) for f in features], *downloads]

    assert fates(old) == fates(new)
    plan = FaultPlan(new)
    drawn = [plan.feature() for _ in range(60)]
    assert any(f.busy for f in drawn) and any(f.lost_after_charge for f in drawn)
