"""The checkpoint and the compact fold: after a kill anywhere, resume sees what the ledger says.

A resume reads ``ledger.checkpoint`` and the ledger lines after its offset; whatever the offset,
wherever the ledger was cut, that must be the state a fold of the whole ledger gives, for every
job. A checkpoint that does not describe the ledger (torn, damaged, foreign, stale) is ignored.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from pipeline.ledger import LEDGER_NAME, LedgerWriter, Status, checkpoint_path, read_ledger
from pipeline.ledger import checkpoint as checkpoint_module
from pipeline.ledger.checkpoint import MAGIC, load_checkpoint, write_checkpoint
from pipeline.ledger.fold import DetailedLedger, LedgerState, ResumeState, apply
from pipeline.ledger.reader import read_state
from pipeline.ledger.schema import Started, Submitted, Succeeded, decode_line
from tests.helpers.ledgers import extras_fields, job_fields, random_ledger

# Two seeds in make test-fast, all six in make test.
SEEDS = [*range(2), *(pytest.param(seed, marks=pytest.mark.slow) for seed in range(2, 6))]
CUTS_PER_LEDGER = 12


def assert_same_state(mine: LedgerState, full: LedgerState | DetailedLedger) -> None:
    """Every job, upload, the few jobs' extras (parts, partial, lost answers), the spend, the
    possibly charged calls and the damage, as a full fold sees them."""
    assert list(mine.jobs) == list(full.jobs)
    for job_id in full.jobs:
        assert job_fields(mine.jobs[job_id]) == job_fields(full.jobs[job_id]), job_id
    assert dict(mine.assets.items()) == dict(full.assets.items())
    assert extras_fields(mine.extras) == extras_fields(full.extras)
    assert totals(mine) == totals(full)
    assert mine.damage.corrupt_lines == full.damage.corrupt_lines
    assert mine.damage.torn_tail == full.damage.torn_tail


def totals(state: LedgerState | DetailedLedger) -> tuple[int, int]:
    """(credits spent, calls possibly charged) over every run, the current one too."""
    if isinstance(state, LedgerState):
        return state.credits_folded, state.possibly_charged_folded
    return state.credits_spent, state.possibly_charged


def checkpoint_at(data: bytes, offset: int, folder: Path) -> Path:
    """A checkpoint of the ledger's first ``offset`` bytes (cut back to a line's end)."""
    prefix = data[: data.rfind(b"\n", 0, offset) + 1]
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / LEDGER_NAME
    ledger.write_bytes(prefix)
    state = read_state(ledger, use_checkpoint=False)
    path = write_checkpoint(state, ledger)
    assert path is not None
    return path


@pytest.mark.parametrize("seed", SEEDS)
def test_checkpoint_and_tail_give_the_full_fold_after_a_kill_anywhere(
    tmp_path: Path, seed: int
) -> None:
    data = random_ledger(tmp_path / "whole.jsonl", seed, jobs=60)
    pick = random.Random(seed)
    for cut_number in range(CUTS_PER_LEDGER):
        cut = pick.randrange(len(data) + 1)  # a kill: the ledger ends anywhere, mid-line too
        folder = tmp_path / f"cut-{cut_number}"
        folder.mkdir()
        ledger = folder / LEDGER_NAME
        ledger.write_bytes(data[:cut])
        full = read_state(ledger, use_checkpoint=False)
        assert_same_state(full, read_ledger(ledger, detailed=True))
        # no checkpoint, then checkpoints of earlier moments, then of this very moment
        for at in (None, 0, pick.randrange(cut + 1), pick.randrange(cut + 1), cut):
            checkpoint_path(ledger).unlink(missing_ok=True)
            if at is not None:
                made = checkpoint_at(data[:cut], at, tmp_path / "made")
                shutil.copy(made, checkpoint_path(ledger))
            resumed = read_state(ledger)
            assert resumed.checkpoint_note == ("none" if at is None else "used")
            assert_same_state(resumed, full)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_writer_keeps_the_checkpoint_as_it_folds_its_own_lines(
    tmp_path: Path, seed: int
) -> None:
    """A run killed at any line (no close), or ending normally, leaves a resumable pair."""
    lines = random_ledger(tmp_path / "source.jsonl", seed, jobs=40).splitlines(keepends=True)
    pick = random.Random(seed)
    for run_number, kill_at in enumerate((pick.randrange(len(lines)), len(lines))):
        out = tmp_path / f"run-{run_number}"
        out.mkdir()
        ledger = out / LEDGER_NAME
        # an earlier run left the first lines (and a torn one: the writer closes it)
        first = pick.randrange(1, len(lines) // 2)
        ledger.write_bytes(b"".join(lines[:first]) + b'{"ts": "2026", "job_id": "torn", "st')
        state = read_state(ledger)
        writer = LedgerWriter(ledger, state=state, checkpoint_every=pick.randrange(3, 9))
        for raw in lines[first:kill_at]:
            record = decode_line(raw)
            if record is None:
                writer.write_line(raw)  # damage a run did not write, but must count alike
            else:
                writer.write(record)
        if kill_at == len(lines):
            writer.close()
        else:  # kill -9: no close; wait for a checkpoint being written, as the kernel would
            assert writer.checkpoints is not None
            if writer.checkpoints._pool is not None:
                writer.checkpoints._pool.shutdown(wait=True)
        assert writer.checkpoints is not None and writer.checkpoints.failure is None
        full = read_state(ledger, use_checkpoint=False)
        assert_same_state(state, full)  # what the run held is what the ledger says
        resumed = read_state(ledger)
        assert resumed.checkpoint_note == "used"
        assert_same_state(resumed, full)
        if kill_at == len(lines):
            assert resumed.tail_lines == 0  # closed: the checkpoint holds every line


def test_a_run_that_only_reads_writes_the_checkpoint_once(tmp_path: Path) -> None:
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, 1, jobs=30)
    state = read_state(ledger)
    assert state.checkpoint_note == "none"
    with LedgerWriter(ledger, state=state, checkpoint_every=5) as writer:
        assert writer.checkpoints is not None
        assert writer.checkpoints.written_count == 1  # the long tail, at once
    assert writer.checkpoints.written_count == 1  # nothing new at close
    again = read_state(ledger)
    assert again.checkpoint_note == "used" and again.tail_lines == 0
    stamp = checkpoint_path(ledger).stat().st_mtime_ns
    with LedgerWriter(ledger, state=again) as writer:
        pass
    assert checkpoint_path(ledger).stat().st_mtime_ns == stamp  # a no-op run rewrites nothing


@pytest.fixture
def checkpointed(tmp_path: Path) -> Path:
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, 7, jobs=50)
    write_checkpoint(read_state(ledger, use_checkpoint=False), ledger)
    assert load_checkpoint(ledger).note == "used"
    return ledger


def _ignored(ledger: Path, why: str) -> None:
    loaded = load_checkpoint(ledger)
    assert loaded.state is None and loaded.note.startswith("ignored") and why in loaded.note
    resumed = read_state(ledger)  # never a traceback: the whole ledger is folded instead
    assert resumed.checkpoint_note == loaded.note
    assert_same_state(resumed, read_state(ledger, use_checkpoint=False))


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9, -5])
def test_a_damaged_checkpoint_is_ignored(checkpointed: Path, where: float) -> None:
    path = checkpoint_path(checkpointed)
    data = bytearray(path.read_bytes())
    at = int(len(data) * where) if where > 0 else len(data) + int(where)
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    _ignored(checkpointed, "")


@pytest.mark.parametrize("keep", [0, 10, len(MAGIC) + 6, 500, -1])
def test_a_torn_checkpoint_is_ignored(checkpointed: Path, keep: int) -> None:
    path = checkpoint_path(checkpointed)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    _ignored(checkpointed, "")


def test_garbage_or_another_format_is_ignored(checkpointed: Path) -> None:
    path = checkpoint_path(checkpointed)
    path.write_bytes(b'{"not": "a checkpoint"}\n')
    _ignored(checkpointed, "not a checkpoint")
    path.write_bytes(MAGIC + b"\x05\x00\x00\x00" + b"\x93\x01\x02\x03\x04")
    _ignored(checkpointed, "")


def test_a_checkpoint_whose_status_codes_mean_other_statuses_is_ignored(
    checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status codes are positions in ``Status``: a version that adds or reorders statuses must
    not read an older checkpoint's codes as its own."""
    reordered = tuple(reversed(checkpoint_module.STATUSES))
    monkeypatch.setattr(checkpoint_module, "STATUSES", reordered)
    assert load_checkpoint(checkpointed).note == "ignored: its statuses are another version's"


def test_a_truncated_ledger_makes_the_checkpoint_stale(checkpointed: Path) -> None:
    data = checkpointed.read_bytes()
    checkpointed.write_bytes(data[: len(data) // 2])
    _ignored(checkpointed, "shorter")


def test_a_ledger_cut_and_regrown_past_the_offset_is_noticed(checkpointed: Path) -> None:
    # A restore from an older backup, then new runs: longer than the offset again, other bytes.
    data = checkpointed.read_bytes()
    half = data[: data.rfind(b"\n", 0, len(data) // 2) + 1]
    other = random_ledger(checkpointed.with_name("other.jsonl"), 99, jobs=80)
    checkpointed.write_bytes(half + other)
    _ignored(checkpointed, "differs")


def test_a_foreign_checkpoint_is_ignored(checkpointed: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / LEDGER_NAME
    other.parent.mkdir()
    random_ledger(other, 8, jobs=70)
    shutil.copy(checkpoint_path(checkpointed), checkpoint_path(other))
    _ignored(other, "")


def test_a_ledger_edited_in_place_is_noticed(checkpointed: Path) -> None:
    data = bytearray(checkpointed.read_bytes())
    near_end = data.rfind(b'"job_id"', 0, len(data) - 200)
    data[near_end + 11] ^= 0x01  # one job id changed by hand, in the bytes before the offset
    checkpointed.write_bytes(bytes(data))
    _ignored(checkpointed, "differs")


def test_an_unreadable_checkpoint_is_ignored(checkpointed: Path) -> None:
    path = checkpoint_path(checkpointed)
    path.unlink()
    path.mkdir()  # a folder where the file should be: cannot be read as one
    _ignored(checkpointed, "")


def test_a_checkpoint_that_cannot_be_written_is_not_an_error(tmp_path: Path) -> None:
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, 3, jobs=20)
    checkpoint_path(ledger).mkdir()  # the rename onto it fails
    state = read_state(ledger)
    with LedgerWriter(ledger, state=state, checkpoint_every=2) as writer:
        writer.write(Started(job_id="new", key="k"))
    assert writer.checkpoints is not None and writer.checkpoints.failure is not None
    assert read_state(ledger).status_of("new", "k") is not None


# -- the compact state answers like the detailed one ---------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_the_compact_state_answers_the_scheduler_and_the_plan_like_the_full_one(
    tmp_path: Path, seed: int
) -> None:
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, seed, jobs=80)
    compact, detailed = read_ledger(ledger), read_ledger(ledger, detailed=True)
    assert_same_state(compact, detailed)
    mine, theirs = compact.resume(), detailed.resume()
    keys = {job_id: job.key for job_id, job in detailed.jobs.items()}
    for job_id, key in [*keys.items(), ("nobody", "k0"), *((j, "other") for j in keys)]:
        assert compact.status_of(job_id, key) == detailed.status_of(job_id, key)
        a, b = compact.state_of(job_id, key), detailed.state_of(job_id, key)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert job_fields(a) == job_fields(b)
        assert mine.status_of(job_id, key) == theirs.status_of(job_id, key)
        assert mine.pending_for(job_id, key) == theirs.pending_for(job_id, key)
        assert mine.parts_for(job_id, key) == theirs.parts_for(job_id, key)
        assert mine.partial_for(job_id, key) == theirs.partial_for(job_id, key)
        assert mine.lost_answers(job_id, key) == theirs.lost_answers(job_id, key)
        assert compact.output_records(job_id) == detailed.output_records(job_id)
        assert compact.missing_of(job_id) == detailed.missing_of(job_id)
    for digest in [*detailed.assets, "d0", "missing", "f" * 64]:
        assert mine.asset_for(digest) == theirs.asset_for(digest)
    # a run's own uploads and forgotten ones stay in its copy, the same way
    some = next(iter(detailed.assets), "d1")
    for resume in (mine, theirs):
        resume.forget_asset(some)
        resume.remember_asset("e" * 64, "a/new.png")
    for digest in (some, "e" * 64):
        assert mine.asset_for(digest) == theirs.asset_for(digest)
    assert some not in compact.assets or compact.assets[some]  # the folded state is untouched


def test_a_done_job_costs_under_100_bytes(tmp_path: Path) -> None:
    """The columns of a done job with a sha256 key, a uuid and one output by the store's rule."""
    ledger = tmp_path / LEDGER_NAME
    writer = LedgerWriter(ledger)
    jobs = 3000
    for number in range(jobs):
        job_id, key = f"sku-{number:07d}", f"{number:064x}"
        uuid = f"{number:08x}-0000-4000-8000-000000000000"
        writer.write(Started(job_id=job_id, key=key))
        writer.write(Submitted(job_id=job_id, key=key, uuid=uuid, result_paths=("r/0.png",)))
        writer.write(Succeeded(job_id=job_id, key=key, outputs=(f"{job_id}/0.png",), uuid=uuid))
    writer.close()
    state = read_state(ledger)
    table = state.table
    assert not (table.key_text or table.uuid_text or table.outputs_text or table.pending)
    assert table.memory() / jobs < 100
    job = state.jobs["sku-0000042"]
    assert job.outputs == ("sku-0000042/0.png",) and job.uuid.startswith("0000002a-")


def test_resume_state_keeps_the_run_uploads_apart(tmp_path: Path) -> None:
    resume = ResumeState()
    assert resume.asset_for("d") is None
    resume.remember_asset("d", "a/1.png")
    assert resume.asset_for("d") is not None
    resume.forget_asset("d")
    assert resume.asset_for("d") is None


def test_a_temporary_a_killed_run_left_is_replaced(tmp_path: Path) -> None:
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, 2, jobs=5)
    left = tmp_path / ".ledger.checkpoint.tmp"
    left.write_bytes(b"half")
    write_checkpoint(read_state(ledger, use_checkpoint=False), ledger)
    assert not left.exists() and read_state(ledger).checkpoint_note == "used"


def test_an_id_no_utf8_can_hold_is_never_a_traceback(tmp_path: Path) -> None:
    """A hand-edited line with a lone surrogate is damage (the JSON decoder refuses it), and
    asking about such an id (from anywhere) finds nothing instead of raising."""
    ledger = tmp_path / LEDGER_NAME
    ledger.write_bytes(b'{"ts": "t", "job_id": "odd-\\ud800", "status": "started", "key": "k"}\n')
    state = read_state(ledger)
    assert state.damage.corrupt_lines == [1]
    assert state.status_of("odd-\ud800", "k") is None
    state.job_for("odd-\ud800", Status.STARTED, "k")
    write_checkpoint(state, ledger)
    assert "odd-\ud800" in read_state(ledger).jobs


def test_uuids_times_and_credits_are_read_on_first_use_even_after_a_rewrite(
    tmp_path: Path,
) -> None:
    """A nightly no-op never reads a job's uuid, time or credits: a checkpoint's are read on
    first use, from the checkpoint as it was loaded (a run may have replaced it since)."""
    ledger = tmp_path / LEDGER_NAME
    random_ledger(ledger, 7, jobs=40)
    write_checkpoint(read_state(ledger, use_checkpoint=False), ledger)
    loaded = load_checkpoint(ledger).state
    assert loaded is not None
    table = loaded.table
    assert table._uuids is None and table._credits is None and table._updated is None
    other = tmp_path / "other" / LEDGER_NAME
    other.parent.mkdir()
    random_ledger(other, 8, jobs=40)
    write_checkpoint(read_state(other, use_checkpoint=False), other)
    os.replace(checkpoint_path(other), checkpoint_path(ledger))  # as a run replaces it
    assert_same_state(loaded, read_state(ledger, use_checkpoint=False))
    assert table._uuids is not None and not table._later


def test_a_column_read_on_first_use_that_changed_in_place_is_an_error(
    checkpointed: Path,
) -> None:
    loaded = load_checkpoint(checkpointed).state
    assert loaded is not None
    path = checkpoint_path(checkpointed)
    size = path.stat().st_size
    with path.open("r+b") as handle:  # in place: the very bytes the state reads from
        handle.seek(len(MAGIC))
        handle.write(b"\xff" * (size - len(MAGIC)))
    with pytest.raises(OSError, match="changed while the run read it"):
        _ = loaded.table.uuids


def test_a_fold_kept_without_uuids_reads_none_and_is_never_a_checkpoint(tmp_path: Path) -> None:
    data = random_ledger(tmp_path / "ledger.jsonl", 3, jobs=20)
    (tmp_path / LEDGER_NAME).write_bytes(data)
    whole = read_state(tmp_path / LEDGER_NAME, use_checkpoint=False)
    lean = LedgerState(uuids=False)
    for line in data.splitlines(keepends=True):
        record = decode_line(line)
        if record is not None:
            apply(lean, record)
    assert any(job.uuid for job in whole.jobs.values())
    assert [job.uuid for job in lean.jobs.values()] == [""] * len(whole.jobs)
    assert [job.status for job in lean.jobs.values()] == [j.status for j in whole.jobs.values()]
    assert lean.table.memory() < whole.table.memory()
    with pytest.raises(ValueError, match="without record uuids"):
        write_checkpoint(lean, tmp_path / LEDGER_NAME)
