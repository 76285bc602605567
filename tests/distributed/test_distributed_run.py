"""docs/delivery.md#scale-out on a local Ray instance: 2 shards, the emulator on 127.0.0.1, one
shared budget."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Endpoints, RateLimit, Settings, Timeouts
from pipeline.emulator import EmulatorConfig, EmulatorServer
from pipeline.events import Event, EventBus, JobSucceeded
from pipeline.layout import LEDGER_NAME
from pipeline.ledger import LedgerState, LedgerWriter, read_ledger
from pipeline.manifest import load_manifest
from pipeline.models import PlannedJob
from pipeline.plan.prepare import PlanOptions, scan, skip_reason
from pipeline.store.bucket import OutputTarget
from pipeline.store.local import Store
from tests.helpers.e2e import QUICK_POLL_TIMEOUTS, states, write_catalog
from tests.helpers.emulator import KEY, RunningEmulator, serve_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.usefixtures("ray_local")]

# The emulator's window is 60 s of its clock; run that clock 60x fast so the window is 1 s
# and "never exceeded" means something within a test of a few seconds.
SPEEDUP = 60.0


def planned(manifest: Path) -> list[PlannedJob]:
    return [item for item in scan(load_manifest(manifest)) if isinstance(item, PlannedJob)]


def settings_for(emulator: RunningEmulator, rpm: float, concurrency: int = 4) -> Settings:
    return Settings(
        endpoints=Endpoints(emulator.server.api_base, emulator.server.asset_base),
        rate=RateLimit(rpm=rpm, concurrency=concurrency),
        timeouts=Timeouts(**QUICK_POLL_TIMEOUTS),
    )


def run(
    jobs: list[PlannedJob],
    out: Path,
    settings: Settings,
    listener: Any = None,
    resume: LedgerState | None = None,
    max_credits: float | None = None,
) -> Any:
    from pipeline.distributed.driver import Driver

    Store(out).prepare()
    ledger = resume or LedgerState()
    # The plan's skip rule leaves out what is done; the driver runs what it is given.
    jobs = [j for j in jobs if skip_reason(ledger.state_of(j.job.id, j.key), PlanOptions()) is None]
    bus = EventBus()
    with LedgerWriter(out / LEDGER_NAME) as writer:
        bus.subscribe(writer)
        driver = Driver(
            shards=2,
            api_key=KEY,
            settings=settings,
            target=OutputTarget(str(out), out, bucket=False),
            bus=bus,
            resume_state=ledger.resume(),
            max_credits=max_credits,
        )
        if listener is not None:
            bus.subscribe(lambda event: listener(driver, event))
        outcome = asyncio.run(driver.run(jobs))
    return driver, outcome


def fast_window_emulator(rpm_limit: float, latency: float = 0.0) -> EmulatorServer:
    server = EmulatorServer(EmulatorConfig(api_key=KEY, rpm_limit=rpm_limit, latency=latency))
    server.clock = lambda: time.monotonic() * SPEEDUP
    return server


def test_every_job_done_once_within_the_shared_window(tmp_path: Path) -> None:
    jobs = planned(write_catalog(tmp_path, 12, images=3))
    out = tmp_path / "out"
    # The server admits 10 calls a (real) second; the budget allows 6 for both shards together.
    # Two shards each pacing at the full --rpm would send 12 a second and meet 429s.
    with serve_in_thread(fast_window_emulator(rpm_limit=10)) as emulator:
        driver, outcome = run(jobs, out, settings_for(emulator, rpm=360))
        features = emulator.calls("features", status=None)
    assert outcome.stop_reason is None
    assert [e["status"] for e in features] == [200] * 12  # no 429: the window never filled
    assert len({e["uuid"] for e in features}) == 12
    assert set(states(out).values()) == {"succeeded"}
    assert len(states(out)) == 12
    assert driver.restarts == 0
    # A second run over the same ledger sends nothing: the plan left out what is done, and
    # the driver starts no shard for an empty plan.
    with serve_in_thread(fast_window_emulator(rpm_limit=10)) as emulator:
        resume = read_ledger(out / LEDGER_NAME)
        second, _ = run(jobs, out, settings_for(emulator, rpm=360), resume=resume)
        assert emulator.log == []
    assert second.shards_started == 0


def test_a_killed_shard_is_replaced_and_rebuys_at_most_its_calls_in_flight(
    tmp_path: Path,
) -> None:
    import ray

    jobs = planned(write_catalog(tmp_path, 24, images=3))
    out = tmp_path / "out"
    concurrency = 4
    killed: list[int] = []
    succeeded: Counter[str] = Counter()

    def kill_after_some(driver: Any, event: Event) -> None:
        if isinstance(event, JobSucceeded):
            succeeded[event.job_id] += 1
            if sum(succeeded.values()) == 6 and not killed:
                victim = min(driver.shards)
                killed.append(victim)
                ray.kill(driver.shards[victim])

    with serve_in_thread(fast_window_emulator(rpm_limit=10_000, latency=0.1)) as emulator:
        settings = settings_for(emulator, rpm=1200, concurrency=concurrency)
        driver, outcome = run(jobs, out, settings, kill_after_some)
        bought = emulator.calls("features")
    assert killed and driver.restarts == 1
    assert outcome.stop_reason is None
    assert len(states(out)) == 24
    assert set(states(out).values()) == {"succeeded"}
    assert max(succeeded.values()) == 1  # every job succeeded exactly once in the ledger
    # Calls the dead shard had open when it died are bought again; nothing else is.
    assert len(bought) - 24 <= concurrency


def test_max_credits_is_one_count_across_shards_reserved_before_each_post(
    tmp_path: Path,
) -> None:
    jobs = planned(write_catalog(tmp_path, 24, images=3))
    out = tmp_path / "out"
    concurrency = 2
    # 1000 credits a job (the credit table): the budget admits five calls, whichever shard
    # sends them; the sixth reservation is refused before its POST, on any shard.
    with serve_in_thread(fast_window_emulator(rpm_limit=10_000, latency=0.05)) as emulator:
        settings = settings_for(emulator, rpm=600, concurrency=concurrency)
        driver, outcome = run(jobs, out, settings, max_credits=5500)
        bought = emulator.calls("features")
    assert outcome.stop_reason == "max_credits"
    assert len(bought) == 5  # no overshoot: calls in flight on every shard were counted
    assert driver.credits.spent == 5000
    assert list(states(out).values()).count("succeeded") == 5
