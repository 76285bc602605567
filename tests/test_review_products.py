"""The review page by product: a product's jobs together in the page's order, its summary in
every chunk it spans, each output's check verdicts, the index's counts by check, and the
served page's product decisions and picks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.images.checks import Channel, ImageChecks, checks_from_facts
from pipeline.images.measure import ImageFacts
from pipeline.layout import LEDGER_NAME
from pipeline.ledger.decisions import read_decisions, record_picks
from pipeline.review import page as report_page
from pipeline.review.page import (
    CHECKED,
    FAILS,
    ManifestJob,
    build_payload,
    check_state,
    check_token,
)
from pipeline.review.server import ReviewApp

# Facts that pass every channel, and ones that fail Amazon alone (an off-white border).
PASSING = ImageFacts(
    1200, 1200, 300_000, "png", "RGB",
    provenance="trainedAlgorithmicMedia", border_min=255, border_alpha_min=255, fill=0.9,
    product=(60, 60, 1140, 1140),
)  # fmt: skip
OFF_WHITE = ImageFacts(
    1200, 1200, 300_000, "png", "RGB",
    provenance="trainedAlgorithmicMedia", border_min=247, border_alpha_min=255, fill=0.9,
    product=(60, 60, 1140, 1140),
)  # fmt: skip


def verdict(facts: ImageFacts) -> ImageChecks:
    return checks_from_facts(facts)


def job_lines(
    job_id: str,
    number: int,
    *,
    group: str | None = None,
    outcome: str = "succeeded",
    checks: tuple[ImageFacts, ...] = (PASSING,),
) -> list[bytes]:
    """A job's ledger lines: started (with its group), then its end; outputs need not exist."""
    ts = f"2026-12-01T10:00:{number:02d}.000Z"
    common = {"ts": ts, "job_id": job_id, "key": f"{number:064x}"}
    details = {"feature": "IMAGE_INPAINTER", "image": "/nowhere/x.png", "group": group,
               "parameters": {"prompt": f"shot {number}"}}  # fmt: skip
    lines = [orjson.dumps({**common, "status": "started", "job": details})]
    if outcome == "failed":
        error = {"kind": "bad_request", "message": "no", "http_status": 400}
        lines.append(orjson.dumps({**common, "status": "failed", "error": error}))
    elif outcome == "succeeded":
        outputs = [f"{job_id}/{i}.png" for i in range(len(checks))]
        judged = [orjson.loads(verdict(facts).to_json()) for facts in checks]
        succeeded = {**common, "status": "succeeded", "outputs": outputs, "checks": judged}
        lines.append(orjson.dumps(succeeded))
    return lines


def write_ledger(out: Path, jobs: list[list[bytes]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / LEDGER_NAME).write_bytes(b"".join(line + b"\n" for job in jobs for line in job))
    return out


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """Products interleaved in the ledger, one with a failed job, and two jobs of their own."""
    return write_ledger(
        tmp_path / "out",
        [
            job_lines("chair-1", 1, group="chair"),
            job_lines("lamp-1", 2, group="lamp", checks=(PASSING, OFF_WHITE, PASSING)),
            job_lines("solo-1", 3),
            job_lines("chair-2", 4, group="chair", checks=(OFF_WHITE,)),
            job_lines("lamp-2", 5, group="lamp"),
            job_lines("vase-1", 6, group="vase"),
            job_lines("solo-2", 7, outcome="failed"),
            job_lines("vase-2", 8, group="vase", outcome="failed"),
            job_lines("lamp-3", 9, group="lamp", outcome="started"),
        ],
    )


def column(payload: dict[str, Any], name: str) -> int:
    return list(payload["fields"]).index(name)


def ids(payload: dict[str, Any]) -> list[str]:
    return [row[0] for row in payload["jobs"]]


def products(payload: dict[str, Any]) -> list[str | None]:
    at = column(payload, "product")
    return [
        None if row[at] is None else payload["products"][row[at]]["name"] for row in payload["jobs"]
    ]


def test_a_products_jobs_come_together_where_its_first_job_ranks(catalog: Path) -> None:
    payload, _ = build_payload(catalog, make_thumbs=False)
    # Failed first: solo-2, then the vase (its second angle failed) whole; unfinished: the
    # lamp (one angle still running) whole; the successes: the chair together, then solo-1.
    assert ids(payload) == [
        "solo-2", "vase-1", "vase-2", "lamp-1", "lamp-2", "lamp-3", "chair-1", "chair-2",
        "solo-1",
    ]  # fmt: skip
    assert products(payload) == [
        None, "vase", "vase", "lamp", "lamp", "lamp", "chair", "chair", None,
    ]  # fmt: skip


def test_a_products_summary_counts_its_jobs_states_and_images_checks(catalog: Path) -> None:
    payload, _ = build_payload(catalog, make_thumbs=False)
    summary = {entry["name"]: entry for entry in payload["products"]}
    lamp = summary["lamp"]
    assert (lamp["at"], lamp["n"]) == (3, 3)
    assert lamp["states"] == {"succeeded": 2, "started": 1}
    # Per channel: images passing of those judged (lamp-1 has three, lamp-2 one).
    assert lamp["checks"] == {"amazon": [3, 4], "google": [4, 4], "shopify": [4, 4]}
    assert summary["vase"]["states"] == {"succeeded": 1, "failed": 1}


def test_each_output_carries_its_verdicts_the_reasons_included(catalog: Path) -> None:
    payload, _ = build_payload(catalog, make_thumbs=False)
    at = column(payload, "checks")
    lamp = next(row for row in payload["jobs"] if row[0] == "lamp-1")
    verdicts = [payload["verdicts"][index] for index in lamp[at]]
    assert payload["channels"] == ["amazon", "google", "shopify"]
    assert [v[0] for v in verdicts] == [
        [], [["border_not_white", "border not pure white (min 247)"]], [],
    ]  # fmt: skip
    assert all(v[1] == [] and v[2] == [] for v in verdicts)
    failed = next(row for row in payload["jobs"] if row[0] == "solo-2")
    assert failed[at] is None  # nothing judged


def test_the_index_counts_jobs_by_check_token(catalog: Path) -> None:
    payload, _ = build_payload(catalog, make_thumbs=False)
    (chunk,) = payload["chunks"]
    assert chunk["counts"] == {
        "failed|IMAGE_INPAINTER|": 2,
        "succeeded|IMAGE_INPAINTER|ok": 4,
        "succeeded|IMAGE_INPAINTER|amazon": 2,
        "unfinished|IMAGE_INPAINTER|": 1,
    }


def test_check_tokens() -> None:
    assert check_state(()) == 0 and check_token(0) == ""
    assert check_token(check_state([verdict(PASSING), verdict(PASSING)])) == "ok"
    mixed = check_state([verdict(PASSING), verdict(OFF_WHITE)])
    assert mixed == CHECKED | FAILS[Channel.AMAZON]
    assert check_token(mixed) == "amazon"
    small = ImageFacts(400, 400, 1000, "webp", "RGB")
    assert check_token(check_state([verdict(small)])) == "amazon,google"


def test_a_product_across_a_chunk_boundary_is_whole_in_both_chunks(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_page, "CHUNK_ROWS", 4)
    sink = report_page.MemoryChunks()
    report_page.ReportBuilder(catalog, sink, make_thumbs=False).build()
    first, second, third = sink.chunks
    at = report_page.PRODUCT_COLUMN
    # Positions 3-5 are the lamp: its first job ends chunk 0, the others start chunk 1.
    assert [row[0] for row in first["rows"]][3:] == ["lamp-1"]
    assert first["products"][first["rows"][3][at]] == second["products"][second["rows"][0][at]]
    lamp = second["products"][second["rows"][0][at]]
    assert (lamp["name"], lamp["at"], lamp["n"]) == ("lamp", 3, 3)
    assert [row[0] for row in third["rows"]] == ["solo-1"]


def test_pending_jobs_of_one_group_in_a_row_are_one_product(tmp_path: Path) -> None:
    out = write_ledger(tmp_path / "out", [job_lines("a-1", 1, group="a")])
    manifest: list[ManifestJob] = [
        ("a-1", None, "IMAGE_INPAINTER", "x.png", None, "p", "a"),
        ("b-1", None, "IMAGE_INPAINTER", "x.png", None, "p", "b"),
        ("b-2", None, "IMAGE_INPAINTER", "x.png", None, "p", "b"),
        ("c-1", None, "IMAGE_INPAINTER", "x.png", None, "p"),  # a caller without groups
    ]
    payload, _ = build_payload(out, manifest, make_thumbs=False)
    assert ids(payload) == ["a-1", "b-1", "b-2", "c-1"]
    assert products(payload) == ["a", "b", "b", None]
    b = next(entry for entry in payload["products"] if entry["name"] == "b")
    assert (b["at"], b["n"], b["states"]) == (1, 2, {"pending": 2})
    assert payload["header"]["pending"] == 3


def test_a_standing_pick_and_the_jobs_check_token_are_in_the_index(catalog: Path) -> None:
    record_picks(catalog, [("lamp-1", f"{2:064x}", 1)])
    payload, _ = build_payload(catalog, make_thumbs=False)
    decision, note, _, chunk, group, feature, checks, pick = payload["decisions"]["lamp-1"]
    assert (decision, note, chunk, group, feature) == (
        "approved", "", 0, "succeeded", "IMAGE_INPAINTER",
    )  # fmt: skip
    assert (checks, pick) == ("amazon", 1)


async def test_a_products_decision_records_only_jobs_with_images(catalog: Path) -> None:
    async with TestClient(TestServer(ReviewApp(catalog).app())) as client:
        members = ["lamp-1", "lamp-2", "lamp-3"]
        body = {"product": "lamp", "decisions": [
            {"job_id": job_id, "decision": "approved", "note": "ok"} for job_id in members
        ]}  # fmt: skip
        response = await client.post("/api/decisions", json=body)
        assert response.status == 200
        assert await response.json() == {"recorded": 2, "skipped": ["lamp-3"]}
    decisions = read_decisions(catalog)
    assert sorted(decisions) == ["lamp-1", "lamp-2"]
    assert decisions["lamp-1"].key == f"{2:064x}" and decisions["lamp-1"].note == "ok"


async def test_a_pick_on_the_served_page_is_a_picked_line(catalog: Path) -> None:
    async with TestClient(TestServer(ReviewApp(catalog).app())) as client:
        for job_id, index, message in (
            ("lamp-1", 3, "lamp-1 has images 0 to 2: no image 3"),
            ("chair-1", 0, "chair-1 has 1 image: nothing to pick"),
            ("lamp-3", 0, "lamp-3 has not succeeded (started): no image to pick"),
        ):
            pick = {"job_id": job_id, "decision": "picked", "index": index}
            response = await client.post("/api/decisions", json={"decisions": [pick]})
            assert response.status == 400 and await response.text() == message
        no_index = {"job_id": "lamp-1", "decision": "picked"}
        response = await client.post("/api/decisions", json={"decisions": [no_index]})
        assert response.status == 400 and "index" in await response.text()
        pick = {"job_id": "lamp-1", "decision": "picked", "index": 2, "note": "the warm one"}
        response = await client.post("/api/decisions", json={"decisions": [pick]})
        assert response.status == 200 and (await response.json())["recorded"] == 1
        data = await (await client.get("/api/data")).json()
        assert data["decisions"]["lamp-1"][0] == "approved" and data["decisions"]["lamp-1"][7] == 2
    line = orjson.loads((catalog / "reviews.jsonl").read_bytes().splitlines()[-1])
    assert (line["decision"], line["index"], line["key"]) == ("picked", 2, f"{2:064x}")
    assert read_decisions(catalog)["lamp-1"].pick == 2
