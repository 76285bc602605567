"""The static review page by product, paged: 151 jobs (one of its own, then products of three)
in chunks of 40, so products are cut by a chunk boundary and by a page boundary and must
still show as one; the check filter counts from the index; a product's header decides on the
static page as a job's buttons do (kept in the browser, exported as JSON); a recorded pick
shows read-only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.ledger.decisions import record_picks
from pipeline.review import page as report_page
from pipeline.review.page import write_report
from tests.browser.playwright_helpers import wait_ready
from tests.test_review_products import OFF_WHITE, PASSING, job_lines, write_ledger

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PRODUCTS = 50
CHUNK_ROWS = 40
PICKED = "p-007-b"  # the job with three variants, its second one picked


def job_id(product: int, angle: int) -> str:
    return f"p-{product:03d}-{'abc'[angle]}"


def fails_amazon(product: int, angle: int) -> bool:
    return (product * 3 + angle) % 5 == 0


@pytest.fixture(scope="module")
def products_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    jobs = [job_lines("solo", 0)]
    for product in range(PRODUCTS):
        for angle in range(3):
            name = job_id(product, angle)
            facts = OFF_WHITE if fails_amazon(product, angle) else PASSING
            checks = (PASSING, facts, PASSING) if name == PICKED else (facts,)
            number = 1 + product * 3 + angle
            jobs.append(job_lines(name, number % 60, group=f"p-{product:03d}", checks=checks))
    out = write_ledger(tmp_path_factory.mktemp("products") / "out", jobs)
    number = 1 + 7 * 3 + 1
    record_picks(out, [(PICKED, f"{number % 60:064x}", 1)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_page, "CHUNK_ROWS", CHUNK_ROWS)
        write_report(out)
    yield out


def settled(page: Any) -> None:
    page.wait_for_function("() => !document.body.dataset.busy")


def kept_in_the_browser(page: Any) -> tuple[str, str]:
    """The key and value the static page keeps its decisions under in ``localStorage``, read
    in the page that wrote them."""
    kept = page.evaluate(
        """() => {
          const key = Object.keys(localStorage)
            .find((k) => k.startsWith('pipeline-report:decisions:'));
          return key ? [key, localStorage.getItem(key)] : null;
        }"""
    )
    assert kept is not None, "the static page kept no decisions in this browser"
    return kept[0], kept[1]


def reopened(page: Any, kept: tuple[str, str]) -> Any:
    """The report opened again in this browser, holding what the first page kept.

    Chromium hands a page's ``localStorage`` writes to its storage service on its own time, and
    twice under CI load a reload (and another page, for 30 s) read none of them. What this
    test owns is that the page reads back what it wrote, so the new page is given that value
    before its script runs."""
    key, value = kept
    url = page.url
    other = page.context.new_page()
    other.add_init_script(script=f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)});")
    page.close()
    other.goto(url)
    wait_ready(other)
    settled(other)
    return other


def rejected_count(page: Any, expected: str) -> None:
    """Until the page's count of rejected jobs reads ``expected`` (a click decides async)."""
    page.wait_for_function(
        "(n) => document.getElementById('rejected-count').innerText === n", arg=expected
    )


def grid_items(page: Any) -> list[str]:
    """The grid in order: "# name" for a product header, a job id for a card."""
    return page.eval_on_selector_all(
        "#grid > *",
        "(items) => items.map((n) => n.dataset.product ? '# ' + n.dataset.product"
        " : n.dataset.jobId)",
    )


def open_page(page: Any, out: Path) -> None:
    page.goto((out / "report.html").as_uri())
    wait_ready(page)
    settled(page)


def test_products_cut_by_chunks_and_pages_show_as_one(page: Any, products_run: Path) -> None:
    open_page(page, products_run)
    first = grid_items(page)
    # solo, then products 0-19: product 19 is at positions 58-60, cut by the page's end.
    assert first[:5] == ["solo", "# p-000", "p-000-a", "p-000-b", "p-000-c"]
    heads = [item for item in first if item.startswith("# ")]
    assert heads == [f"# p-{k:03d}" for k in range(20)]  # one header each, none twice
    assert first[-3:] == ["# p-019", "p-019-a", "p-019-b"]
    page.click("#next")
    settled(page)
    second = grid_items(page)
    assert second[:2] == ["# p-019", "p-019-c"]  # the rest of product 19, under its header
    continued = page.locator("#grid > .product-head").first
    assert "3 jobs · continued" in continued.inner_text()
    # Product 26 spans positions 79-81, chunks 1 and 2: one header, counting all three.
    assert second.count("# p-026") == 1
    head = page.locator('.product-head[data-product="p-026"]')
    assert "3 jobs" in head.inner_text() and "3 succeeded" in head.inner_text()
    passing = 3 - sum(fails_amazon(26, angle) for angle in range(3))
    assert head.locator('.badge[data-channel="amazon"]').inner_text() == f"amazon {passing}/3 pass"


def test_the_check_filter_counts_on_every_page_from_the_index(
    page: Any, products_run: Path
) -> None:
    failing = [
        job_id(product, angle)
        for product in range(PRODUCTS)
        for angle in range(3)
        if fails_amazon(product, angle)
    ]
    open_page(page, products_run)
    label = page.locator('#check option[value="fails:amazon"]').inner_text()
    assert label == f"fails amazon {len(failing)}"
    assert page.locator('#check option[value="passes"]').inner_text() == (
        f"passes all {PRODUCTS * 3 + 1 - len(failing)}"
    )
    page.select_option("#check", "fails:amazon")
    settled(page)
    shown = page.eval_on_selector_all("article.card", "(cs) => cs.map((c) => c.dataset.jobId)")
    assert shown == failing  # fewer than a page: every match, in the page's order
    assert f"of {len(failing)} matching" in page.locator("#count").inner_text()
    assert page.evaluate("location.hash") == "#check=fails%3Aamazon"


def test_a_recorded_pick_shows_read_only(page: Any, products_run: Path) -> None:
    open_page(page, products_run)
    card = page.locator(f'article.card[data-job-id="{PICKED}"]')
    assert card.locator("figure.picked").get_attribute("data-index") == "1"
    assert "★ picked" in (card.text_content() or "")
    assert page.locator(".pick").count() == 0  # the static page cannot record a pick
    assert card.locator(".approve").get_attribute("aria-pressed") == "true"


def test_a_products_header_decides_in_the_browser_and_exports(
    page: Any, products_run: Path
) -> None:
    open_page(page, products_run)
    head = page.locator('.product-head[data-product="p-003"]')
    head.locator(".product-decide .reject").click()
    settled(page)
    rejected_count(page, "3")
    for angle in range(3):
        card = page.locator(f'article.card[data-job-id="{job_id(3, angle)}"]')
        assert card.locator(".reject").get_attribute("aria-pressed") == "true"
    with page.expect_download() as download:
        page.click("#export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert sorted(exported["rejected"]) == [job_id(3, angle) for angle in range(3)]
    key, value = kept_in_the_browser(page)
    assert sorted(json.loads(value)) == [job_id(3, angle) for angle in range(3)]
    again = reopened(page, (key, value))  # kept in this browser
    rejected_count(again, "3")
    again.locator('.product-head[data-product="p-003"] .product-decide .reject').click()
    rejected_count(again, "0")  # the same decision again takes it back, as a job's button does
    assert json.loads(kept_in_the_browser(again)[1]) == {}
