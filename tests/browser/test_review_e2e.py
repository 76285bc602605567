"""Issue 15's end-to-end path: run 8 jobs, reject 2 through the served page, approve the rest
in bulk; the next run buys exactly those 2 again (``redo`` in the dry run, their old outputs
moved to ``.superseded/``) and a third sends nothing; the approved 6 are delivered under a name
template, and a second export copies nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.ledger.decisions import read_decisions, rejected_for
from tests.browser.playwright_helpers import served, wait_ready
from tests.helpers.e2e import QUICK_POLLS, purchases, records, spawn_cli, states, write_catalog

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def export(*argv: str) -> int:
    return main(["export", *argv])


def test_reject_two_of_eight_through_the_page_then_deliver_the_rest(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_catalog(tmp_path, 8)
    out = tmp_path / "out"
    monkeypatch.delenv("ONEMIN_API_KEY", raising=False)  # --emulator needs no key
    args = ["run", str(manifest), "--out", str(out), "--emulator", "--no-progress"]
    args += ["--rpm", "60000", "--config", str(QUICK_POLLS)]  # pacing is not what this is about
    # Playwright's sync API keeps an event loop running in this thread (and the run installs
    # signal handlers, main thread only): the real CLI runs as its own process.
    process = spawn_cli(args, {})
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode() and set(states(out).values()) == {"succeeded"}
    keys = {line["job_id"]: line["key"] for line in records(out) if line["status"] == "succeeded"}
    rejected = ["sku-0002", "sku-0005"]

    with served(out) as url:
        page.goto(url)
        wait_ready(page)
        page.fill("#note", "wrong colour")
        for job_id in rejected:
            page.click(f'article.card[data-job-id="{job_id}"] .decide .reject')
            page.wait_for_selector("#live-status:text('saved 1')")
            page.evaluate("document.getElementById('live-status').textContent = ''")
        page.fill("#note", "")
        page.select_option("#decision", "none")  # the undecided six
        assert len(page.locator("article.card").all()) == 6
        page.click("#approve-shown")
        page.wait_for_selector("#live-status:text('saved 6')")

    decisions = read_decisions(out)
    assert sorted(j for j in keys if rejected_for(decisions, j, keys[j])) == rejected
    assert (
        decisions["sku-0002"].note == "wrong colour"
        and decisions["sku-0002"].key == keys["sku-0002"]
    )
    assert sum(d.decision == "approved" for d in decisions.values()) == 6

    dry = spawn_cli([*args, "--dry-run"], {})
    stdout, _ = dry.communicate(timeout=60)
    assert "redo 2" in stdout.decode()
    for _ in range(2):  # the redo run, then one with nothing left to do
        process = spawn_cli(args, {})
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    bought = Counter(purchases(out))  # one per record (an async one has two submitted lines)
    assert bought == {job_id: 2 if job_id in rejected else 1 for job_id in keys}
    for job_id in rejected:
        assert list((out / job_id / ".superseded").glob("*/0.png")), job_id

    capsys.readouterr()
    shop = tmp_path / "shop"
    assert export(str(out), str(shop), "--approved-only", "--name", "shop-{id}-{index}.{ext}") == 0
    assert capsys.readouterr().out.strip() == "6 copied, 0 unchanged"
    delivered = sorted(p.name for p in shop.iterdir() if p.suffix == ".png")
    assert delivered == [f"shop-{j}-0.png" for j in sorted(keys) if j not in rejected]
    assert export(str(out), str(shop), "--approved-only", "--name", "shop-{id}-{index}.{ext}") == 0
    assert capsys.readouterr().out.strip() == "0 copied, 6 unchanged"
