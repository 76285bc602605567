"""``pipeline export``: names from templates, idempotence, collisions, conversion, export.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.images import Channel
from pipeline.layout import LEDGER_NAME
from pipeline.ledger.decisions import record_decisions
from pipeline.ledger.schema import Succeeded, to_line
from pipeline.models import Feature
from pipeline.review.export import ExportError, export
from tests.browser.synthetic_run import SyntheticJob, build_run, records

CHANNELS = [channel.value for channel in Channel]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    build_run(
        out,
        [
            SyntheticJob("sku-1", n=2),
            SyntheticJob("sku-2", feature=Feature.BACKGROUND, product="lamp"),
            SyntheticJob("sku-3", prompt="a rejected one"),
            SyntheticJob("sku-4", outcome="failed"),
        ],
        side=24,
    )
    return out


def keys(out: Path) -> dict[str, str]:
    return {r["job_id"]: r["key"] for r in records(out) if r["status"] == "succeeded"}


def test_default_names_copy_bytes_and_write_the_csv(run: Path, tmp_path: Path) -> None:
    dest = tmp_path / "shop"
    result = export(run, str(dest))
    assert result.line() == "4 copied, 0 unchanged"  # failed jobs deliver nothing
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["export.csv", "sku-1_0.png", "sku-1_1.png", "sku-2_0.png", "sku-3_0.png"]
    assert (dest / "sku-1_1.png").read_bytes() == (run / "sku-1" / "1.png").read_bytes()
    rows = list(csv.DictReader((dest / "export.csv").open()))
    assert [r["file"] for r in rows] == ["sku-1_0.png", "sku-1_1.png", "sku-2_0.png", "sku-3_0.png"]
    assert list(rows[0]) == ["id", "index", "file", "source", "prompt", "group", *CHANNELS]
    assert rows[0]["group"] == "sku-1"  # a job without a group is a product of its own
    assert rows[3]["prompt"] == "a rejected one" and rows[0]["source"].endswith(".png")


def test_a_second_export_copies_nothing(run: Path, tmp_path: Path) -> None:
    dest = tmp_path / "shop"
    export(run, str(dest))
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert export(run, str(dest)).line() == "0 copied, 4 unchanged"
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    (dest / "sku-2_0.png").write_bytes(b"changed at the shop")
    assert export(run, str(dest)).line() == "1 copied, 3 unchanged"


def test_templates_use_job_fields_and_subfolders(run: Path, tmp_path: Path) -> None:
    dest = tmp_path / "shop"
    export(run, str(dest), "{feature}/src-{stem}/{id}-{index}-{quality}.{ext}")
    made = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.png"))
    # stem: the source image's file stem; quality: a job parameter
    assert made == [
        "BACKGROUND_REPLACER/src-sku-2/sku-2-0-medium.png",
        "IMAGE_INPAINTER/src-sku-1/sku-1-0-medium.png",
        "IMAGE_INPAINTER/src-sku-1/sku-1-1-medium.png",
        "IMAGE_INPAINTER/src-sku-3/sku-3-0-medium.png",
    ]


def test_a_template_that_collides_or_escapes_is_an_error_before_copying(
    run: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "shop"
    with pytest.raises(ExportError, match="both sku-1#0 and sku-1#1"):
        export(run, str(dest), "{id}.{ext}")
    with pytest.raises(ExportError, match="not a job field"):
        export(run, str(dest), "{colour}.{ext}")
    with pytest.raises(ExportError, match="not a path inside DEST"):
        export(run, str(dest), "../{id}_{index}.{ext}")
    assert not dest.exists()


def test_approved_only_and_rejected_jobs(run: Path, tmp_path: Path) -> None:
    key = keys(run)
    record_decisions(
        run, [("sku-3", key["sku-3"], "rejected"), ("sku-2", key["sku-2"], "approved")]
    )
    result = export(run, str(tmp_path / "all"))
    assert result.copied == 3 and any("sku-3: rejected" in note for note in result.skipped)
    approved = export(run, str(tmp_path / "approved"), approved_only=True)
    assert approved.copied == 1
    assert sorted(p.name for p in (tmp_path / "approved").iterdir()) == [
        "export.csv",
        "sku-2_0.png",
    ]


def test_format_conversion_and_quality(run: Path, tmp_path: Path) -> None:
    dest = tmp_path / "jpeg"
    assert export(run, str(dest), fmt="jpeg", quality=70).copied == 4
    with Image.open(dest / "sku-1_0.jpg") as image:
        assert image.format == "JPEG"
    assert export(run, str(dest), fmt="jpeg", quality=70).line() == "0 copied, 4 unchanged"


def test_an_object_store_destination_through_fsspec(run: Path) -> None:
    export(run, "memory://bucket/delivery", "{id}/{index}.{ext}")
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/bucket/delivery/sku-1/1.png") == (run / "sku-1" / "1.png").read_bytes()
    assert export(run, "memory://bucket/delivery", "{id}/{index}.{ext}").copied == 0


def test_the_command_says_what_is_wrong_in_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def call(*argv: str) -> int:
        return main(["export", *argv])

    assert call(str(run), str(tmp_path / "d")) == 0
    assert capsys.readouterr().out.strip() == "4 copied, 0 unchanged"
    assert call(str(tmp_path / "nothing"), str(tmp_path / "d")) == 2
    assert "no ledger" in capsys.readouterr().err
    assert call(str(run), str(tmp_path / "d"), "--name", "{id}.{ext}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    assert call(str(run), str(blocked / "sub")) == 1  # DEST cannot be written
    assert "cannot write" in capsys.readouterr().err


def test_a_redone_job_is_no_longer_rejected(run: Path, tmp_path: Path) -> None:
    # docs/delivery.md#rejected-jobs: the rejection asked for a redo; once the job succeeded again,
    # its new images are exported (and await a new review), as the plan no longer redoes it.
    key = keys(run)
    record_decisions(run, [("sku-3", key["sku-3"], "rejected")])  # now: after the run
    assert export(run, str(tmp_path / "before")).copied == 3
    redone = Succeeded(
        job_id="sku-3", key=key["sku-3"], outputs=("sku-3/0.png",), ts="2099-01-02T00:00:00Z"
    )
    with (run / LEDGER_NAME).open("ab") as ledger:
        ledger.write(to_line(redone))
    result = export(run, str(tmp_path / "all"))
    assert result.copied == 4 and not any("rejected" in note for note in result.skipped)
