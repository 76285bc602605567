"""``--ray`` with a bucket ``OUT`` (moto's S3 on 127.0.0.1): shards put their images in the
bucket themselves, the driver keeps the state folder; every job is bought once, a resume buys
nothing, a killed shard costs no purchase beyond its calls in flight, and the export of the
run reads its images from the bucket.

The shared Ray instance was started before these tests set their AWS variables, so a shard
reaches the bucket only if the driver handed the variables over in Ray's runtime environment.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.events import Event, EventBus, JobSucceeded
from pipeline.inputs import objectstore
from pipeline.layout import LEDGER_NAME
from pipeline.ledger import LedgerState, LedgerWriter
from pipeline.review.export import CSV_COLUMNS
from pipeline.store.bucket import BucketStore, OutputTarget
from tests.distributed.test_distributed_run import fast_window_emulator, planned, settings_for
from tests.helpers.e2e import QUICK_POLLS, records, run_cli, states, write_catalog
from tests.helpers.emulator import KEY, emulator_thread, serve_in_thread
from tests.test_outputs_bucket import decoded_size, objects

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.usefixtures("ray_local"),
    pytest.mark.timeout(240),
]

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


@pytest.fixture
def secret(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret key of its own (moto takes any), to look for where it must never be."""
    value = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", value)
    return value


def new_bucket(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    objectstore.filesystem(f"s3://{name}").mkdir(name)
    return f"s3://{name}"


def test_two_shards_put_every_image_in_the_bucket_once_and_the_export_reads_it_back(
    tmp_path: Path,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    count = 8
    manifest = write_catalog(tmp_path, count)
    out = f"{new_bucket('ray')}/runs/spring"
    state = tmp_path / ".pipeline" / "e2e"
    run = ["run", str(manifest), "--out", out, "--ray", "local", "--shards", "2", *FAST]
    with emulator_thread() as emulator:
        assert run_cli(run, emulator.env, monkeypatch) == 0
        charges = emulator.server.state.charges_by_prompt()
        assert sorted(charges) == sorted(f"studio shot {j}" for j in range(count))
        assert all(len(bought) == 1 for bought in charges.values())  # every job bought once
        requests = len(emulator.log)
        assert run_cli(run, emulator.env, monkeypatch) == 0  # the resume
        assert len(emulator.log) == requests  # sent nothing
    stored = objects(out)
    for j in range(count):
        assert decoded_size(stored[f"sku-{j:04d}/0.png"]) == (1024, 1024)
    assert stored["ledger.jsonl"] == (state / LEDGER_NAME).read_bytes()  # copied at the end
    assert sorted(stored) == sorted(
        [f"sku-{j:04d}/0.png" for j in range(count)] + ["ledger.jsonl", "summary.json"]
    )  # no probe, no staging, no lock in the bucket
    assert set(states(state).values()) == {"succeeded"}

    folder, other = tmp_path / "shop", f"{new_bucket('shop')}/export"
    for dest in (str(folder), other):
        capsys.readouterr()
        assert run_cli(["export", str(state), dest], {}, monkeypatch) == 0
        assert capsys.readouterr().out.strip() == f"{count} copied, 0 unchanged"
        assert run_cli(["export", str(state), dest], {}, monkeypatch) == 0
        assert capsys.readouterr().out.strip() == f"0 copied, {count} unchanged"
    exported = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert objects(other) == exported
    assert all(exported[f"sku-{j:04d}_0.png"] == stored[f"sku-{j:04d}/0.png"] for j in range(count))
    assert exported["export.csv"].decode().splitlines()[0] == ",".join(CSV_COLUMNS)

    # The shards had the secret in their environment; nothing written anywhere holds it.
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(secret.encode() in data for data in [*written, *stored.values()])
    assert secret not in capsys.readouterr().err


def test_a_killed_shard_with_a_bucket_out_costs_no_purchase_beyond_its_calls_in_flight(
    tmp_path: Path,
    secret: str,
) -> None:
    import ray

    from pipeline.distributed.driver import Driver

    count, concurrency = 24, 4
    jobs = planned(write_catalog(tmp_path, count, images=3))
    out = f"{new_bucket('kill')}/out"
    state = tmp_path / "state"
    target = OutputTarget(out, state, bucket=True)
    BucketStore(out, state / "staging").prepare()  # what the CLI does before the run
    killed: list[int] = []
    succeeded: Counter[str] = Counter()

    def kill_after_some(driver: Any, event: Event) -> None:
        if isinstance(event, JobSucceeded):
            succeeded[event.job_id] += 1
            if sum(succeeded.values()) == 6 and not killed:
                killed.append(min(driver.shards))
                ray.kill(driver.shards[killed[0]])

    server = fast_window_emulator(rpm_limit=10_000, latency=0.1)
    with serve_in_thread(server) as emulator, LedgerWriter(state / LEDGER_NAME) as writer:
        bus = EventBus()
        bus.subscribe(writer)
        driver = Driver(
            shards=2,
            api_key=KEY,
            settings=settings_for(emulator, rpm=1200, concurrency=concurrency),
            target=target,
            bus=bus,
            resume_state=LedgerState().resume(),
        )
        bus.subscribe(lambda event: kill_after_some(driver, event))
        outcome = asyncio.run(driver.run(jobs))
        bought = emulator.server.state.charges
    assert killed and driver.restarts == 1 and outcome.stop_reason is None
    assert set(states(state).values()) == {"succeeded"} and len(states(state)) == count
    assert max(succeeded.values()) == 1  # one success line per job
    # Only what the dead shard had open could be bought twice (it never told the driver).
    assert count <= len(bought) <= count + concurrency
    stored = objects(out)
    for record in records(state):
        if record["status"] == "succeeded":
            assert all(decoded_size(stored[name]) == (1024, 1024) for name in record["outputs"])
