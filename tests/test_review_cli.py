"""``pipeline review``: decisions from the command line and through the served page's API."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.cli.review import (
    add_report_arguments,
    add_review_arguments,
    command_report,
    command_review,
)
from pipeline.layout import REVIEWS_NAME
from pipeline.ledger.decisions import read_decisions
from pipeline.review.server import ReviewApp
from tests.browser.synthetic_run import SyntheticJob, build_run, records


@pytest.fixture
def run(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    build_run(out, [SyntheticJob(f"j{i}") for i in range(4)], side=16)
    return out


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_review_arguments(commands)
    add_report_arguments(commands)
    return parser.parse_args(list(argv))


def test_reject_and_approve_from_the_command_line(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = command_review(parse("review", str(run), "--reject", "j0,j1", "--approve", "j2"))
    assert code == 0 and "3 decisions" in capsys.readouterr().out
    decisions = read_decisions(run)
    key = {r["job_id"]: r["key"] for r in records(run) if r["status"] == "succeeded"}
    assert {j: d.decision for j, d in decisions.items()} == {
        "j0": "rejected",
        "j1": "rejected",
        "j2": "approved",
    }
    assert decisions["j0"].key == key["j0"]


def test_unknown_ids_are_an_error_naming_them(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command_review(parse("review", str(run), "--reject", "j0,nope,gone")) == 2
    err = capsys.readouterr().err
    assert "nope, gone" in err and "j0" not in err.split(":")[-1]
    assert not (run / REVIEWS_NAME).exists()  # nothing recorded when one id is wrong


def test_from_the_pages_export_or_a_list_of_ids(run: Path, tmp_path: Path) -> None:
    exported = tmp_path / "rejected.json"
    exported.write_bytes(orjson.dumps({"rejected": ["j1"], "approved": ["j3"], "note": "n"}))
    assert command_review(parse("review", str(run), "--from", str(exported))) == 0
    listed = tmp_path / "ids.txt"
    listed.write_text("j2\n\n# a comment\n")
    assert command_review(parse("review", str(run), "--from", str(listed))) == 0
    decisions = read_decisions(run)
    assert decisions["j1"].note == "n" and decisions["j3"].decision == "approved"
    assert decisions["j2"].decision == "rejected"


def test_a_missing_ledger_or_file_is_one_line(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command_review(parse("review", str(tmp_path / "none"), "--reject", "a")) == 2
    assert command_report(parse("report", str(tmp_path / "none"))) == 2
    assert command_review(parse("review", str(run), "--from", str(tmp_path / "no.json"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err


async def test_the_served_api_records_decisions_and_serves_only_out(run: Path) -> None:
    async with TestClient(TestServer(ReviewApp(run).app())) as client:
        page = await (await client.get("/")).text()
        assert 'src="static/report.js"' in page
        assert (await client.get("/static/report.js")).status == 200
        data = await (await client.get("/api/data")).json()
        assert data["live"] is True and sum(chunk["n"] for chunk in data["chunks"]) == 4
        chunk_url = data["chunk_url"].replace("{n}", "0")
        chunk = await (await client.get("/" + chunk_url)).json()
        assert {row[0] for row in chunk["rows"]} == {"j0", "j1", "j2", "j3"}
        body = {"decisions": [{"job_id": "j0", "decision": "rejected", "note": "crooked"}]}
        response = await client.post("/api/decisions", json=body)
        assert response.status == 200 and (await response.json()) == {"recorded": 1, "skipped": []}
        bad = {"decisions": [{"job_id": "zzz", "decision": "rejected"}]}
        response = await client.post("/api/decisions", json=bad)
        assert response.status == 400 and "zzz" in await response.text()
        again = await (await client.get("/api/data")).json()
        assert again["decisions"]["j0"][:2] == ["rejected", "crooked"]
        assert again["chunk_url"] == data["chunk_url"]  # the ledger did not move: no new build
        # Thumbnails are made on first request; outputs come from OUT; nothing else does.
        thumb = next(source["thumb"] for source in chunk["sources"] if source.get("thumb"))
        assert (await client.get(f"/.thumbs/{thumb}")).status == 200
        assert (await client.get("/j0/0.png")).status == 200
        for path in ("/ledger.jsonl", "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/.raw/x.png",
                     "/api/chunk/0123abcd/0", "/api/chunk/../../etc/passwd"):  # fmt: skip
            assert (await client.get(path)).status == 404, path


def test_pick_a_variant_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "variants"
    build_run(out, [SyntheticJob("three", n=3), SyntheticJob("one")], side=16)
    args = ("review", str(out), "--pick", "three:2", "--approve", "one,three")
    assert command_review(parse(*args)) == 0
    assert "(0 rejected, 2 approved, 1 picked)" in capsys.readouterr().out
    decisions = read_decisions(out)
    assert decisions["three"].pick == 2 and decisions["three"].decision == "approved"
    assert decisions["one"].pick is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--pick", "three:3"), "three has images 0 to 2: no image 3"),
        (("--pick", "one:0"), "one has 1 image: nothing to pick"),
        (("--pick", "three"), "expected ID:INDEX"),
        (("--pick", "three:x"), "expected ID:INDEX"),
        (("--pick", "three:1,three:2"), "names three twice"),
        (("--pick", "three:1", "--reject", "three"), "both picked and rejected: three"),
        (("--pick", "nope:1"), "unknown job ids"),
    ],
)
def test_a_pick_that_names_no_image_is_refused_and_nothing_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "variants"
    build_run(out, [SyntheticJob("three", n=3), SyntheticJob("one")], side=16)
    assert command_review(parse("review", str(out), *argv)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / REVIEWS_NAME).exists()
