"""docs/ledger.md#lost-outputs: a succeeded job whose outputs are gone is fetched again from its
stored result when that still works (free), else ``missing`` in ``status`` and re-bought only with
--redo-missing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.api.client import SinkFactory
from pipeline.errors import BadResponse, RecordUnknown, ServerError
from pipeline.events import EventBus
from pipeline.images.provenance import read_provenance
from pipeline.ledger import JobState, read_ledger, record_for
from pipeline.ledger.schema import Record, Refetched, ResultGone
from pipeline.models import Feature, FeatureResult, InputRef, Job, PlannedJob, Status
from pipeline.scheduler.refetch import DoneJobs, Refetcher
from pipeline.store.local import Store
from tests.helpers.e2e import (
    QUICK_POLLS,
    assert_decodes,
    records,
    run_cli,
    run_inprocess,
    write_catalog,
)
from tests.helpers.emulator import emulator_thread
from tests.helpers.fakes import png_bytes
from tests.helpers.images import make_image, write_manifest

# Whole runs of the CLI against the emulator: make test runs them, test-fast does not.
pytestmark = pytest.mark.slow

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


def _status(out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    result = run_inprocess(["status", str(out), "--json"], {}, monkeypatch, capsys)
    return {job["id"]: job["state"] for job in json.loads(result.stdout)["jobs"]}


def test_a_deleted_output_is_fetched_again_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 4, images=2, n=2)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        args = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        spent = read_ledger(out / "ledger.jsonl").credits_spent
        (out / "sku-0001" / "1.png").unlink()
        shutil_rmtree(out / "sku-0002")
        assert _status(out, monkeypatch, capsys)["sku-0001"] == "missing"
        bought, looked = len(emulator.calls("features")), len(emulator.calls("results"))

        result = run_inprocess(args, emulator.env, monkeypatch, capsys)
        assert result.code == 0, result.streams
        assert "re-fetched free from their stored results: 2 jobs" in result.stdout
        assert len(emulator.calls("features")) == bought  # nothing bought again
        # One look at each stored record: the job's one record of two images, or (a private
        # bucket: a call per image) each image's own.
        records_per_job = bought // 4
        assert len(emulator.calls("results")) - looked == 2 * records_per_job
    for job_id in ("sku-0001", "sku-0002"):
        for index in (0, 1):
            path = out / job_id / f"{index}.png"
            assert_decodes(path, (1024, 1024))
            assert read_provenance(path.read_bytes()) is not None  # marked like any download
    refetched = [r for r in records(out) if r["status"] == "refetched"]
    assert sorted(r["job_id"] for r in refetched) == ["sku-0001", "sku-0002"]
    assert sorted(refetched[0]["outputs"]) == [f"{refetched[0]['job_id']}/{i}.png" for i in (0, 1)]
    assert all(len(r["checks"]) == 2 for r in refetched)  # judged again, one per output
    ledger = read_ledger(out / "ledger.jsonl")
    assert ledger.credits_spent == spent  # free
    assert set(_status(out, monkeypatch, capsys).values()) == {"succeeded"}


def test_a_gone_stored_result_stays_missing_until_redo_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each --emulator run starts a fresh emulator: the first run's records are gone, as when
    # the API expired them.
    manifest = write_catalog(tmp_path, 3, images=1)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--emulator", *FAST]
    assert run_inprocess(args, {}, monkeypatch, capsys).code == 0
    spent = read_ledger(out / "ledger.jsonl").credits_spent
    (out / "sku-0001" / "0.png").unlink()

    result = run_inprocess(args, {}, monkeypatch, capsys)
    assert result.code == 0, result.streams
    assert "missing (stored result gone): 1 jobs; --redo-missing buys them again" in result.stdout
    assert read_ledger(out / "ledger.jsonl").credits_spent == spent  # bought nothing
    assert _status(out, monkeypatch, capsys)["sku-0001"] == "missing"
    gone = [r["job_id"] for r in records(out) if r["status"] == "result_gone"]
    assert gone == ["sku-0001"]

    # Known gone: the next run does not ask the API again (each ask spends the rate budget).
    result = run_inprocess(args, {}, monkeypatch, capsys)
    assert result.code == 0 and "stored result gone" not in result.stdout, result.streams
    assert [r["job_id"] for r in records(out) if r["status"] == "result_gone"] == gone
    assert _status(out, monkeypatch, capsys)["sku-0001"] == "missing"

    dry = run_inprocess([*args, "--redo-missing", "--dry-run"], {}, monkeypatch, capsys)
    assert dry.code == 0 and "redo" in dry.stdout, dry.streams
    assert read_ledger(out / "ledger.jsonl").credits_spent == spent

    result = run_inprocess([*args, "--redo-missing"], {}, monkeypatch, capsys)
    assert result.code == 0, result.streams
    ledger = read_ledger(out / "ledger.jsonl")
    # One purchase per uuid (an async record has a second submitted line once it finished).
    calls = {(r["job_id"], r["uuid"]) for r in records(out) if r["status"] == "submitted"}
    bought = [job_id for job_id, _ in calls]
    assert bought.count("sku-0001") == 2 and bought.count("sku-0000") == 1  # exactly that job
    assert ledger.credits_spent > spent
    assert_decodes(out / "sku-0001" / "0.png", (1024, 1024))
    assert set(_status(out, monkeypatch, capsys).values()) == {"succeeded"}


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


# -- the re-fetch alone, against a scripted client ------------------------------------------


class _Gate:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


class _Client:
    """Answers each uuid's poll and download as scripted: a result, or an error to raise."""

    def __init__(self, polls: dict[str, object], downloads: dict[str, object]) -> None:
        self.polls, self.downloads = polls, downloads
        self.unsigned_reads = False  # as a new client: not asked yet

    async def serves_unsigned(self, path: str) -> bool:
        """The asset host serves no unsigned read: every result is a scripted download."""
        return False

    async def poll_result(self, uuid: str) -> FeatureResult:
        answer = self.polls[uuid]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, FeatureResult)
        return answer

    async def fetch_result(
        self, result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = None
    ) -> int:
        answer = self.downloads[result.uuid]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, bytes)
        with dest.open("wb") as handle:  # as the real client: the body through the sink
            stream = None if sink is None else sink(handle)
            (handle if stream is None else stream).write(answer)
            if stream is not None:
                stream.finish()
        return len(answer)


def _done(out: Path, job_id: str, uuid: str) -> JobState:
    (out / job_id).mkdir(parents=True, exist_ok=True)
    return JobState(job_id, Status.SUCCEEDED, "key", 0, outputs=(f"{job_id}/0.png",), uuid=uuid)


async def test_what_serves_comes_back_and_what_does_not_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    states = {
        "back": _done(out, "back", "u-back"),
        "kept": _done(out, "kept", "u-kept"),  # its file is there: not even asked about
        "unknown": _done(out, "unknown", "u-unknown"),
        "expired": _done(out, "expired", "u-expired"),
        "outage": _done(out, "outage", "u-outage"),
        "no-record": _done(out, "no-record", ""),
    }
    (out / "kept" / "0.png").write_bytes(png_bytes((8, 8)))
    ok = FeatureResult("u", ("asset/0.png",))
    client = _Client(
        polls={
            "u-back": replace(ok, uuid="u-back"),
            "u-unknown": RecordUnknown("record u-unknown is not known"),
            "u-expired": replace(ok, uuid="u-expired"),
            "u-outage": ServerError("HTTP 503", 503),
        },
        downloads={
            "u-back": png_bytes((8, 8)),
            "u-expired": BadResponse("result 0 not available at any URL: HTTP 403", 403),
        },
    )
    done = DoneJobs()
    for state in states.values():
        done(state, PlannedJob(Job(state.job_id, Feature.INPAINT, InputRef("file", "x"), "p"), "k"))
    bus = EventBus()
    written: list[Record] = []
    bus.subscribe(lambda event: written.append(record) if (record := record_for(event)) else None)
    gate = _Gate()
    report = await Refetcher(client, Store(out), gate, bus, out).run(done)
    assert report.refetched == ["back"]
    assert sorted(job for job, _ in report.gone) == ["expired", "no-record", "unknown"]
    assert [job for job, _ in report.later] == ["outage"]
    assert gate.acquired == 4  # one poll per job with a record, through the run's throttle
    (line,) = [record for record in written if isinstance(record, Refetched)]
    assert line.outputs == ("back/0.png",)
    gone_lines = sorted(r.job_id for r in written if isinstance(r, ResultGone))
    assert gone_lines == ["expired", "no-record", "unknown"]  # not asked again next run
    assert read_provenance((out / "back" / "0.png").read_bytes()) is not None
    assert not [p for p in (out / "expired").iterdir() if p.is_file()]  # no temporary left
    text = "\n".join(report.lines(out))
    assert "re-fetched free from their stored results: 1 jobs" in text
    assert "missing (stored result gone): 3 jobs; --redo-missing buys them again" in text
    assert "missing (not re-fetched now): 1 jobs; the next run tries again" in text


def test_a_protected_job_is_composited_again_when_re_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image(tmp_path / "images" / "item.png", size=(64, 64))
    job = {"id": "p", "prompt": "oak", "mask": "box:0,0.5,1,1", "protect": True}
    manifest = write_manifest(
        tmp_path,
        {"defaults": {"type": "inpaint", "image": "images/item.png", "size": "1024x1024"}}
        | {"jobs": [job]},
    )
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        args = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        delivered = (out / "p" / "0.png").read_bytes()
        raw = (out / "p" / ".raw" / "0.png").read_bytes()
        (out / "p" / "0.png").unlink()
        assert run_cli(args, emulator.env, monkeypatch) == 0
        assert len(emulator.calls("features")) == 1
    assert (out / "p" / "0.png").read_bytes() == delivered  # the same composite, byte for byte
    assert (out / "p" / ".raw" / "0.png").read_bytes() == raw  # the API's own image beside it


async def test_many_lost_outputs_are_re_fetched_a_few_at_a_time(tmp_path: Path) -> None:
    # A folder whose images were all moved away lists every done job: a handful of workers
    # drain them, never a task (and a poll in flight) per job.
    out = tmp_path / "out"
    out.mkdir()
    in_flight = peak = tasks = 0

    class Counting(_Client):
        async def poll_result(self, uuid: str) -> FeatureResult:
            nonlocal in_flight, peak, tasks
            in_flight += 1
            peak = max(peak, in_flight)
            tasks = max(tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0)
            in_flight -= 1
            raise RecordUnknown(f"record {uuid} is not known")

    done = DoneJobs()
    for index in range(200):
        state = JobState(
            f"j{index}", Status.SUCCEEDED, "key", index, outputs=("gone/0.png",), uuid="u"
        )
        done(state, PlannedJob(Job(state.job_id, Feature.INPAINT, InputRef("file", "x"), "p"), "k"))
    refetcher = Refetcher(Counting({}, {}), Store(out), _Gate(), EventBus(), out, concurrency=3)
    report = await refetcher.run(done)
    assert len(report.gone) == 200
    assert peak == 3
    assert tasks <= 3 + 1  # the workers and the test's own task: memory flat in the jobs
