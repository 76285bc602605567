"""The review page in a real headless Chromium through Playwright: the static report (grid,
filters, header, lightbox, exported decisions) and the served page (approve, reject, bulk
reject of a filter, decisions after a reload and in reviews.jsonl).

Expectations are read from the run folder's ledger and files, not from how the folder was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.cli.review import add_review_arguments, command_review
from pipeline.layout import LEDGER_NAME, REVIEWS_NAME
from pipeline.ledger.decisions import read_decisions
from pipeline.review.page import write_report
from pipeline.review.view import read_ledger_view
from tests.browser.playwright_helpers import served, wait_ready
from tests.browser.synthetic_run import SyntheticJob, build_run
from tests.helpers.e2e import QUICK_POLLS, REPO, spawn_cli, states
from tests.helpers.emulator import emulator_thread

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of jobs/demo.yaml: the CLI as a subprocess against the emulator.

    The emulator answers 30% of feature calls with a FAILED record (seeded: of the demo's seven
    calls in order, its two-image job's bought one call per image, the third) and the run allows
    one attempt, so one job of the six fails and the failed-only filter has something to show.
    """
    out = tmp_path_factory.mktemp("demo-run") / "out"
    args = ["run", str(REPO / "jobs" / "demo.yaml"), "--out", str(out), "--no-progress"]
    args += ["--max-attempts", "1", "--concurrency", "1", "--rpm", "6000"]
    args += ["--config", str(QUICK_POLLS)]
    with emulator_thread(rate_failed=0.3, seed=13) as emulator:
        process = spawn_cli(args, emulator.env)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr.decode()  # finished, one job failed
    assert b"report.html" in stdout  # the run wrote the page itself
    assert sorted(states(out).values()).count("failed") == 1
    return out


def expected_jobs(out: Path) -> dict[str, str]:
    return {job.job_id: job.status for job in read_ledger_view(out / LEDGER_NAME).jobs.values()}


def expected_images(out: Path) -> int:
    total = 0
    for job in read_ledger_view(out / LEDGER_NAME).jobs.values():
        total += Path(str(job.job.get("image") or "")).is_file()
        total += sum((out / output).is_file() for output in job.outputs)
    return total


def open_report(page: Any, out: Path, hash_: str = "") -> None:
    page.goto((out / "report.html").as_uri() + hash_)
    wait_ready(page)


def cards(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "article.card",
        """(cards) => cards.map((card) => ({id: card.dataset.jobId, status: card.dataset.status,
             images: [...card.querySelectorAll("img")].map((img) => img.getAttribute("src"))}))""",
    )


def test_grid_shows_every_job_and_its_images(page: Any, run_out: Path) -> None:
    open_report(page, run_out)
    shown = cards(page)
    jobs = expected_jobs(run_out)
    assert {card["id"]: card["status"] for card in shown} == jobs
    sources = [src for card in shown for src in card["images"]]
    assert len(sources) == expected_images(run_out)
    assert all(not src.startswith(("/", "file:", "http")) for src in sources)
    failed = sum(1 for status in jobs.values() if status == "failed")
    assert [card["status"] for card in shown[:failed]] == ["failed"] * failed


def test_the_header_is_drawn_from_the_payload(page: Any, run_out: Path) -> None:
    open_report(page, run_out)
    tiles = page.eval_on_selector_all(
        ".tile:not(.chart-tile)",
        "(tiles) => Object.fromEntries(tiles.map((t) => [t.querySelector('.tile-label')"
        ".textContent, t.querySelector('.tile-value').textContent]))",
    )
    jobs = expected_jobs(run_out)
    assert tiles["Succeeded"] == str(sum(s == "succeeded" for s in jobs.values()))
    assert tiles["Failed"] == "1"
    assert page.locator("svg.chart polyline.ok").count() == 1
    assert page.locator("h1").text_content() == "demo"


def test_failed_filter_applies_from_the_url_hash(page: Any, run_out: Path) -> None:
    open_report(page, run_out, "#failed")
    failed = {job for job, status in expected_jobs(run_out).items() if status == "failed"}
    assert {card["id"] for card in cards(page)} == failed
    assert page.get_attribute('#status button[data-status="failed"]', "aria-pressed") == "true"


def test_filters_by_clicking(page: Any, run_out: Path) -> None:
    open_report(page, run_out)
    page.click('#status button[data-status="failed"]')
    assert {card["status"] for card in cards(page)} == {"failed"}
    page.click('#status button[data-status="all"]')
    page.select_option("#feature", "IMAGE_INPAINTER")
    chips = page.eval_on_selector_all(
        "article.card .chip:first-of-type", "(c) => c.map((x) => x.textContent)"
    )
    assert chips and set(chips) == {"inpaint"}
    assert page.evaluate("location.hash") == "#feature=IMAGE_INPAINTER"


def test_decisions_export_from_the_static_page_and_record_with_from(
    page: Any, run_out: Path, tmp_path: Path
) -> None:
    open_report(page, run_out)
    picked = [card["id"] for card in cards(page)[1:3]]
    for job_id in picked:
        page.click(f'article.card[data-job-id="{job_id}"] .decide .reject')
    assert page.text_content("#rejected-count") == "2"
    assert page.input_value("#rejected-list") == "\n".join(picked)
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "rejected.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text())["rejected"] == picked

    folder = tmp_path / "copy"  # record into a copy, so the module's run stays undecided
    folder.mkdir()
    (folder / LEDGER_NAME).write_bytes((run_out / LEDGER_NAME).read_bytes())
    import argparse

    parser = argparse.ArgumentParser()
    add_review_arguments(parser.add_subparsers(dest="command"))
    assert command_review(parser.parse_args(["review", str(folder), "--from", str(exported)])) == 0
    assert sorted(read_decisions(folder)) == sorted(picked)


def test_lightbox_shows_the_full_size_output(page: Any, run_out: Path) -> None:
    open_report(page, run_out)
    card = page.locator('article.card[data-status="succeeded"]').first
    job_id = card.get_attribute("data-job-id")
    card.locator(".outputs .frame").first.click()
    page.wait_for_function("document.getElementById('lightbox-img').naturalWidth > 0")
    src = page.get_attribute("#lightbox-img", "src")
    width = page.evaluate("document.getElementById('lightbox-img').naturalWidth")
    output = next((run_out / job_id).glob("0.*"))
    assert src == f"{job_id}/{output.name}"  # relative: the folder can move
    assert width == Image.open(output).width
    page.keyboard.press("Escape")
    assert "open" not in (page.get_attribute("#lightbox", "class") or "")


def test_hostile_text_is_shown_as_text(page: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_run(out, [SyntheticJob("evil-<b>id</b>", prompt=HOSTILE, outcome="failed")], side=32)
    write_report(out)
    open_report(page, out)
    assert page.text_content("article.card .prompt") == HOSTILE
    assert page.locator("article.card b:text('id')").count() == 0
    assert [card["id"] for card in cards(page)] == ["evil-<b>id</b>"]


def test_screenshot_renders(page: Any, run_out: Path, tmp_path: Path) -> None:
    open_report(page, run_out)
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 200  # thumbnails and text, not a blank page


# -- the served page ----------------------------------------------------------------------------


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    jobs = [SyntheticJob(f"chair-{i}") for i in range(3)]
    jobs += [SyntheticJob(f"lamp-{i}", product="lamp", prompt="a lamp") for i in range(3)]
    build_run(out, jobs, side=24)
    return out


def decided(out: Path) -> dict[str, tuple[str, str]]:
    return {job: (d.decision, d.note) for job, d in read_decisions(out).items()}


def test_approve_and_reject_on_the_served_page_survive_a_reload(page: Any, small_run: Path) -> None:
    with served(small_run) as url:
        page.goto(url)
        wait_ready(page)
        page.fill("#note", "scratched leg")
        page.click('article.card[data-job-id="chair-0"] .decide .reject')
        page.wait_for_selector("#live-status:text('saved 1')")
        page.fill("#note", "")
        page.click('article.card[data-job-id="chair-1"] .decide .approve')
        page.wait_for_selector("#live-status:text('saved 1')")
        assert decided(small_run) == {
            "chair-0": ("rejected", "scratched leg"),
            "chair-1": ("approved", ""),
        }
        page.reload()
        wait_ready(page)
        rejected = page.locator('article.card[data-job-id="chair-0"]')
        assert "rejected" in (rejected.get_attribute("class") or "")
        assert page.text_content('article.card[data-job-id="chair-0"] .decision-note') == (
            "rejected: scratched leg"
        )
        approved = page.get_attribute(
            'article.card[data-job-id="chair-1"] .decide .approve', "aria-pressed"
        )
        assert approved == "true"
        assert page.text_content("#rejected-count") == "1"


def test_bulk_reject_of_a_filter(page: Any, small_run: Path) -> None:
    with served(small_run) as url:
        page.goto(url + "#q=lamp")
        wait_ready(page)
        assert {card["id"] for card in cards(page)} == {"lamp-0", "lamp-1", "lamp-2"}
        page.fill("#note", "wrong shade")
        page.click("#reject-shown")
        page.wait_for_selector("#live-status:text('saved 3')")
        lines = (small_run / REVIEWS_NAME).read_text().splitlines()
        assert sorted(json.loads(line)["job_id"] for line in lines) == [
            "lamp-0",
            "lamp-1",
            "lamp-2",
        ]
        page.goto(url + "#decision=rejected")
        page.reload()
        wait_ready(page)
        assert {card["id"] for card in cards(page)} == {"lamp-0", "lamp-1", "lamp-2"}
    assert set(decided(small_run).values()) == {("rejected", "wrong shade")}
