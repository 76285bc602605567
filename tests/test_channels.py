"""``pipeline export --profile shopify|google|amazon``: the channel files, the checks they enforce,
``--fit``, and picked variants."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from PIL import Image, ImageDraw

import pipeline
from pipeline.events import JobStarted, JobSucceeded
from pipeline.images import Channel, marketplace_checks
from pipeline.images.provenance import add_provenance
from pipeline.layout import LEDGER_NAME
from pipeline.ledger import record_for, to_line
from pipeline.ledger.decisions import record_picks
from pipeline.models import Feature, InputRef, Job, PlannedJob
from pipeline.review.channels import (
    SHOPIFY_COLUMNS,
    ChannelOptions,
    Profile,
    export_channel,
    url_maker,
)
from pipeline.review.export import ExportError, export
from tests.helpers.e2e import QUICK_POLLS, REPO, records, run_inprocess

BASE = "https://cdn.example.com/edits/"
GROUND = 255
OFF_WHITE = 247
PRODUCT = (70, 50, 40)


def on_ground(size: tuple[int, int], box: tuple[int, int, int, int], ground: int = GROUND) -> bytes:
    """A PNG as the store keeps it: a product (a dark box) on a plain ground, provenance in."""
    image = Image.new("RGB", size, (ground,) * 3)
    ImageDraw.Draw(image).rectangle(box, fill=PRODUCT)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return add_provenance(buffer.getvalue(), creator_tool="onemin-pipeline test")


@dataclass
class ShopJob:
    job_id: str
    images: list[bytes]
    group: str | None = None
    checked: bool = True  # its succeeded line keeps the checks (else: a line from before them)


def shop_run(out: Path, jobs: list[ShopJob]) -> Path:
    """An output folder of real ledger lines (``record_for`` of real events) over these images."""
    lines = []
    for job in jobs:
        spec = Job(
            job.job_id,
            Feature.BACKGROUND,
            InputRef("file", f"/inputs/{job.job_id}.png"),
            "on white",
            group=job.group,
        )
        planned = PlannedJob(spec, f"key-{job.job_id}")
        outputs = []
        for index, data in enumerate(job.images):
            (out / job.job_id).mkdir(parents=True, exist_ok=True)
            (out / job.job_id / f"{index}.png").write_bytes(data)
            outputs.append(f"{job.job_id}/{index}.png")
        checks = tuple(marketplace_checks(data) for data in job.images) if job.checked else ()
        succeeded = JobSucceeded(job.job_id, planned.key, tuple(outputs), 1, 1, "u", checks=checks)
        for event in (JobStarted(planned), succeeded):
            record = record_for(event)
            assert record is not None
            lines.append(to_line(record))
    (out / LEDGER_NAME).write_bytes(b"".join(lines))
    return out


def read_table(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


# -- Amazon: the main-image checks, enforced; --fit -------------------------------------------

AMAZON_CASES = {
    # job id: (the image, its verdict in export.csv, whether --fit makes it pass)
    "white": (on_ground((1024, 1024), (61, 61, 963, 963)), "pass", True),
    "touching": (on_ground((1024, 1024), (0, 100, 880, 960)), "border_not_white", True),
    "off-white": (
        on_ground((1024, 1024), (61, 61, 963, 963), OFF_WHITE),
        "border_not_white",
        False,
    ),
    "small": (on_ground((1024, 1024), (112, 112, 912, 912)), "fill_low", True),
    "900px": (on_ground((900, 900), (54, 54, 846, 846)), "too_small", True),
}


@pytest.fixture
def amazon_run(tmp_path: Path) -> Path:
    jobs = [
        # Half of them from lines older than the checks: export judges those files itself.
        ShopJob(job_id, [image], checked=index % 2 == 0)
        for index, (job_id, (image, _, _)) in enumerate(AMAZON_CASES.items())
    ]
    return shop_run(tmp_path / "out", jobs)


def test_every_delivered_image_has_its_verdicts_in_export_csv(
    amazon_run: Path, tmp_path: Path
) -> None:
    export(amazon_run, str(tmp_path / "plain"))
    rows = {row["id"]: row for row in read_table(tmp_path / "plain" / "export.csv")}
    assert {job: row["amazon"] for job, row in rows.items()} == {
        job: verdict for job, (_, verdict, _) in AMAZON_CASES.items()
    }
    assert {row["google"] for row in rows.values()} == {"pass"}
    assert rows["900px"]["shopify"] == "pass"


def test_the_amazon_profile_leaves_out_and_lists_what_fails(
    amazon_run: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "amazon"
    result = export_channel(amazon_run, str(dest), ChannelOptions(Profile.AMAZON, BASE))
    table = read_table(dest / "amazon.tsv", "\t")
    assert [(row["sku"], row["main_image_url"]) for row in table] == [
        ("white", BASE + "white_0.png")
    ]
    left = "\n".join(result.left_out)
    for job_id in ("touching", "off-white", "small", "900px"):
        assert f"{job_id} image 0: fails amazon's checks" in left
        assert not (dest / f"{job_id}_0.png").exists()  # not copied either
    assert "product off-white: left out of amazon.tsv" in left
    assert result.line().endswith(
        "amazon.tsv: 1 image of 1 product; left out: 4 images, 4 products"
    )


def test_fit_fixes_what_framing_alone_fixes_and_not_an_off_white_ground(
    amazon_run: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "amazon"
    options = ChannelOptions(Profile.AMAZON, BASE, fit=True)
    result = export_channel(amazon_run, str(dest), options)
    fixed = [job for job, (_, verdict, fits) in AMAZON_CASES.items() if fits and verdict != "pass"]
    listed = [row["sku"] for row in read_table(dest / "amazon.tsv", "\t")]
    assert listed == ["white", *fixed] and result.fitted == len(fixed) == 3
    for job_id in fixed:
        copy = dest / f"{job_id}_0.png"
        assert marketplace_checks(copy).passes(Channel.AMAZON)  # the fitted copy, delivered
        assert copy.read_bytes() != (amazon_run / job_id / "0.png").read_bytes()
    assert any(
        line.startswith("off-white image 0: --fit cannot fix it: background not pure white")
        for line in result.left_out
    )
    csv_rows = {row["id"]: row for row in read_table(dest / "export.csv")}
    assert csv_rows["touching"]["amazon"] == "pass"  # export.csv describes what DEST holds
    again = export_channel(amazon_run, str(dest), options)
    assert (again.copied, again.unchanged) == (0, 4)  # a fit is the same bytes every time


# -- picks and variants -------------------------------------------------------------------------


def variants(count: int) -> list[bytes]:
    return [on_ground((64, 64), (8, 8, 40 + 4 * i, 40 + 4 * i)) for i in range(count)]


@pytest.fixture
def variant_run(tmp_path: Path) -> Path:
    jobs = [
        ShopJob("picked", variants(3)),
        ShopJob("unpicked", variants(3)),
        ShopJob("one", variants(1)),
    ]
    out = shop_run(tmp_path / "out", jobs)
    record_picks(out, [("picked", "key-picked", 2)])
    return out


def shopify_rows(out: Path, dest: Path, all_variants: bool = False) -> list[tuple[str, str, str]]:
    options = ChannelOptions(Profile.SHOPIFY, BASE)
    export_channel(out, str(dest), options, all_variants=all_variants)
    table = read_table(dest / "shopify.csv")
    return [
        (row["Handle"], row["Image Src"].removeprefix(BASE), row["Image Position"]) for row in table
    ]


def test_a_pick_is_the_jobs_image_and_an_unpicked_job_gives_its_first(
    variant_run: Path, tmp_path: Path
) -> None:
    assert shopify_rows(variant_run, tmp_path / "one") == [
        ("picked", "picked_2.png", "1"),
        ("unpicked", "unpicked_0.png", "1"),
        ("one", "one_0.png", "1"),
    ]


def test_all_variants_follow_the_jobs_image(variant_run: Path, tmp_path: Path) -> None:
    assert shopify_rows(variant_run, tmp_path / "all", all_variants=True) == [
        ("picked", "picked_2.png", "1"),
        ("picked", "picked_0.png", "2"),
        ("picked", "picked_1.png", "3"),
        ("unpicked", "unpicked_0.png", "1"),
        ("unpicked", "unpicked_1.png", "2"),
        ("unpicked", "unpicked_2.png", "3"),
        ("one", "one_0.png", "1"),
    ]


def test_a_plain_export_delivers_the_pick_alone_and_every_image_of_an_unpicked_job(
    variant_run: Path, tmp_path: Path
) -> None:
    export(variant_run, str(tmp_path / "plain"))
    names = sorted(p.name for p in (tmp_path / "plain").glob("*.png"))
    assert names == [
        "one_0.png",
        "picked_2.png",
        "unpicked_0.png",
        "unpicked_1.png",
        "unpicked_2.png",
    ]
    export(variant_run, str(tmp_path / "every"), all_variants=True)
    assert len(list((tmp_path / "every").glob("picked_*.png"))) == 3


# -- a Shopify export, run, reviewed and delivered ---------------------------------------------


@pytest.fixture(scope="module")
def shopify_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    jobs = tmp_path_factory.mktemp("shop") / "jobs"
    shutil.copytree(REPO / "jobs", jobs, ignore=shutil.ignore_patterns("out"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("ONEMIN_API_KEY", raising=False)
        args = ["run", str(jobs / "shopify.yaml"), "--emulator", "--no-progress", "--no-report"]
        args += ["--config", str(QUICK_POLLS), "--rpm", "60000"]
        assert pipeline.cli.main(args) == 0
    yield jobs / "out" / "shopify"


def source_rows() -> list[dict[str, str]]:
    return [row for row in read_table(REPO / "jobs" / "shopify_export.csv") if row["Image Src"]]


def test_a_shopify_export_goes_back_as_a_product_csv(
    shopify_out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shopify_out = Path(shutil.copytree(shopify_out, tmp_path / "out"))  # its reviews are its own
    started = [r for r in records(shopify_out) if r["status"] == "started"]
    assert {r["job"]["group"] for r in started} == {
        "speckled-mug",
        "linen-table-lamp",
        "canvas-sneaker",
    }
    review = ["review", str(shopify_out), "--reject", "canvas-sneaker-1,canvas-sneaker-2"]
    review += ["--approve", "speckled-mug-1,speckled-mug-2,linen-table-lamp-1"]
    assert run_inprocess(review, {}, monkeypatch, capsys).code == 0
    dest = tmp_path / "shop"
    command = ["export", str(shopify_out), str(dest), "--profile", "shopify", "--base-url", BASE]
    result = run_inprocess(command, {}, monkeypatch, capsys)
    assert result.code == 0, result.streams
    assert (
        "left out: product canvas-sneaker: left out of shopify.csv: every image was rejected"
        in result.stderr
    )

    with (dest / "shopify.csv").open(newline="", encoding="utf-8") as csv_file:
        header, *body = list(csv.reader(csv_file))
    assert tuple(header) == SHOPIFY_COLUMNS
    approved = [row for row in source_rows() if row["Handle"] != "canvas-sneaker"]
    assert len(body) == len(approved) == 3  # one row per delivered image of approved products
    expected = {(row["Handle"], row["Image Position"], row["Image Alt Text"]) for row in approved}
    assert {(handle, position, alt) for handle, _, position, alt in body} == expected
    for handle, url, position, _ in body:
        assert url == f"{BASE}{handle}-{position}_0.png"  # under the base, the file at DEST
        assert (dest / url.removeprefix(BASE)).is_file()
    assert [row[0] for row in body] == ["speckled-mug", "speckled-mug", "linen-table-lamp"]


def test_a_google_feed_with_ids_from_the_rows(shopify_out: Path, tmp_path: Path) -> None:
    dest = tmp_path / "google"
    result = pipeline.export(
        shopify_out, str(dest), profile="google", base_url=BASE, feed_id="{Variant SKU}"
    )
    assert result.channel_file == "google.tsv" and result.products == 3
    table = read_table(dest / "google.tsv", "\t")
    assert [row["id"] for row in table] == ["MUG-SPK-WHT", "LAMP-LIN-01", "SNK-CNV-40"]
    mug = table[0]
    assert mug["image_link"] == BASE + "speckled-mug-1_0.png"
    assert mug["additional_image_link"] == BASE + "speckled-mug-2_0.png"
    assert table[1]["additional_image_link"] == ""


def test_a_template_naming_no_column_is_refused_before_anything_is_copied(
    shopify_out: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "nothing"
    with pytest.raises(
        ExportError, match=r"--alt-text for job speckled-mug-1: \{Colour\} names no column"
    ):
        pipeline.export(
            shopify_out, str(dest), profile="shopify", base_url=BASE, alt_text="{Colour}"
        )
    assert not list(dest.glob("*.png"))


def test_alt_text_and_a_bucket_destination(shopify_out: Path) -> None:
    pipeline.export(
        shopify_out,
        "memory://shop/edits",
        profile="shopify",
        base_url=BASE,
        alt_text="{Image Alt Text} ({position})",
    )
    text = fsspec.filesystem("memory").cat_file("/shop/edits/shopify.csv").decode()
    assert "speckled stoneware mug from above (2)" in text


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest", "root", "url"),
    [
        ("s3://shop/edits", "shop/edits", "https://shop.s3.amazonaws.com/edits/mug%201_0.png"),
        (
            "gs://shop/edits",
            "shop/edits",
            "https://storage.googleapis.com/shop/edits/mug%201_0.png",
        ),
        (
            "az://media/edits",
            "media/edits",
            "https://acct.blob.core.windows.net/media/edits/mug%201_0.png",
        ),
    ],
)
def test_a_bucket_destinations_public_url_form(
    dest: str, root: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    assert url_maker(dest, root, ChannelOptions(Profile.SHOPIFY))("mug 1_0.png") == url


@pytest.mark.parametrize(
    ("dest", "env", "message"),
    [
        ("/srv/shop", {}, "pass --base-url"),
        ("s3://shop/edits", {"AWS_ENDPOINT_URL": "http://minio:9000"}, "S3-compatible endpoint"),
        ("az://media/edits", {}, "AZURE_STORAGE_ACCOUNT_NAME is not set"),
    ],
)
def test_without_a_known_public_url_base_url_is_asked_for(
    dest: str, env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ExportError, match=message):
        url_maker(dest, dest.split("://")[-1], ChannelOptions(Profile.GOOGLE))


def test_options_that_need_a_profile_or_amazon_are_refused(
    variant_run: Path, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="--base-url, --fit only apply with --profile"):
        pipeline.export(variant_run, str(tmp_path / "a"), base_url=BASE, fit=True)
    with pytest.raises(ExportError, match="--fit re-frames for Amazon"):
        pipeline.export(variant_run, str(tmp_path / "b"), profile="google", base_url=BASE, fit=True)
    with pytest.raises(ExportError, match="not an http"):
        pipeline.export(variant_run, str(tmp_path / "c"), profile="google", base_url="ftp://x/")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_name_template_reads_the_manifests_row(shopify_out: Path, tmp_path: Path) -> None:
    dest = tmp_path / "named"
    export(shopify_out, str(dest), "{Handle}/{Image Position}.{ext}")
    made = sorted(str(path.relative_to(dest)) for path in dest.rglob("*.png"))
    assert made == [
        "canvas-sneaker/1.png",
        "canvas-sneaker/2.png",
        "linen-table-lamp/1.png",
        "speckled-mug/1.png",
        "speckled-mug/2.png",
    ]
