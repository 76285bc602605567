"""The emulator in the live API's regime (docs/api.md): edits that take time, the CDN's 524 while
the origin still charges, async records, answers lost after the charge, usedCredit one call behind,
the upload limit, and the charge log that every money count comes from.

Time is a ManualTime: every wait of the server (edits, the gateway's patience, uploads) and
every moment it reads follow `advance()`, so a 100 s gateway costs a test nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.emulator import EmulatorConfig, EmulatorServer, ManualTime, read_charge_log
from pipeline.emulator.charges import charges_by_prompt, credits_charged, edits_charged
from tests.test_emulator import (
    KEY,
    background_payload,
    half_mask,
    inpaint_payload,
    post_feature,
    product_photo,
    upload,
    upload_path,
)
from tests.test_emulator_records import poll

Start = Callable[..., Awaitable[EmulatorServer]]


async def launch(profile: str = "generous", **overrides: Any) -> EmulatorServer:
    """A started emulator of the profile, on a ManualTime (its clock: see `manual`)."""
    if profile != "generous":
        overrides.setdefault("edit_seconds", 0.0)  # only tests about time wait for edits
    server = EmulatorServer(EmulatorConfig.profile(profile, api_key=KEY, **overrides))
    server.use_time(ManualTime())
    await server.start()
    return server


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Factory: `await start(profile, **overrides)`; every server is stopped at teardown."""
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


def manual(server: EmulatorServer) -> ManualTime:
    assert isinstance(server.clock, ManualTime)
    return server.clock


def full_inpaint(image: str, mask: str, **fields: Any) -> dict[str, Any]:
    """An inpainter call naming every parameter of the seed table, as the live API requires."""
    defaults = {"quality": "medium", "output_format": "png", "output_compression": 85}
    return inpaint_payload(image, mask, **{**defaults, **fields})


def full_background(image: str, **fields: Any) -> dict[str, Any]:
    return background_payload(image, **{"quality": "medium", "background": "auto", **fields})


def asynchronous(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "async": True}


async def inputs(session: aiohttp.ClientSession, server: EmulatorServer) -> tuple[str, str]:
    return (
        await upload_path(session, server, product_photo()),
        await upload_path(session, server, half_mask()),
    )


# --------------------------------------------------------------------------- edit duration


async def test_sync_call_is_held_open_for_the_edit(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(edit_seconds=10, gateway_timeout=100)
    time = manual(server)
    image, mask = await inputs(session, server)
    call = asyncio.create_task(post_feature(session, server, inpaint_payload(image, mask)))
    await time.wait_for_sleepers(2)  # the edit and the gateway's patience
    time.advance(9.9)
    await asyncio.sleep(0)
    assert not call.done() and server.state.charges == [] and time.sleeping == 2
    time.advance(0.1)
    status, body, _ = await call
    assert status == 200 and body["aiRecord"]["status"] == "SUCCESS"
    [charge] = server.state.charges
    assert (charge.answered, charge.cost, charge.uuid) == ("sync", 4000, body["aiRecord"]["uuid"])
    assert charge.at == time.now


async def test_sync_call_slower_than_the_gateway_gets_524_and_is_charged(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(edit_seconds=8, gateway_timeout=5)
    time = manual(server)
    image, mask = await inputs(session, server)
    payload = inpaint_payload(image, mask, prompt="slow lamp", n=2)
    call = asyncio.create_task(post_feature(session, server, payload))
    await time.wait_for_sleepers(2)
    time.advance(5)
    status, body, response = await call
    assert (status, body, response.content_type) == (524, None, "text/html")
    assert "524: A timeout occurred" in await response.text()
    assert server.state.charges == [] and server.state.log[-1]["fault"] == "gateway_524"
    # The origin goes on: it finishes the edit and charges it, and nobody hears of it.
    time.advance(3)
    await server.drain()
    [charge] = server.state.charges
    assert (charge.answered, charge.cost, charge.n, charge.prompt) == ("lost", 8000, 2, "slow lamp")
    assert charge.image_url == image and charge.at == time.now
    assert server.state.used_credit == 8000 == server.state.credits_charged
    # The record exists: its uuid (which the client never learned) polls as finished.
    _, polled, _ = await poll(session, server, charge.uuid)
    assert polled["aiRecord"]["status"] == "SUCCESS"
    assert len(polled["aiRecord"]["aiRecordDetail"]["resultObject"]) == 2


async def test_async_call_answers_processing_then_finishes_charged_once(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(edit_seconds=30, gateway_timeout=5)
    time = manual(server)
    image = await upload_path(session, server, product_photo())
    status, body, _ = await post_feature(session, server, asynchronous(background_payload(image)))
    record_id = body["aiRecord"]["uuid"]
    assert status == 200 and body["aiRecord"]["status"] == "PROCESSING"
    [charge] = server.state.charges
    assert (charge.answered, charge.uuid) == ("async", record_id)
    time.advance(29.9)  # far beyond the gateway: an async record never meets it
    assert (await poll(session, server, record_id))[1]["aiRecord"]["status"] == "PROCESSING"
    time.advance(0.1)
    for _ in range(2):
        record = (await poll(session, server, record_id))[1]["aiRecord"]
        assert record["status"] == "SUCCESS" and record["temporaryUrl"]
    assert server.state.edits_charged == 1 and server.state.credits_charged == 4000


async def test_ignored_async_flag_renders_first_and_answers_success(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(edit_seconds=2, honour_async=False)
    time = manual(server)
    image = await upload_path(session, server, product_photo())
    call = asyncio.create_task(
        post_feature(session, server, asynchronous(background_payload(image)))
    )
    await time.wait_for_sleepers(1)
    time.advance(2)
    status, body, _ = await call
    assert status == 200 and body["aiRecord"]["status"] == "SUCCESS"
    assert [charge.answered for charge in server.state.charges] == ["sync"]


def test_edit_jitter_spreads_edits_by_a_seeded_fraction() -> None:
    from pipeline.emulator.faults import FaultPlan

    plan = FaultPlan(EmulatorConfig(edit_seconds=20, edit_jitter=0.25, seed=2))
    edits = [plan.feature().edit_seconds for _ in range(50)]
    assert all(15 <= edit <= 25 for edit in edits) and len(set(edits)) > 40
    again = FaultPlan(EmulatorConfig(edit_seconds=20, edit_jitter=0.25, seed=2))
    assert [again.feature().edit_seconds for _ in range(50)] == edits
    realistic = FaultPlan(EmulatorConfig.realistic(seed=3))
    spans = [realistic.feature().edit_seconds for _ in range(200)]
    assert 10 <= min(spans) < 15 and 55 < max(spans) <= 60


# --------------------------------------------------------------------------- lost answers


@pytest.mark.parametrize("asynchronous_call", [False, True], ids=["sync", "async"])
async def test_answer_lost_after_charge_is_still_charged(
    start: Start, session: aiohttp.ClientSession, asynchronous_call: bool
) -> None:
    server = await start(rate_lost_after_charge=1.0, seed=1)
    image = await upload_path(session, server, product_photo())
    outcomes = set()
    for index in range(12):
        payload = background_payload(image, prompt=f"p{index}")
        try:
            status, body, response = await post_feature(
                session, server, asynchronous(payload) if asynchronous_call else payload
            )
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            outcomes.add("drop")
            continue
        assert body is None and response.content_type == "text/html"
        outcomes.add(str(status))
    assert outcomes == {"drop", "502", "520", "522"}
    charges = server.state.charges
    assert [charge.answered for charge in charges] == ["lost"] * 12
    assert sorted(charges_by_prompt(charges)) == sorted(f"p{index}" for index in range(12))
    assert server.state.faults["lost_after_charge"] == 12 and server.state.faults["drop"] == 0


async def test_failures_before_the_origin_acted_stay_free(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start(rate_5xx=0.5, rate_busy_400=0.3, seed=4)
    image = await upload_path(session, server, product_photo())
    server.config.rate_drop = 0.5  # the upload went through; now the calls meet the faults
    statuses: list[int | None] = []  # None: the connection dropped
    for _ in range(16):
        try:
            statuses.append((await post_feature(session, server, background_payload(image)))[0])
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            statuses.append(None)
    assert {None, 400}.issubset(statuses) and set(statuses) & {500, 502, 503}
    paid = server.state.charges
    assert len(paid) == statuses.count(200) and all(c.answered == "sync" for c in paid)
    assert server.state.used_credit == 4000 * statuses.count(200)


# --------------------------------------------------------------------------- credits


async def test_used_credit_lags_one_call(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start("live", credit_limit=50_000, used_credit=1_000)
    image, mask = await inputs(session, server)
    seen = []
    for _ in range(2):
        _, body, _ = await post_feature(session, server, full_inpaint(image, mask))
        team = body["aiRecord"]["teamUser"]
        seen.append(team["usedCredit"])
        assert team["creditLimit"] == 50_000  # the member's cap, not a balance
    assert seen == [1_000, 5_000] and server.state.used_credit == 9_000
    # A poll charges nothing: it shows the spend as it stands.
    _, polled, _ = await poll(session, server, body["aiRecord"]["uuid"])
    assert polled["aiRecord"]["teamUser"]["usedCredit"] == 9_000
    _, body, _ = await post_feature(session, server, asynchronous(full_inpaint(image, mask)))
    assert body["aiRecord"]["teamUser"]["usedCredit"] == 9_000


async def test_team_balance_runs_out_below_the_member_cap(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live", credit_limit=100_000, team_balance=6_000)
    image, mask = await inputs(session, server)
    assert (await post_feature(session, server, full_inpaint(image, mask)))[0] == 200
    status, body, _ = await post_feature(session, server, full_inpaint(image, mask))
    assert status == 402 and body["errorCode"] == "INSUFFICIENT_CREDITS"
    assert "credit" in body["message"].lower()
    assert server.state.team_balance == 2_000 and server.state.edits_charged == 1


# --------------------------------------------------------------------------- uploads


async def test_sixth_concurrent_upload_is_refused(
    start: Start, session: aiohttp.ClientSession
) -> None:
    server = await start("live", asset_latency=1.0)
    time = manual(server)
    held = [asyncio.create_task(upload(session, server, product_photo())) for _ in range(5)]
    await time.wait_for_sleepers(5)
    assert server.state.uploads_in_flight == 5
    sixth = await upload(session, server, product_photo())
    assert sixth.status == 429 and sixth.headers["Retry-After"] == "1"
    body = await sixth.json()
    assert body["errorCode"] == "TOO_MANY_REQUESTS" and "at most 5" in body["message"]
    time.advance(1.0)
    assert [response.status for response in await asyncio.gather(*held)] == [200] * 5
    assert server.state.uploads_in_flight == 0
    again = asyncio.create_task(upload(session, server, product_photo()))
    await time.wait_for_sleepers(1)
    time.advance(1.0)
    assert (await again).status == 200
    assert server.state.faults["upload_concurrency"] == 1


async def test_generous_uploads_have_no_limit(start: Start, session: aiohttp.ClientSession) -> None:
    server = await start(asset_latency=1.0)
    time = manual(server)
    held = [asyncio.create_task(upload(session, server, product_photo())) for _ in range(8)]
    await time.wait_for_sleepers(8)
    time.advance(1.0)
    assert {response.status for response in await asyncio.gather(*held)} == {200}


# --------------------------------------------------------------------------- the charge log


async def test_charge_log_jsonl_matches_the_state(
    start: Start, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    log_path = tmp_path / "money" / "charges.jsonl"
    server = await start(charge_log=log_path, edit_seconds=8, gateway_timeout=5)
    time = manual(server)
    image, mask = await inputs(session, server)
    await post_feature(session, server, asynchronous(inpaint_payload(image, mask, prompt="a")))
    call = asyncio.create_task(post_feature(session, server, inpaint_payload(image, mask, n=3)))
    await time.wait_for_sleepers(2)
    time.advance(8)
    assert (await call)[0] == 524
    await server.drain()
    server.config.gateway_timeout = None
    sync = asyncio.create_task(post_feature(session, server, background_payload(image)))
    await time.wait_for_sleepers(1)
    time.advance(8)
    assert (await sync)[0] == 200
    lines = log_path.read_text().splitlines()
    assert [json.loads(line)["answered"] for line in lines] == ["async", "lost", "sync"]
    assert KEY not in log_path.read_text()
    charges = read_charge_log(log_path)
    assert charges == server.state.charges
    assert edits_charged(charges) == 3 and credits_charged(charges) == 4000 * 5
    assert server.state.images_charged == 5
    assert set(json.loads(lines[0])) == {
        "uuid", "feature_type", "cost", "n", "prompt", "image_url", "at", "ts", "answered",
    }  # fmt: skip
    by_prompt = server.state.charges_by_prompt()
    assert [c.answered for c in by_prompt["a"]] == ["async"]
    assert [c.answered for c in server.state.lost_charges()] == ["lost"]


def test_read_charge_log_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "charges.jsonl"
    line = (
        '{"uuid": "u", "feature_type": "IMAGE_INPAINTER", "cost": 4000, "n": 1, "prompt": "p", '
        '"image_url": "i", "at": 1.0, "ts": "t", "answered": "sync"}'
    )
    path.write_text(line + "\n" + line[:30])
    [charge] = read_charge_log(path)
    assert charge.cost == 4000 and charge.answered == "sync"
