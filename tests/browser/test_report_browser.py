"""The review page in a real headless Chromium: the grid, the filters, rejections, the lightbox.

Every expectation is read from the run folder's ledger and files, not from how the folder was
made, so ``run_out`` can be swapped for a real ``pipeline run --emulator`` without touching the
tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pipeline.ledger import LEDGER_NAME
from pipeline.report import read_ledger_view, write_report
from tests.browser.cdp import open_page
from tests.browser.chromium import dump_dom, find_chromium, install_chromium, screenshot
from tests.browser.synthetic_run import SyntheticJob, build_run
from tests.e2e_helpers import REPO, spawn_cli, states
from tests.emulator_thread import emulator_thread

# Installing Chromium on a fresh machine takes minutes; once installed the module runs in seconds.
pytestmark = pytest.mark.timeout(900)

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="session")
def chromium() -> str:
    binary = find_chromium() or install_chromium()
    if binary is None:
        pytest.skip(
            "headless Chromium is not available: install the Debian package `chromium` "
            "(the tests install it themselves when run as root with apt-get)"
        )
    return binary


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of jobs/demo.yaml: the CLI as a subprocess against the emulator.

    The emulator answers 30% of feature calls with a FAILED record (seeded) and the run allows
    one attempt, so one job of the five fails and the failed-only filter has something to show.
    """
    out = tmp_path_factory.mktemp("demo-run") / "out"
    args = ["run", str(REPO / "jobs" / "demo.yaml"), "--out", str(out), "--no-progress"]
    args += ["--max-attempts", "1", "--concurrency", "1", "--rpm", "6000"]
    with emulator_thread(rate_failed=0.3, seed=4) as emulator:
        process = spawn_cli(args, emulator.env)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr.decode()  # finished, one job failed
    assert b"report.html" in stdout  # the run wrote the page itself
    assert sorted(states(out).values()).count("failed") == 1
    return out


@dataclass
class Expected:
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> status
    images: int = 0  # local source files plus output files on disk

    @property
    def failed(self) -> set[str]:
        return {job_id for job_id, status in self.jobs.items() if status == "failed"}


def expected_from(out: Path) -> Expected:
    expected = Expected()
    for job in read_ledger_view(out / LEDGER_NAME).jobs.values():
        expected.jobs[job.job_id] = job.status
        image = str(job.job.get("image") or "")
        expected.images += Path(image).is_file()
        expected.images += sum((out / output).is_file() for output in job.outputs)
    return expected


class Cards(HTMLParser):
    """The job cards of a dumped DOM: id, status and how many images each shows."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, object]] = []
        self._card: dict[str, object] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "article" and "card" in (attributes.get("class") or "").split():
            self._card = {
                "id": attributes.get("data-job-id"),
                "status": attributes.get("data-status"),
                "images": [],
            }
            self.cards.append(self._card)
        elif tag == "img" and self._card is not None:
            images = self._card["images"]
            assert isinstance(images, list)
            images.append(attributes.get("src"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._card = None


def cards_of(dom: str) -> list[dict[str, object]]:
    parser = Cards()
    parser.feed(dom)
    return parser.cards


def test_grid_shows_every_job_and_its_images(chromium: str, run_out: Path) -> None:
    expected = expected_from(run_out)
    cards = cards_of(dump_dom(chromium, (run_out / "report.html").as_uri()))

    assert {card["id"]: card["status"] for card in cards} == expected.jobs
    sources = [src for card in cards for src in card["images"]]  # type: ignore[attr-defined]
    assert len(sources) == expected.images
    assert all(src.startswith(".thumbs/") for src in sources)
    first = [card["status"] for card in cards[: len(expected.failed)]]
    assert first == ["failed"] * len(expected.failed)  # failed jobs come first


def test_failed_filter_applies_from_the_url_hash(chromium: str, run_out: Path) -> None:
    expected = expected_from(run_out)
    dom = dump_dom(chromium, (run_out / "report.html").as_uri() + "#failed")
    cards = cards_of(dom)

    assert {card["id"] for card in cards} == expected.failed
    assert 'data-status="failed" aria-pressed="true"' in dom
    if not expected.failed:  # a run without failures: the filter says so rather than showing all
        assert '<p class="empty" id="empty">' in dom


async def test_filters_by_clicking(chromium: str, run_out: Path) -> None:
    expected = expected_from(run_out)
    async with open_page(chromium) as page:
        await page.navigate((run_out / "report.html").as_uri())
        shown = await page.evaluate(
            """(() => {
              document.querySelector('#status button[data-status="failed"]').click();
              const failed = [...document.querySelectorAll("article.card")]
                .map((card) => card.dataset.status);
              document.querySelector('#status button[data-status="all"]').click();
              const select = document.getElementById("feature");
              select.value = "IMAGE_INPAINTER";
              select.dispatchEvent(new Event("change"));
              const chips = [...document.querySelectorAll("article.card .chip:first-of-type")]
                .map((chip) => chip.textContent);
              return {failed, chips, hash: location.hash};
            })()"""
        )
    assert shown["failed"] == ["failed"] * len(expected.failed)
    assert shown["chips"] and set(shown["chips"]) == {"inpaint"}
    assert shown["hash"] == "#feature=IMAGE_INPAINTER"


async def test_rejected_jobs_export_as_json_and_a_list(chromium: str, run_out: Path) -> None:
    async with open_page(chromium) as page:
        await page.navigate((run_out / "report.html").as_uri())
        result = await page.evaluate(
            """(async () => {
              let blob = null;
              URL.createObjectURL = (value) => { blob = value; return "blob:captured"; };
              HTMLAnchorElement.prototype.click = function () {};  // no real download
              const cards = [...document.querySelectorAll("article.card")].slice(1, 3);
              for (const card of cards) card.querySelector(".reject").click();
              document.getElementById("export").click();
              return {
                ids: cards.map((card) => card.dataset.jobId),
                list: document.getElementById("rejected-list").value,
                count: document.getElementById("rejected-count").textContent,
                marked: cards.map((card) => card.classList.contains("rejected")),
                exported: blob ? JSON.parse(await blob.text()) : null,
              };
            })()"""
        )
    assert len(result["ids"]) == 2
    assert result["exported"] == {"rejected": result["ids"]}
    assert result["list"] == "\n".join(result["ids"])
    assert result["count"] == "2"
    assert result["marked"] == [True, True]


async def test_lightbox_shows_the_full_size_output(chromium: str, run_out: Path) -> None:
    async with open_page(chromium) as page:
        await page.navigate((run_out / "report.html").as_uri())
        shown = await page.evaluate(
            """(async () => {
              const card = document.querySelector('article.card[data-status="succeeded"]');
              card.querySelector(".outputs .frame").click();
              const img = document.getElementById("lightbox-img");
              if (!img.complete) await new Promise((done) => img.addEventListener("load", done));
              const shown = {
                id: card.dataset.jobId, src: img.getAttribute("src"), width: img.naturalWidth,
                open: document.getElementById("lightbox").classList.contains("open"),
              };
              document.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape"}));
              shown.closed = !document.getElementById("lightbox").classList.contains("open");
              return shown;
            })()"""
        )
    output = next((run_out / shown["id"]).glob("0.*"))
    assert shown["open"] and shown["closed"]
    assert shown["src"] == f"{shown['id']}/{output.name}"  # relative: the folder can move
    assert shown["width"] == Image.open(output).width  # the original, not the thumbnail


def test_hostile_text_is_shown_as_text(chromium: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_run(out, [SyntheticJob("evil-<b>id</b>", prompt=HOSTILE, outcome="failed")], side=32)
    dom = dump_dom(chromium, write_report(out).as_uri())

    assert HOSTILE not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert [card["id"] for card in cards_of(dom)] == ["evil-<b>id</b>"]
    assert "<b>id</b>" not in dom


def test_screenshot_renders(chromium: str, run_out: Path, tmp_path: Path) -> None:
    shot = screenshot(chromium, (run_out / "report.html").as_uri(), tmp_path / "report.png")
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 200  # thumbnails and text, not a blank page


def test_report_data_is_json(run_out: Path) -> None:
    """The embedded data parses as JSON once the page's own escapes are undone by a parser."""
    page = (run_out / "report.html").read_text()
    start = page.index('id="report-data">') + len('id="report-data">')
    data = json.loads(page[start : page.index("</script>", start)])
    assert {job["id"] for job in data["jobs"]} == set(expected_from(run_out).jobs)
