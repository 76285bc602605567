"""``pipeline.review.page``: ``report.html`` and its chunks of jobs, from a run folder."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from PIL import Image

from pipeline.layout import LEDGER_NAME, REPORT_NAME, THUMBS_DIR
from pipeline.ledger.decisions import record_decisions
from pipeline.ledger.schema import JobDetails, Record, Started, Succeeded, to_line
from pipeline.models import ErrorInfo, Feature
from pipeline.review.page import build_payload, embed_json, write_report
from pipeline.review.thumbs import make_thumbnail
from pipeline.review.view import progress_series
from tests.browser.synthetic_run import SyntheticJob, build_run, records
from tests.helpers.e2e import QUICK_POLLS
from tests.helpers.images import pixel

HOSTILE_PROMPT = "<script>alert(1)</script> & \u2028 </x-end>"
HOSTILE_ID = "<img src=x onerror=alert(1)>"


def read_page(path: Path) -> str:
    """``report.html`` and the chunk files of its build, as one text (the page's bytes)."""
    text = path.read_text()
    index = json.loads(_index_text(text))
    folder = path.parent / index["chunk_url"].rpartition("/")[0]
    chunks = sorted(folder.glob("*.js"), key=lambda chunk: int(chunk.stem))
    assert len(chunks) == len(index["chunks"])
    return text + "".join(chunk.read_text() for chunk in chunks)


def _index_text(page: str) -> str:
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S
    )
    assert match is not None
    return match.group(1)


def payload_of(page: str) -> dict[str, Any]:
    """The index and every chunk's rows joined (json.loads undoes the \\u003c escapes)."""
    payload = json.loads(_index_text(page))
    chunks = [json.loads(m.group(2)) for m in re.finditer(r"reportChunk\((\d+),(.*?)\);\n", page)]
    column = {name: i for i, name in enumerate(payload["fields"])}
    payload["jobs"], payload["sources"], payload["params"] = [], [], []
    for chunk in chunks:
        shift = {"source": len(payload["sources"]), "params": len(payload["params"])}
        for row in chunk["rows"]:
            for name, values in chunk["tables"].items():
                if row[column[name]] is not None:
                    row[column[name]] = values[row[column[name]]]
            for name, offset in shift.items():
                if row[column[name]] is not None:
                    row[column[name]] += offset
            payload["jobs"].append(row)
        payload["sources"] += chunk["sources"]
        payload["params"] += chunk["params"]
    return payload


def as_job(payload: dict[str, Any], row: list[Any]) -> dict[str, Any]:
    """A row as the script sees it: named fields, outputs and mask as objects, its decision."""
    job = dict(zip(payload["fields"], row, strict=True))
    job["source"] = dict(payload["sources"][job["source"]])
    job["params"] = payload["params"][job["params"]] if job["params"] is not None else {}
    thumbs = payload["thumbs"]
    job["outputs"] = [
        {"label": unquote(o.rpartition("/")[2]), "full": o, "note": None}
        if isinstance(o, str)
        else {"label": o[0], "full": o[1], "note": o[2]}
        for o in job["outputs"]
    ]
    if job["mask"]:
        job["mask"] = {"kind": job["mask"][0], "label": job["mask"][1]}
    for key in ("thumb", "plain"):
        if job["source"].get(key):
            job["source"][key] = thumbs + job["source"][key]
    decision = payload["decisions"].get(job["id"])
    job["decision"] = decision[:3] if decision else None
    return job


def page_data(page: str) -> dict[str, Any]:
    payload = payload_of(page)
    payload["jobs"] = [as_job(payload, row) for row in payload["jobs"]]
    return payload


def header(page: str) -> dict[str, Any]:
    return json.loads(_index_text(page))["header"]


def thumbs_of(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / THUMBS_DIR).iterdir()}


@pytest.fixture
def mixed_run(tmp_path: Path) -> Path:
    """Two successes, a failure, an interrupted job, in an order that is not failed-first."""
    out = tmp_path / "out"
    build_run(
        out,
        [
            SyntheticJob("ok-1", n=2),
            SyntheticJob("bg-1", feature=Feature.BACKGROUND, product="lamp"),
            SyntheticJob(
                "bad-1",
                outcome="failed",
                retries=[ErrorInfo("server_error", "502", 502)] * 2,
                error=ErrorInfo("server_error", "502 Bad Gateway", 502),
            ),
            SyntheticJob("cut-1", outcome="started"),
            SyntheticJob("bad-2", outcome="failed", retries=[ErrorInfo("rate_limited", "", 429)]),
        ],
        side=24,
    )
    return out


def test_header_counts_and_failed_first(mixed_run: Path) -> None:
    page = read_page(write_report(mixed_run))

    facts = header(page)
    assert facts["states"] == {"succeeded": 2, "failed": 2, "started": 1}
    assert facts["unfinished"] == 1
    assert facts["retry_reasons"] == {"rate_limited": 1, "server_error": 2}
    jobs = page_data(page)["jobs"]
    # Failed first, then unfinished, then succeeded; the ledger's order within each group.
    assert [job["id"] for job in jobs] == ["bad-1", "bad-2", "cut-1", "ok-1", "bg-1"]
    bad = jobs[0]
    assert bad["error"] == {
        "kind": "server_error",
        "message": "502 Bad Gateway",
        "http_status": 502,
        "transient": False,
        "uuid": None,
    }
    assert bad["attempts"] == 3
    assert bad["retries"] == {"server_error": 2}
    assert [o["full"] for o in jobs[3]["outputs"]] == ["ok-1/0.png", "ok-1/1.png"]
    assert jobs[3]["prompt"] == "modern pendant light, brushed metal"
    assert jobs[3]["params"]["n"] == 2 and "prompt" not in jobs[3]["params"]


def test_inpainter_source_shows_the_mask_as_an_overlay(mixed_run: Path) -> None:
    source = page_data(read_page(write_report(mixed_run)))["jobs"][3]["source"]
    assert source["thumb"] != source["plain"]  # tinted, with the plain source one click away
    tinted = Image.open(mixed_run / source["thumb"]).convert("RGB")
    plain = Image.open(mixed_run / source["plain"]).convert("RGB")
    x, y = tinted.width // 2, tinted.height // 8  # inside the synthetic mask's ellipse
    assert pixel(tinted, (x, y))[1] < pixel(plain, (x, y))[1] - 40  # red: less green
    corner = (1, tinted.height - 2)  # outside it: untouched
    assert tinted.getpixel(corner) == pytest.approx(plain.getpixel(corner), abs=12)


def test_hostile_prompt_and_id_are_escaped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_run(out, [SyntheticJob(HOSTILE_ID, prompt=HOSTILE_PROMPT)], side=16, name="</title>x")
    page = read_page(write_report(out))

    for raw in ("<script>alert", "<img src=x", "</x-end>", "</title>x", "\u2028"):
        assert raw not in page
    assert "&lt;/title&gt;x" in page  # the manifest's name, escaped in the header
    job = page_data(page)["jobs"][0]
    assert (job["id"], job["prompt"]) == (HOSTILE_ID, HOSTILE_PROMPT)  # intact once parsed
    assert job["outputs"][0]["full"] == "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/0.png"


def test_embed_json_cannot_close_its_script_element() -> None:
    text = embed_json({"a": "</script><!-- & \u2028\u2029 >"})
    assert not set("<>&") & set(text)
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028\u2029 >"}


def test_missing_unreadable_and_remote_inputs_become_placeholders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = build_run(
        out,
        [
            SyntheticJob("gone", n=2),
            SyntheticJob("broken"),
            SyntheticJob("remote", image="https://example.com/a.png", mask="asset:masks/m.png"),
            SyntheticJob("stored", feature=Feature.BACKGROUND, image="asset:uploads/b.png"),
        ],
        side=16,
    )
    (run.inputs_dir / "gone.png").unlink()
    (out / "gone" / "1.png").unlink()
    (run.inputs_dir / "broken.png").write_bytes(b"not an image at all")
    (out / "broken" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    jobs = {job["id"]: job for job in page_data(read_page(write_report(out)))["jobs"]}

    assert jobs["gone"]["source"]["note"] == "missing"
    assert [o["note"] for o in jobs["gone"]["outputs"]] == [None, "missing"]
    assert jobs["broken"]["source"]["note"] == "unreadable"
    assert "thumb" not in jobs["broken"]["source"]
    # Outputs are shown as themselves: a corrupt one is the browser's placeholder, not ours.
    assert jobs["broken"]["outputs"][0] == {"label": "0.png", "full": "broken/0.png", "note": None}
    assert jobs["remote"]["source"]["note"] == "url"
    assert jobs["remote"]["mask"] == {"kind": "asset", "label": "masks/m.png"}
    assert jobs["stored"]["source"]["note"] == "asset"
    assert not [p for p in (out / THUMBS_DIR).iterdir() if p.name.endswith(".tmp")]


def test_output_paths_that_leave_the_folder_are_not_linked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_run(out, [SyntheticJob("a")], side=16)
    lines = records(out)
    lines[-1]["outputs"] = ["../../etc/passwd", "/etc/passwd", "a/0.png"]
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))

    outputs = page_data(read_page(write_report(out)))["jobs"][0]["outputs"]
    assert [o["note"] for o in outputs] == ["missing", "missing", None]
    assert [o.get("full") for o in outputs] == [None, None, "a/0.png"]


def test_torn_ledger_tail_is_ignored(mixed_run: Path) -> None:
    with (mixed_run / LEDGER_NAME).open("ab") as ledger:
        ledger.write(b'{"ts": "2026-01-01T00:00:00.000Z", "job_id": "torn", "stat')
    page = read_page(write_report(mixed_run))

    assert "torn" not in {job["id"] for job in page_data(page)["jobs"]}
    assert any("last line was torn" in note for note in header(page)["notes"])
    assert header(page)["states"]["succeeded"] == 2


def test_without_summary_the_figures_come_from_the_ledger(mixed_run: Path) -> None:
    (mixed_run / "summary.json").unlink()
    page = read_page(write_report(mixed_run))

    facts = header(page)
    assert any("no summary.json" in note for note in facts["notes"])
    assert facts["states"]["succeeded"] == 2
    assert facts["skipped"] is None
    assert sum(facts["retry_reasons"].values()) == 3
    assert facts["credits"] == 12  # two successes at 6 credits each
    assert facts["chart"]["ok"][-1] == 2


def test_a_summary_older_than_the_ledger_is_not_trusted(mixed_run: Path) -> None:
    summary = json.loads((mixed_run / "summary.json").read_text())
    summary["finished_at"] = "2000-01-01T00:00:00.000Z"
    summary["counts"]["skipped"] = 99
    (mixed_run / "summary.json").write_text(json.dumps(summary))
    page = read_page(write_report(mixed_run))

    assert any("older than the ledger" in note for note in header(page)["notes"])
    assert header(page)["skipped"] is None


def test_a_job_that_ran_again_shows_its_latest_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_run(out, [SyntheticJob("again", prompt="first try", outcome="failed")], side=16)
    first = records(out)
    build_run(out, [SyntheticJob("again", prompt="second try")], side=16)
    lines = first + records(out)
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))

    (job,) = page_data(read_page(write_report(out)))["jobs"]
    assert (job["status"], job["prompt"], job["error"]) == ("succeeded", "second try", None)


def test_thumbnails_are_made_once_and_follow_changes(mixed_run: Path) -> None:
    write_report(mixed_run)
    made = thumbs_of(mixed_run)
    assert made and all(name.endswith(".webp") for name in made)

    write_report(mixed_run)
    assert thumbs_of(mixed_run) == made  # same files, untouched

    source = Path(
        next(
            r["job"]["image"]
            for r in records(mixed_run)
            if r["job_id"] == "bg-1" and r["status"] == "started"
        )
    )
    Image.new("RGB", (24, 24), (0, 0, 255)).save(source)
    os.utime(source, ns=(1, 1))  # a different mtime whatever the clock's resolution
    write_report(mixed_run)
    after = thumbs_of(mixed_run)
    assert len(set(after) - set(made)) == 1  # the replaced source's new thumbnail
    assert len(set(made) - set(after)) == 1  # and its old one pruned
    assert {n: after[n] for n in set(made) & set(after)} == {
        n: made[n] for n in set(made) & set(after)
    }


def test_a_shared_source_and_mask_are_thumbnailed_once(tmp_path: Path) -> None:
    """Ten jobs over one source and one mask: one task, two files (plain and tinted)."""
    out = tmp_path / "out"
    run = build_run(out, [SyntheticJob(f"j{i}") for i in range(10)], side=24)
    lines = records(out)
    first = next(r for r in lines if r["status"] == "started")["job"]
    for line in lines:
        if line["status"] == "started":
            line["job"]["image"], line["job"]["mask"] = first["image"], first["mask"]
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert run.inputs_dir.is_dir()

    payload, _ = build_payload(out)
    assert len(thumbs_of(out)) == 2
    assert len(payload["sources"]) == 1
    assert {row[5] for row in payload["jobs"]} == {0}
    assert len(payload["params"]) == 1  # the same parameters, named once


def test_pending_manifest_jobs_are_listed_after_the_ledger_jobs(mixed_run: Path) -> None:
    manifest = [
        ("ok-1", "k", "IMAGE_INPAINTER", None, None, "already in the ledger"),
        ("new-1", "k1", "BACKGROUND_REPLACER", "/no/such.png", None, "a marble top"),
    ]
    page = read_page(write_report(mixed_run, manifest))
    jobs = page_data(page)["jobs"]
    assert [job["id"] for job in jobs].count("ok-1") == 1
    assert jobs[-1]["id"] == "new-1" and jobs[-1]["status"] == "pending"
    assert jobs[-1]["prompt"] == "a marble top"
    assert "key" not in jobs[-1]  # the server records decisions under the current key itself
    assert header(page)["pending"] == 1


def test_decisions_show_on_the_static_page_for_their_content_only(mixed_run: Path) -> None:
    keys = {r["job_id"]: r["key"] for r in records(mixed_run) if r["status"] == "succeeded"}
    record_decisions(mixed_run, [("ok-1", keys["ok-1"], "rejected")], note="blurry")
    record_decisions(mixed_run, [("bg-1", "an older key", "rejected")])
    page = read_page(write_report(mixed_run))
    jobs = {job["id"]: job for job in page_data(page)["jobs"]}
    assert jobs["ok-1"]["decision"][:2] == ["rejected", "blurry"]
    assert jobs["bg-1"]["decision"] is None  # made for content the job no longer has
    assert header(page)["decisions"] == {"approved": 0, "rejected": 1}


def test_links_are_relative_and_nothing_comes_from_the_network(mixed_run: Path) -> None:
    page = read_page(write_report(mixed_run))
    data = page_data(page)

    assert str(mixed_run.parent) not in page  # no absolute local path anywhere
    links = [
        image[key]
        for job in data["jobs"]
        for image in (job["source"], *job["outputs"])
        for key in ("thumb", "plain", "full")
        if image.get(key)
    ]
    assert links and all(not link.startswith(("/", "file:", "http")) for link in links)
    for link in links:
        assert (mixed_run / link).is_file()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import", page)
    assert "default-src 'none'" in page


def test_report_is_written_atomically(mixed_run: Path) -> None:
    path = write_report(mixed_run)
    assert path == mixed_run / REPORT_NAME
    assert path.read_text().startswith("<!doctype html>")
    assert not [p for p in mixed_run.iterdir() if p.name.endswith(".tmp")]


def test_progress_series_counts_finished_jobs() -> None:
    finished = [
        ("2026-11-21T10:00:01.000Z", "succeeded"),
        ("2026-11-21T10:00:02.000Z", "failed"),
        ("2026-11-21T10:00:05.000Z", "succeeded"),
    ]
    series = progress_series(finished, since="2026-11-21T10:00:00.000Z")
    assert series is not None
    assert (series["ok"][-1], series["failed"][-1], series["span"]) == (2, 1, 5.0)
    # An earlier run's lines are left out of the run the header describes.
    later = progress_series(finished, since="2026-11-21T10:00:03.000Z")
    assert later is not None and later["ok"][-1] == 1 and later["failed"][-1] == 0
    assert progress_series([], since=None) is None


def test_thumbnail_keeps_transparency_and_fits_the_box(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGBA", (1000, 400), (10, 20, 30, 0)).save(path)
    thumb = make_thumbnail(path)
    assert thumb.mode == "RGBA" and max(thumb.size) == 256 and thumb.size[1] < 256


def test_mask_overlay_of_a_transparent_source_is_flattened(tmp_path: Path) -> None:
    source, mask = tmp_path / "cutout.png", tmp_path / "mask.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(source)  # fully transparent black
    Image.new("L", (40, 40), 0).save(mask)  # edits nothing
    thumb = make_thumbnail(source, mask)
    assert thumb.mode == "RGB" and thumb.getpixel((5, 5)) == (245, 245, 245)


def test_a_mangled_summary_does_not_break_the_page(mixed_run: Path) -> None:
    summary = {"started_at": 12, "stats": [], "counts": "x", "credits": None, "name": 5}
    (mixed_run / "summary.json").write_text(json.dumps(summary))
    page = read_page(write_report(mixed_run))
    assert header(page)["states"]["succeeded"] == 2
    (mixed_run / "summary.json").write_text("{ not json")
    notes = header(read_page(write_report(mixed_run)))["notes"]
    assert any("no summary.json" in note for note in notes)


def test_thumbnails_made_during_the_run_leave_the_report_nothing_to_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.events import EventBus, JobStarted, JobSucceeded
    from pipeline.ledger import LedgerWriter
    from pipeline.models import Feature, InputRef, Job, PlannedJob
    from pipeline.review.thumbs import Thumbnailer, ThumbnailPrefetcher

    out = tmp_path / "out"
    (out / "j1").mkdir(parents=True)
    Image.new("RGB", (80, 60), "teal").save(tmp_path / "src.png")
    Image.new("L", (80, 60), 255).save(tmp_path / "mask.png")
    Image.new("RGB", (80, 60), "orange").save(out / "j1" / "0.png")
    job = Job(
        "j1",
        Feature.INPAINT,
        InputRef("file", str(tmp_path / "src.png")),
        "p",
        mask=InputRef("file", str(tmp_path / "mask.png")),
    )
    bus = EventBus()
    prefetcher = ThumbnailPrefetcher(out)
    with LedgerWriter(out / "ledger.jsonl") as writer:
        bus.subscribe(writer)
        bus.subscribe(prefetcher)
        bus.emit(JobStarted(PlannedJob(job, "k")))
        bus.emit(JobSucceeded("j1", "k", ("j1/0.png",), 1, 1000, "u"))
    prefetcher.close(finish=True)
    made_during_run = sorted(p.name for p in (out / ".thumbs").iterdir())
    assert len(made_during_run) == 2  # the source and the source with its mask; outputs: none

    calls: list[object] = []
    original = Thumbnailer.make

    def counting_make(self: Thumbnailer, task: object) -> bool:
        calls.append(task)
        return original(self, task)  # type: ignore[arg-type]

    monkeypatch.setattr(Thumbnailer, "make", counting_make)
    write_report(out)
    assert calls == []  # the report found every thumbnail already made
    assert sorted(p.name for p in (out / ".thumbs").iterdir()) == made_during_run


def test_closing_the_prefetcher_drops_queued_thumbnails(tmp_path: Path) -> None:
    """An interrupted run does not wait for the thumbnail queue: close() cancels what is queued."""
    from pipeline.events import JobStarted
    from pipeline.models import InputRef, Job, PlannedJob
    from pipeline.review.thumbs import Thumbnailer, ThumbnailPrefetcher

    out = tmp_path / "out"
    out.mkdir()
    gate = threading.Event()
    original = Thumbnailer.make

    def slow_make(self: Thumbnailer, task: Any) -> bool:
        gate.wait(10)  # the first task holds the one worker until close() has been called
        return original(self, task)

    prefetcher = ThumbnailPrefetcher(out)
    prefetcher._thumbs.make = slow_make.__get__(prefetcher._thumbs)  # type: ignore[method-assign]
    for i in range(20):
        Image.new("RGB", (40, 30), (i * 10, 0, 0)).save(tmp_path / f"s{i}.png")
        job = Job(f"j{i}", Feature.BACKGROUND, InputRef("file", str(tmp_path / f"s{i}.png")), "p")
        prefetcher(JobStarted(PlannedJob(job, "k")))
    closing = threading.Thread(target=prefetcher.close)
    closing.start()
    prefetcher._thumbs.cancelled.wait(10)  # close() has begun: now let the worker go on
    gate.set()
    closing.join(10)
    assert not closing.is_alive()
    # Every task that reached the worker after close() returned without decoding anything.
    assert list((out / ".thumbs").iterdir()) == []


def test_a_redone_job_shows_no_old_rejection(mixed_run: Path) -> None:
    keys = {r["job_id"]: r["key"] for r in records(mixed_run) if r["status"] == "succeeded"}
    record_decisions(mixed_run, [("ok-1", keys["ok-1"], "rejected")])  # now: after the run
    before = {job["id"]: job for job in page_data(read_page(write_report(mixed_run)))["jobs"]}
    assert before["ok-1"]["decision"][0] == "rejected"
    later = Succeeded(job_id="ok-1", key=keys["ok-1"], outputs=(), ts="2099-01-01T00:00:00Z")
    with (mixed_run / LEDGER_NAME).open("ab") as ledger:
        ledger.write(to_line(later))
    page = read_page(write_report(mixed_run))
    jobs = {job["id"]: job for job in page_data(page)["jobs"]}
    assert jobs["ok-1"]["decision"] is None  # the same rule as the plan's redo
    assert header(page)["decisions"] == {"approved": 0, "rejected": 0}


def _generated_mask_run(tmp_path: Path, recipe: str, mask: str | None = None) -> Path:
    """One succeeded job whose mask was made here (the ledger records its recipe)."""
    out = tmp_path / "out"
    (out / "j").mkdir(parents=True)
    source = tmp_path / "src.png"
    Image.new("RGB", (200, 100), (250, 250, 250)).save(source)
    Image.new("RGB", (64, 64), (0, 0, 255)).save(out / "j" / "0.png")
    details = JobDetails(feature=Feature.INPAINT.value, image=str(source), mask=mask,
                         parameters={"prompt": "p"}, mask_recipe=recipe)  # fmt: skip
    lines: list[Record] = [
        Started(job_id="j", key="k", job=details, ts="2026-12-01T10:00:00Z"),
        Succeeded(job_id="j", key="k", outputs=("j/0.png",), ts="2026-12-01T10:00:01Z"),
    ]
    (out / LEDGER_NAME).write_bytes(b"".join(to_line(line) for line in lines))
    return out


def test_a_generated_mask_is_drawn_from_its_recipe(tmp_path: Path) -> None:
    out = _generated_mask_run(tmp_path, "box:0,0,0.5,1;invert=0;grow=0;feather=0")
    (job,) = page_data(read_page(write_report(out)))["jobs"]
    assert job["mask"] == {"kind": "recipe", "label": "box:0,0,0.5,1"}
    assert job["source"]["plain"] and job["source"]["thumb"] != job["source"]["plain"]
    with Image.open(out / job["source"]["thumb"]) as thumb:
        tinted = thumb.convert("RGB")
    width, height = tinted.size
    left, right = pixel(tinted, (width // 4, height // 2)), pixel(tinted, (width * 3 // 4, 5))
    assert left[0] > left[2] + 60  # the box edits the left half: tinted red
    assert all(abs(channel - 250) <= 8 for channel in right)  # the rest is the plain source


def test_an_inverted_file_mask_is_drawn_as_sent(tmp_path: Path) -> None:
    mask = make_mask_file(tmp_path / "m.png")
    out = _generated_mask_run(tmp_path, "file;invert=1;grow=0;feather=0", str(mask))
    (job,) = page_data(read_page(write_report(out)))["jobs"]
    assert job["mask"]["label"] == "m.png, inverted"
    with Image.open(out / job["source"]["thumb"]) as thumb:
        tinted = thumb.convert("RGB")
    width, height = tinted.size
    left, right = pixel(tinted, (width // 4, height // 2)), pixel(tinted, (width * 3 // 4, 5))
    assert right[0] > right[2] + 60 and all(abs(c - 250) <= 8 for c in left)  # inverted


def test_a_generated_mask_that_cannot_be_drawn_leaves_the_plain_source(tmp_path: Path) -> None:
    out = _generated_mask_run(tmp_path, "file;invert=1;grow=0;feather=0", str(tmp_path / "gone"))
    (job,) = page_data(read_page(write_report(out)))["jobs"]
    assert job["source"]["thumb"] and "plain" not in job["source"]


def make_mask_file(path: Path) -> Path:
    mask = Image.new("L", (200, 100), 255)  # white left half: edit
    mask.paste(0, (100, 0, 200, 100))
    mask.save(path)
    return path


def test_a_run_with_a_generated_mask_shows_it_on_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.e2e import run_cli
    from tests.helpers.images import demo_inputs, write_manifest

    demo_inputs(tmp_path)
    job = {"id": "boxed", "image": "images/item.png", "mask": "box:0,0.5,1,1", "mask_grow": 2}
    manifest = write_manifest(
        tmp_path, {"defaults": {"type": "inpaint", "prompt": "p"}, "jobs": [job]}
    )
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--emulator", "--no-progress"]
    args += ["--config", str(QUICK_POLLS), "--rpm", "60000"]
    assert run_cli(args, {}, monkeypatch) == 0
    started = next(r for r in records(out) if r["status"] == "started")
    assert started["job"]["mask_recipe"] == "box:0,0.5,1,1;invert=0;grow=2;feather=0"
    (shown,) = page_data(read_page(out / REPORT_NAME))["jobs"]
    assert shown["mask"] == {"kind": "recipe", "label": "box:0,0.5,1,1, grow 2"}
    assert (out / shown["source"]["thumb"]).is_file() and shown["source"]["plain"]
