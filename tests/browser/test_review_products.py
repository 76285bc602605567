"""Issue 26's review by product through the page: a catalog of three products (one with an
``n: 3`` job) run on the emulator; on the served page two products are approved and one
rejected from their headers, a variant is picked by a click, the check filter counts the
failing images' jobs; ``reviews.jsonl`` holds one line per decision, and ``pipeline export
--profile shopify`` delivers the approved products' images (the pick as its job's image)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image, ImageDraw

from pipeline.cli import main
from pipeline.images.checks import Channel, ImageChecks
from tests.browser.playwright_helpers import served, wait_ready
from tests.helpers.e2e import QUICK_POLLS, records, spawn_cli

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

BASE = "https://cdn.example.com/edits/"
SHOPIFY_COLUMNS = ["Handle", "Image Src", "Image Position", "Image Alt Text"]
# (Handle, Image Position, alt text, type, n): three products, 3 + 2 + 2 angles.
ROWS = [
    ("oak-chair", "1", "oak chair, front", "background", ""),
    ("oak-chair", "2", "oak chair, side", "background", ""),
    ("oak-chair", "3", "oak chair, back", "background", ""),
    ("linen-lamp", "1", "linen lamp, lit", "inpaint", "3"),
    ("linen-lamp", "2", "linen lamp, off", "background", ""),
    ("canvas-sneaker", "1", "sneaker, side", "background", ""),
    ("canvas-sneaker", "2", "sneaker, sole", "background", ""),
]
MANIFEST = """version: 1
name: products
defaults:
  quality: low
  id: "{Handle}-{Image Position}"
  prompt: "{Image Alt Text} on white"
items:
  path: products.csv
  columns: {image: Image Src, type: Kind, n: N, mask: Mask}
  ignore_unknown: true
"""


def write_products(folder: Path) -> Path:
    """A Shopify-like export (Handle, Image Src, Image Position, Image Alt Text) and a
    manifest over it; the group is the Handle (the default)."""
    (folder / "images").mkdir(parents=True)
    mask = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 50, 50), fill=255)
    mask.save(folder / "images" / "mask.png")
    with (folder / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*SHOPIFY_COLUMNS, "Kind", "N", "Mask"])
        for number, (handle_name, position, alt, kind, n) in enumerate(ROWS):
            image = Image.new("RGB", (96, 96), (255, 255, 255))
            ImageDraw.Draw(image).rectangle((20, 20, 76, 76), fill=(40 * number, 90, 160))
            name = f"images/{handle_name}-{position}.png"
            image.save(folder / name)
            mask_cell = "images/mask.png" if kind == "inpaint" else ""
            writer.writerow([handle_name, name, position, alt, kind, n, mask_cell])
    path = folder / "catalog.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    return path


def fails(checks: list[dict[str, Any]], channel: Channel) -> bool:
    return any(not ImageChecks.from_json(orjson.dumps(c)).passes(channel) for c in checks)


def decide_product(page: Any, name: str, action: str, saved: int) -> None:
    page.click(f'.product-head[data-product="{name}"] .product-decide .{action}')
    page.wait_for_selector(f"#live-status:text('saved {saved}')")
    page.wait_for_function("() => !document.body.dataset.busy")
    page.evaluate("document.getElementById('live-status').textContent = ''")


def test_review_by_product_through_the_page_then_a_shopify_csv(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_products(tmp_path)
    monkeypatch.delenv("ONEMIN_API_KEY", raising=False)  # --emulator needs no key
    args = ["run", str(manifest), "--emulator", "--no-progress", "--rpm", "60000"]
    args += ["--config", str(QUICK_POLLS)]
    process = spawn_cli(args, {})  # its own process: Playwright holds this thread's loop
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    out = tmp_path / "out" / "products"
    done = {r["job_id"]: r for r in records(out) if r["status"] == "succeeded"}
    keys = {job_id: line["key"] for job_id, line in done.items()}
    assert len(done) == 7 and len(done["linen-lamp-1"]["outputs"]) == 3
    failing_amazon = sorted(j for j, line in done.items() if fails(line["checks"], Channel.AMAZON))
    failing_shopify = [j for j, line in done.items() if fails(line["checks"], Channel.SHOPIFY)]

    with served(out) as url:
        page.goto(url)
        wait_ready(page)
        heads = page.locator(".product-head")
        assert heads.evaluate_all("hs => hs.map(h => h.dataset.product)") == [
            "oak-chair", "linen-lamp", "canvas-sneaker",
        ]  # fmt: skip
        chair = page.locator('.product-head[data-product="oak-chair"]')
        assert "3 jobs" in chair.inner_text() and "3 succeeded" in chair.inner_text()
        amazon = chair.locator('.badge[data-channel="amazon"]').inner_text()
        chair_fails = sum(j.startswith("oak-chair") for j in failing_amazon)
        assert amazon == f"amazon {3 - chair_fails}/3 pass"
        # Each image's badges; a failure's reasons on hover.
        assert failing_amazon, "the emulator's images were expected to miss a pure white border"
        job_id = failing_amazon[0]
        figure = page.locator(f'article.card[data-job-id="{job_id}"] figure[data-index="0"]')
        badge = figure.locator('.badge[data-channel="amazon"]')
        reasons = [reason for _, reason in done[job_id]["checks"][0]["amazon"]]
        assert badge.get_attribute("class") == "badge fail"
        assert badge.get_attribute("title") == "amazon: " + "; ".join(reasons)
        shopify = figure.locator('.badge[data-channel="shopify"]')
        passes = job_id not in failing_shopify
        assert shopify.get_attribute("class") == ("badge pass" if passes else "badge fail")

        page.fill("#note", "by product")
        decide_product(page, "oak-chair", "approve", 3)
        decide_product(page, "linen-lamp", "approve", 2)
        decide_product(page, "canvas-sneaker", "reject", 2)
        assert "3 approved" in chair.locator(".product-decided").inner_text()
        page.fill("#note", "")
        # Click to pick the lamp's third variant; it is marked, the others offer a pick.
        lamp = page.locator('article.card[data-job-id="linen-lamp-1"]')
        lamp.locator('figure[data-index="2"] .pick').click()
        page.wait_for_selector(
            'article.card[data-job-id="linen-lamp-1"] figure.picked[data-index="2"]'
        )
        assert lamp.locator("figure.picked").count() == 1
        assert lamp.locator(".pick").count() == 2

        # The check filter counts from the index and shows only the matching jobs.
        label = page.locator('#check option[value="fails:amazon"]').inner_text()
        assert label == f"fails amazon {len(failing_amazon)}"
        page.select_option("#check", "fails:amazon")
        page.wait_for_function("() => !document.body.dataset.busy")
        shown = page.locator("article.card").evaluate_all("cs => cs.map(c => c.dataset.jobId)")
        assert sorted(shown) == failing_amazon
        assert f"of {len(failing_amazon)} matching" in page.locator("#count").inner_text()
        page.select_option("#check", "fails:shopify")
        page.wait_for_function("() => !document.body.dataset.busy")
        assert page.locator("article.card").count() == len(failing_shopify)

    lines = [json.loads(line) for line in (out / "reviews.jsonl").read_text().splitlines()]
    by_decision: dict[str, list[str]] = {}
    for line in lines:
        by_decision.setdefault(line["decision"], []).append(line["job_id"])
        assert line["key"] == keys[line["job_id"]]  # the content the decision was made for
    assert sorted(by_decision["approved"]) == [
        "linen-lamp-1", "linen-lamp-2", "oak-chair-1", "oak-chair-2", "oak-chair-3",
    ]  # fmt: skip
    assert sorted(by_decision["rejected"]) == ["canvas-sneaker-1", "canvas-sneaker-2"]
    assert by_decision["picked"] == ["linen-lamp-1"] and lines[-1]["index"] == 2
    assert {line["note"] for line in lines if line["decision"] != "picked"} == {"by product"}

    capsys.readouterr()
    shop = tmp_path / "shop"
    command = ["export", str(out), str(shop), "--profile", "shopify", "--base-url", BASE]
    assert main(command) == 0
    assert "product canvas-sneaker" in capsys.readouterr().err  # left out, and listed
    with (shop / "shopify.csv").open(newline="", encoding="utf-8") as handle:
        header, *body = list(csv.reader(handle))
    assert header == SHOPIFY_COLUMNS
    approved = [row for row in ROWS if row[0] != "canvas-sneaker"]
    assert len(body) == len(approved) == 5  # one row per delivered image: the pick alone
    assert [(r[0], r[2], r[3]) for r in body] == [(r[0], r[1], r[2]) for r in approved]
    for handle_name, url, _, _ in body:
        assert url.startswith(BASE) and handle_name in url
        assert (shop / url.removeprefix(BASE)).is_file()
    lamp_row = next(r for r in body if r[0] == "linen-lamp" and r[2] == "1")
    assert lamp_row[1] == BASE + "linen-lamp-1_2.png"  # the picked variant
