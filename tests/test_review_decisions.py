"""``reviews.jsonl``: append-only decisions, latest per job, bound to the content key."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import orjson
import pytest

from pipeline.layout import REVIEWS_NAME
from pipeline.ledger.decisions import (
    Decision,
    read_decisions,
    record_decisions,
    record_picks,
    rejected_for,
    standing,
)


def test_latest_line_per_job_wins(tmp_path: Path) -> None:
    record_decisions(tmp_path, [("a", "k1", "rejected"), ("b", "k2", "approved")], "dull", "t1")
    record_decisions(tmp_path, [("a", "k1", "approved")], ts="t2")
    decisions = read_decisions(tmp_path)
    assert decisions["a"].decision == "approved" and decisions["a"].ts == "t2"
    assert (decisions["b"].decision, decisions["b"].note, decisions["b"].key) == (
        "approved",
        "dull",
        "k2",
    )
    lines = (tmp_path / REVIEWS_NAME).read_bytes().splitlines()
    assert [orjson.loads(line)["job_id"] for line in lines] == ["a", "b", "a"]  # never rewritten
    assert set(orjson.loads(lines[0])) == {"ts", "job_id", "key", "decision", "note"}


def test_a_rejection_applies_only_to_the_content_it_was_made_for(tmp_path: Path) -> None:
    record_decisions(tmp_path, [("a", "old-key", "rejected")])
    decisions = read_decisions(tmp_path)
    assert rejected_for(decisions, "a", "old-key")
    assert not rejected_for(decisions, "a", "new-key")  # the job changed since: not rejected
    assert not rejected_for(decisions, "b", "old-key")


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    record_decisions(tmp_path, [("a", "k", "rejected")])
    with (tmp_path / REVIEWS_NAME).open("ab") as file:
        file.write(b'[1]\n{"job_id": "b", "decision": "maybe"}\n{"job_id": "c", "deci')
    assert set(read_decisions(tmp_path)) == {"a"}
    assert read_decisions(tmp_path / "nowhere") == {}


def test_an_unknown_decision_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="approved, rejected"):
        record_decisions(tmp_path, [("a", "k", "rejected"), ("b", "k", "meh")])
    assert not (tmp_path / REVIEWS_NAME).exists()


def test_writers_at_once_never_tear_a_line(tmp_path: Path) -> None:
    """Appends from several writers (the page, the CLI) land as whole lines."""

    def write(prefix: str) -> None:
        for i in range(200):
            record_decisions(tmp_path, [(f"{prefix}{i}", "k" * 300, "rejected")], note="x" * 500)

    threads = [threading.Thread(target=write, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / REVIEWS_NAME).read_bytes().splitlines()
    assert len(lines) == 800 and all(orjson.loads(line)["key"] == "k" * 300 for line in lines)
    assert len(read_decisions(tmp_path)) == 800
    assert os.stat(tmp_path / REVIEWS_NAME).st_size == sum(len(line) + 1 for line in lines)


def test_a_later_run_consumes_a_rejection_but_not_an_approval() -> None:
    rejection = Decision("a", "k", "rejected", "", "2026-01-02T00:00:00+00:00")
    approval = Decision("a", "k", "approved", "", "2026-01-02T00:00:00+00:00")
    before, after = "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"
    assert standing(rejection, "k", before) is rejection  # the job has not run since
    assert standing(rejection, "k", after) is None  # the redo ran: its images are new
    assert standing(rejection, "k", "") is rejection  # no ledger line: a pending job
    assert standing(approval, "k", after) is approval
    assert standing(approval, "other", before) is None  # another content


# -- picks ----------------------------------------------------------------------------------------


def test_a_pick_approves_the_job_and_names_its_image(tmp_path: Path) -> None:
    record_picks(tmp_path, [("a", "k", 2)], "the blue one", "t1")
    line = orjson.loads((tmp_path / REVIEWS_NAME).read_bytes())
    assert (line["decision"], line["index"]) == ("picked", 2)  # as the file says it
    decision = read_decisions(tmp_path)["a"]
    assert (decision.decision, decision.pick, decision.note) == ("approved", 2, "the blue one")
    assert standing(decision, "k") is decision  # it holds for its content, like an approval


def test_a_later_approval_keeps_the_pick_and_a_rejection_or_new_content_drops_it(
    tmp_path: Path,
) -> None:
    record_picks(tmp_path, [("kept", "k", 1), ("dropped", "k", 1), ("changed", "k", 1)], ts="t1")
    record_decisions(tmp_path, [("kept", "k", "approved")], ts="t2")
    record_decisions(tmp_path, [("dropped", "k", "rejected")], ts="t2")
    record_decisions(tmp_path, [("changed", "k2", "approved")], ts="t2")
    decisions = read_decisions(tmp_path)
    assert decisions["kept"].pick == 1 and decisions["kept"].ts == "t2"
    assert decisions["dropped"].pick is None and decisions["dropped"].decision == "rejected"
    assert decisions["changed"].pick is None  # made for other content
    record_picks(tmp_path, [("kept", "k", 0)], ts="t3")
    assert read_decisions(tmp_path)["kept"].pick == 0  # a new pick replaces it


def test_a_pick_line_without_a_usable_index_is_skipped(tmp_path: Path) -> None:
    with (tmp_path / REVIEWS_NAME).open("ab") as file:
        for index in ('"2"', "-1", "true", "null"):
            file.write(
                b'{"job_id": "a", "key": "k", "decision": "picked", "index": %s}\n' % index.encode()
            )
    assert read_decisions(tmp_path) == {}
    with pytest.raises(ValueError, match="index"):
        record_picks(tmp_path, [("a", "k", -1)])
