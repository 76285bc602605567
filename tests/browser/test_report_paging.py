"""The paged review page in headless Chromium: 300 jobs in chunks of 40 (as a million are in
chunks of 2,000). Pages walk every job in the page's order, filters count and show matches on
every page, a search finds jobs in the last chunks, a page loads only the chunks it shows, and
the served page pages the same way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from pipeline.ledger import LEDGER_NAME
from pipeline.review import page as report_page
from pipeline.review.page import write_report
from tests.browser.playwright_helpers import served, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

JOBS = 300
CHUNK_ROWS = 40
PAGE_SIZE = 60  # the page's own constant (report.js)
WALNUT = (17, 250, 299)  # the only jobs whose prompt says "walnut"


def _outcome(number: int) -> str:
    if number % 50 == 7:
        return "failed"
    if number % 97 == 3:
        return "started"  # interrupted
    return "succeeded"


def _feature(number: int) -> str:
    return "BACKGROUND_REPLACER" if number % 2 else "IMAGE_INPAINTER"


def _id(number: int) -> str:
    return f"sku-{number:04d}"


def expected(outcome: str | None = None, feature: str | None = None) -> list[str]:
    """Job ids in the page's order (failed, unfinished, succeeded; ledger order within)."""
    rank = {"failed": 0, "started": 1, "succeeded": 2}
    numbers = sorted(range(JOBS), key=lambda n: (rank[_outcome(n)], n))
    return [
        _id(n)
        for n in numbers
        if (outcome is None or _outcome(n) == outcome)
        and (feature is None or _feature(n) == feature)
    ]


@pytest.fixture(scope="module")
def paged_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("paged") / "out"
    out.mkdir()
    source = out.parent / "source.png"
    Image.new("RGB", (48, 48), (200, 180, 150)).save(source)
    output = out.parent / "output.png"
    Image.new("RGB", (48, 48), (90, 120, 200)).save(output)
    lines: list[dict[str, Any]] = []
    for number in range(JOBS):
        job_id, key = _id(number), f"{number:064x}"
        ts = f"2026-12-01T10:{number // 60:02d}:{number % 60:02d}.000Z"
        prompt = f"studio shot {number}" + (" on walnut" if number in WALNUT else "")
        details = {"feature": _feature(number), "image": str(source),
                   "parameters": {"prompt": prompt}}  # fmt: skip
        lines.append({"ts": ts, "job_id": job_id, "status": "started", "key": key,
                      "job": details})  # fmt: skip
        outcome = _outcome(number)
        if outcome == "failed":
            error = {"kind": "bad_request", "message": "rejected", "http_status": 400}
            lines.append({"ts": ts, "job_id": job_id, "status": "failed", "key": key,
                          "error": error, "attempts": 1})  # fmt: skip
        elif outcome == "succeeded":
            (out / job_id).mkdir()
            os.link(output, out / job_id / "0.png")
            lines.append({"ts": ts, "job_id": job_id, "status": "succeeded", "key": key,
                          "outputs": [f"{job_id}/0.png"], "attempts": 1})  # fmt: skip
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_page, "CHUNK_ROWS", CHUNK_ROWS)
        write_report(out)
    yield out


def shown_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("article.card", "(cards) => cards.map((c) => c.dataset.jobId)")


def open_page(page: Any, out: Path, hash_: str = "") -> None:
    page.goto((out / "report.html").as_uri() + hash_)
    wait_ready(page)
    settled(page)


def recording_chunks(page: Any) -> set[str]:
    """The chunk files the page asks for from now on (filled in as it runs)."""
    loaded: set[str] = set()

    def note(request: Any) -> None:
        if "/report-data/" in request.url:
            loaded.add(request.url.rpartition("/")[2])

    page.on("request", note)
    return loaded


def settled(page: Any) -> None:
    """The page drawn and every match counted (a search reads on after drawing)."""
    page.wait_for_function(
        "() => !document.body.dataset.busy"
        " && !document.querySelector('#count').textContent.includes('searching')"
    )


def walk(page: Any) -> list[str]:
    """Every card of every page, clicking "next" until it is disabled."""
    settled(page)
    seen = shown_ids(page)
    while not page.is_disabled("#next"):
        page.click("#next")
        settled(page)
        seen += shown_ids(page)
    return seen


def test_the_pages_walk_every_job_in_order_loading_only_what_they_show(
    page: Any, paged_run: Path
) -> None:
    loaded = recording_chunks(page)
    open_page(page, paged_run)
    assert shown_ids(page) == expected()[:PAGE_SIZE]
    assert loaded == {"0.js", "1.js"}  # 60 cards: the first two chunks of 40
    assert page.text_content("#page-label") == "page 1 of 5"
    assert page.text_content("#count").startswith("showing 1–60 of 300 jobs")
    assert walk(page) == expected()
    assert page.evaluate("location.hash") == "#page=5"


def test_a_filter_counts_its_matches_on_every_page_from_the_index(
    page: Any, paged_run: Path
) -> None:
    open_page(page, paged_run)
    page.select_option("#feature", "BACKGROUND_REPLACER")
    settled(page)
    wanted = expected(feature="BACKGROUND_REPLACER")
    assert page.text_content("#count").startswith(f"showing 1–60 of {len(wanted)} matching")
    assert walk(page) == wanted
    page.click('#status button[data-status="failed"]')  # resets to page 1, both filters apply
    settled(page)
    assert shown_ids(page) == expected("failed", "BACKGROUND_REPLACER")


def test_a_page_in_the_hash_opens_there(page: Any, paged_run: Path) -> None:
    open_page(page, paged_run, "#status=succeeded&page=2")
    assert shown_ids(page) == expected("succeeded")[PAGE_SIZE : 2 * PAGE_SIZE]
    assert page.get_attribute('#status button[data-status="succeeded"]', "aria-pressed") == "true"
    assert page.text_content("#page-label").startswith("page 2 of ")


def test_a_search_finds_jobs_in_the_last_chunks(page: Any, paged_run: Path) -> None:
    open_page(page, paged_run, "#q=walnut")
    assert shown_ids(page) == [_id(n) for n in WALNUT]  # all succeeded: ledger order
    assert page.text_content("#count").startswith("showing 1–3 of 3 matching")
    assert page.is_hidden("#pager")


def test_a_decision_filters_on_every_page(page: Any, paged_run: Path) -> None:
    open_page(page, paged_run, "#page=4")
    target = shown_ids(page)[5]
    page.click(f'article.card[data-job-id="{target}"] .decide .reject')
    assert page.text_content("#rejected-count") == "1"
    page.select_option("#decision", "rejected")
    settled(page)
    assert shown_ids(page) == [target]
    page.select_option("#decision", "none")
    settled(page)
    assert page.text_content("#count").startswith(f"showing 1–60 of {JOBS - 1} matching")
    assert target not in walk(page)


def test_the_served_page_pages_the_same_way(page: Any, paged_run: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_page, "CHUNK_ROWS", CHUNK_ROWS)
        with served(paged_run) as url:
            page.goto(url + "#feature=IMAGE_INPAINTER")
            wait_ready(page)
            assert walk(page) == expected(feature="IMAGE_INPAINTER")
            page.goto(url + "#q=walnut")
            page.reload()
            wait_ready(page)
            settled(page)
            assert shown_ids(page) == [_id(n) for n in WALNUT]
