"""Marketplace checks are computed once, when a result is stored, and kept in the ledger."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image, ImageDraw

from pipeline.errors import BadResponse
from pipeline.images import Channel, ImageChecks, marketplace_checks
from pipeline.images.provenance import add_provenance
from pipeline.ledger import read_ledger
from pipeline.ledger.schema import Succeeded, decode_line
from pipeline.models import Feature, InputRef, Job, PlannedJob
from pipeline.store import local as local_module
from pipeline.store.local import CREATOR_TOOL, Store
from tests.helpers.e2e import QUICK_POLLS, records, run_cli, write_catalog
from tests.helpers.emulator import emulator_thread

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


def product_png(size: tuple[int, int] = (1024, 1024)) -> bytes:
    image = Image.new("RGB", size, (255, 255, 255))
    margin = size[0] // 16
    box = (margin, margin, size[0] - margin, size[1] - margin)
    ImageDraw.Draw(image).ellipse(box, fill=(90, 60, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return add_provenance(buffer.getvalue(), creator_tool=CREATOR_TOOL)


def test_every_output_of_a_run_is_judged_once_and_kept_on_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_catalog(tmp_path, 3, images=2, n=2)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        assert (
            run_cli(["run", str(manifest), "--out", str(out), *FAST], emulator.env, monkeypatch)
            == 0
        )
    lines = [r for r in records(out) if r["status"] == "succeeded"]
    assert len(lines) == 3
    for line in lines:
        assert len(line["checks"]) == len(line["outputs"]) == 2
        for output, stored in zip(line["outputs"], line["checks"], strict=True):
            # What the line keeps is what the delivered file measures now.
            assert stored == _as_dict(marketplace_checks(out / output))
            assert stored["google"] == []  # provenance was marked before the file was judged
    folded = read_ledger(out / "ledger.jsonl", detailed=True).jobs["sku-0001"]
    assert len(folded.checks) == 2 and isinstance(folded.checks[0], ImageChecks)
    assert read_ledger(out / "ledger.jsonl").jobs["sku-0001"].checks == ()  # resume skips them


def _as_dict(checks: ImageChecks) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(checks.to_json())
    return result


def test_a_line_written_before_the_checks_is_still_a_valid_succeeded_line() -> None:
    line = b'{"status":"succeeded","job_id":"a","key":"k","outputs":["a/0.png"],"attempts":1}\n'
    record = decode_line(line)
    assert isinstance(record, Succeeded) and record.checks == ()


def _protected_job(tmp_path: Path) -> PlannedJob:
    source = tmp_path / "source.png"
    Image.new("RGB", (1024, 1024), (255, 255, 255)).save(source)
    mask = tmp_path / "mask.png"
    edit = Image.new("L", (1024, 1024), 0)
    ImageDraw.Draw(edit).rectangle((100, 100, 900, 900), fill=255)
    edit.save(mask)
    job = Job(
        "p",
        Feature.INPAINT,
        InputRef("file", str(source)),
        "oak",
        mask=InputRef("file", str(mask)),
        protect=True,
    )
    return PlannedJob(job, "key")


def test_a_protected_png_is_judged_on_the_pixels_it_was_composited_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Image.Image | None] = []
    judge = local_module.marketplace_checks

    def spy(image: bytes | Path, *, pixels: Image.Image | None = None) -> ImageChecks:
        seen.append(pixels)
        return judge(image, pixels=pixels)

    monkeypatch.setattr(local_module, "marketplace_checks", spy)
    store = Store(tmp_path / "out")
    store.prepare()
    temp = store.temp_path("p", 0)
    temp.write_bytes(product_png())
    store.protect_result(temp, "png", _protected_job(tmp_path))
    store.check_marketplace(temp)  # already judged while compositing: not judged again
    (checks,) = store.checks_for([(temp, "png")])
    assert len(seen) == 1 and seen[0] is not None  # no second decode of the written file
    assert checks == marketplace_checks(temp)  # and the verdicts are the file's own
    assert not checks.passes(Channel.AMAZON)  # the source's white kept outside the edit area


def test_a_result_whose_pixels_do_not_decode_is_a_bad_response(tmp_path: Path) -> None:
    # Headers and the end chunk are whole (the stream's checks pass); the image data is not.
    data = bytearray(product_png((64, 64)))
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    data[start : start + length] = zlib.compress(b"\x00" * 10)[:length].ljust(length, b"\x07")
    store = Store(tmp_path / "out")
    store.prepare()
    temp = store.temp_path("j", 0)
    temp.write_bytes(bytes(data))
    with pytest.raises(BadResponse, match="does not decode"):
        store.check_marketplace(temp)
    assert store.checks_for([(temp, "png")]) == ()  # nothing kept for a broken result


def test_checks_are_handed_over_only_when_every_output_was_judged(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    store.prepare()
    judged, unjudged = store.temp_path("j", 0), store.temp_path("j", 1)
    judged.write_bytes(product_png((64, 64)))
    store.check_marketplace(judged)
    assert store.checks_for([(judged, "png"), (unjudged, "png")]) == ()
    store.check_marketplace(judged)
    store.discard(judged)  # a discarded result's verdicts go with it
    assert store.checks_for([(judged, "png")]) == ()
