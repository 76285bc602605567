"""Scenario: scale-out on Ray (docs/delivery.md#scale-out), shard scaling, the shared budget against
the account's limit, and the rate-budget actor's capacity.

1. Shard scaling: one catalog against a zero-latency emulator (its own process, no rate limit,
   ``--rpm 0``), on a local Ray instance with 1 shard, then 2 shards, on this machine's cores:
   jobs a second and their ratio. The emulator renders on the same cores, so the ratio says
   how much of the client work the second shard takes off, not what a second machine gives.
2. The budget actor alone, with fake shards that only acquire permits (no HTTP), through the
   same ``RemoteThrottle`` the real shards use: (a) 20 shards at 3,000 requests a minute:
   permits a second granted, and how long a worker waits in ``acquire`` (p50/p99; that wait is
   the pacing itself: 20 shards x workers queue for 50 permits a second); (b) the same 20 shards
   with an unreachable limit: the actor's capacity in permits a second and lease round-trip
   p50/p99. 1,000,000 jobs at 3,000 a minute would take 5.5 hours; (a) runs a window of the
   same rate instead (its figures are rates, so a window gives them), and the note says so.
3. One shared budget against the account's limit: the emulator in its own process enforces a
   window of 180 API requests a minute over every API request (uploads, calls, polls), the run
   asks ``--rpm 150`` (the default), and 1, 2, then 4 shards share it. For each: the budget
   used (API requests sent over what ``--rpm`` allowed, in the steady part: the first and last
   few seconds cut) and the 429s (none may come from sharding: the 1-shard run is the
   baseline). Jobs share one image, so each costs about one API request (its feature call).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Figure, ScenarioResult, log, scratch
from bench.emulator import KEY, EmulatorProcess
from pipeline.layout import LEDGER_NAME

TITLE = "Scale-out on Ray (shard scaling; rate-budget actor capacity)"
SIM_SHARDS = 20
SIM_RPM = 3000
WORKERS_PER_SHARD = 8
ACCOUNT_WINDOW = 180  # the account's documented limit: API requests in any 60 s
BUDGET_RPM = 150  # --rpm's default, under the account's limit
BUDGET_SHARDS = (1, 2, 4)
EDGE_SECONDS = 4.0  # cut from each end of a run: shard start-up and the tail
API_ROUTES = frozenset({"assets", "features", "results"})  # what the account's window counts


def run(quick: bool) -> ScenarioResult:
    import ray

    from pipeline.distributed.budget import NAMESPACE

    result = ScenarioResult("ray_scale", TITLE)
    jobs = 16 if quick else 48
    window = 6.0 if quick else 20.0
    result.params = {
        "scaling_jobs": jobs,
        "sim_shards": SIM_SHARDS,
        "sim_rpm": SIM_RPM,
        "sim_window_s": window,
        "sim_workers_per_shard": WORKERS_PER_SHARD,
        "cores": os.cpu_count(),
    }
    path = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    ray.init(
        include_dashboard=False,
        namespace=NAMESPACE,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        _scaling(result, jobs)
        _budget_use(result, 24.0 if quick else 45.0)
        _budget(result, window)
    finally:
        ray.shutdown()
    result.notes.append(
        f"the 1,000,000-job simulation runs {window:g} s of the same {SIM_RPM}/min across "
        f"{SIM_SHARDS} shards ({int(SIM_RPM * window / 60)} permits), not 5.5 hours"
    )
    return result


# -- 1. shard scaling -------------------------------------------------------------------------


def _catalog(folder: Path, count: int) -> list[Any]:
    import orjson
    from PIL import Image

    from pipeline.manifest import load_manifest
    from pipeline.models import PlannedJob
    from pipeline.plan.prepare import scan

    (folder / "img").mkdir(parents=True)
    Image.new("RGB", (256, 256), (40, 120, 200)).save(folder / "img" / "p.png")
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    mask.save(folder / "img" / "m.png")
    manifest = {
        "version": 1,
        "name": "ray-scale",
        "defaults": {"type": "inpaint", "n": 1, "quality": "low"},
        "jobs": [
            {"id": f"j{i:05d}", "image": "img/p.png", "mask": "img/m.png", "prompt": f"p {i}"}
            for i in range(count)
        ],
    }
    (folder / "catalog.yaml").write_bytes(orjson.dumps(manifest))
    return [j for j in scan(load_manifest(folder / "catalog.yaml")) if isinstance(j, PlannedJob)]


def _scaling(result: ScenarioResult, count: int) -> None:
    rates: dict[int, float] = {}
    with scratch("ray-scale") as folder, EmulatorProcess() as emulator:
        jobs = _catalog(folder / "catalog", count)
        for shards in (1, 2):
            rates[shards] = _distributed_rate(emulator, jobs, folder / f"out-{shards}", shards)
            log(f"ray_scale: {shards} shard(s): {rates[shards]:.1f} jobs/s")
            result.add(Figure(f"{shards} shard(s)", round(rates[shards], 2), "jobs/s"))
    result.add(Figure("2 shards / 1 shard", round(rates[2] / rates[1], 2), "x"))


def _distributed_rate(emulator: EmulatorProcess, jobs: list[Any], out: Path, shards: int) -> float:
    elapsed = _distributed_run(emulator, jobs, out, shards, rpm=0)
    return len(jobs) / elapsed


def _distributed_run(
    emulator: EmulatorProcess, jobs: list[Any], out: Path, shards: int, rpm: float
) -> float:
    """Run ``jobs`` on ``shards`` shards at ``--rpm rpm`` (0: unpaced); the seconds it took."""
    from pipeline.config import Endpoints, RateLimit, Settings
    from pipeline.distributed.driver import Driver
    from pipeline.events import EventBus
    from pipeline.ledger import LedgerState, LedgerWriter
    from pipeline.store.bucket import OutputTarget
    from pipeline.store.local import Store

    Store(out).prepare()
    settings = Settings(
        endpoints=Endpoints(emulator.api_base, emulator.asset_base),
        rate=RateLimit(rpm=rpm, concurrency=8),
    )
    bus = EventBus()
    with LedgerWriter(out / LEDGER_NAME) as writer:
        bus.subscribe(writer)
        # Warm the shards' processes first: start-up is not throughput.
        driver = Driver(
            shards=shards,
            api_key=KEY,
            settings=settings,
            target=OutputTarget(str(out), out, bucket=False),
            bus=bus,
            resume_state=LedgerState().resume(),
        )
        started = time.perf_counter()
        outcome = asyncio.run(driver.run(jobs))
        elapsed = time.perf_counter() - started
    if outcome.stop_reason:
        raise RuntimeError(f"the run stopped: {outcome.stop_reason} {outcome.stop_message}")
    return elapsed


# -- 3. one shared budget against the account's limit -----------------------------------------


def _budget_use(result: ScenarioResult, seconds: float) -> None:
    count = int(BUDGET_RPM / 60 * seconds)  # about one API request a job
    result.params.update(budget_rpm=BUDGET_RPM, account_window=ACCOUNT_WINDOW, budget_jobs=count)
    limited_alone = 0
    with scratch("ray-budget") as folder:
        for shards in BUDGET_SHARDS:
            log_path = folder / f"requests-{shards}.jsonl"
            flags = ("--window-limit", str(ACCOUNT_WINDOW), "--window-seconds", "60")
            with EmulatorProcess(*flags, request_log=log_path) as emulator:
                jobs = _catalog(folder / f"catalog-{shards}", count)
                _distributed_run(emulator, jobs, folder / f"out-{shards}", shards, BUDGET_RPM)
            used, limited = _used_share(log_path)
            limited_alone = limited if shards == 1 else limited_alone
            log(
                f"ray_scale: {shards} shard(s), --rpm {BUDGET_RPM}: used {used:.3f}, {limited} 429s"
            )
            result.add(Figure(f"budget used, {shards} shard(s)", round(used, 3), "", (">=", 0.95)))
            # Sharding must add none: the 1-shard run is the baseline (0 expected there too).
            bound = ("<=", float(limited_alone)) if shards > 1 else None
            result.add(Figure(f"429s, {shards} shard(s)", limited, "", bound))


def _used_share(request_log: Path) -> tuple[float, int]:
    """API requests sent in the steady part over what --rpm allowed there; the 429s."""
    import orjson

    entries = [orjson.loads(line) for line in request_log.read_bytes().splitlines() if line]
    api = sorted(e["arrived"] for e in entries if e["route"] in API_ROUTES)
    limited = sum(1 for e in entries if e["route"] in API_ROUTES and e["status"] == 429)
    start, end = api[0] + EDGE_SECONDS, api[-1] - EDGE_SECONDS
    sent = sum(1 for arrived in api if start <= arrived < end)
    return sent / (BUDGET_RPM / 60 * (end - start)), limited


# -- 2. the budget actor alone ----------------------------------------------------------------


def _fake_shard_class() -> Any:
    import ray

    from pipeline.config import RateLimit
    from pipeline.distributed.budget import RemoteThrottle

    @ray.remote(num_cpus=0)
    class FakeShard:
        def __init__(self, name: str, rpm: float, shards: int, lease_cap: int | None) -> None:
            self._throttle = RemoteThrottle(name, RateLimit(rpm=rpm), shards, lease_cap=lease_cap)

        async def run(self, permits: int, workers: int) -> dict[str, Any]:
            waits: list[float] = []
            left = [permits]

            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    began = time.perf_counter()
                    await self._throttle.acquire()
                    waits.append(time.perf_counter() - began)

            first = time.time()
            await asyncio.gather(*(worker() for _ in range(workers)))
            return {"waits": waits, "first": first, "last": time.time()}

    return FakeShard


def _simulate(
    rpm: float, permits: int, name: str, lease_cap: int | None = None
) -> tuple[float, list[float]]:
    import ray

    from pipeline.config import RateLimit
    from pipeline.distributed.budget import get_budget

    budget = get_budget(name, RateLimit(rpm=rpm))
    ray.get(budget.set_rpm.remote(rpm))
    fake = _fake_shard_class()
    shards = [fake.remote(name, rpm, SIM_SHARDS, lease_cap) for _ in range(SIM_SHARDS)]
    ray.get([s.run.remote(1, 1) for s in shards])  # processes up, leases primed
    results = ray.get([s.run.remote(permits // SIM_SHARDS, WORKERS_PER_SHARD) for s in shards])
    for shard in shards:
        ray.kill(shard)
    ray.kill(budget)
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    waits = [w for r in results for w in r["waits"]]
    return len(waits) / span, waits


def _quantiles(waits: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(waits, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def _budget(result: ScenarioResult, window: float) -> None:
    permits = int(SIM_RPM * window / 60)
    rate, waits = _simulate(SIM_RPM, permits, "onemin-budget-bench-paced")
    p50, p99 = _quantiles(waits)
    log(f"ray_scale: paced {rate:.1f} permits/s (target {SIM_RPM / 60:g}), p50 {p50:.0f} ms")
    result.add(
        Figure(
            f"permits/s at {SIM_RPM}/min, 20 shards",
            round(rate, 2),
            "/s",
            ("<=", SIM_RPM / 60 * 1.02),
        )
    )
    result.add(Figure("acquire wait p50 (paced)", round(p50, 1), "ms"))
    result.add(Figure("acquire wait p99 (paced)", round(p99, 1), "ms"))
    # Capacity: a limit no shard reaches and leases of one permit, so every permit is one
    # round-trip to the actor: its bound. Real leases (rpm/60/shards permits) multiply it.
    capacity_permits = 2000 if window < 10 else 8000
    rate, waits = _simulate(60_000_000, capacity_permits, "onemin-budget-bench-capacity", 1)
    p50, p99 = _quantiles(waits)
    log(f"ray_scale: capacity {rate:.0f} permits/s, acquire p99 {p99:.1f} ms")
    result.add(
        Figure("budget capacity, 20 shards", round(rate), "permits/s", (">=", SIM_RPM / 60 * 5))
    )
    result.add(Figure("acquire latency p50 (unpaced)", round(p50, 2), "ms"))
    result.add(Figure("acquire latency p99 (unpaced)", round(p99, 2), "ms"))
