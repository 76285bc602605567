"""Remote inputs: fetched once into the cache, then checked like files, before anything is spent."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.inputs.cache import InputCache
from pipeline.inputs.fetch import FetchOptions, Prefetcher, prefetched
from pipeline.models import Feature, InputRef, Job
from pipeline.plan.prepare import Planner
from pipeline.preflight import Preflight
from tests.helpers.e2e import QUICK_POLLS
from tests.helpers.servers import ImageHost

FAST = FetchOptions(backoff=0.0, retries=1, timeout=5.0)


def _preflight(tmp_path: Path) -> Preflight:
    return Preflight(cache=InputCache(tmp_path / "cache"), fetch_options=FAST)


def _job(url: str, size: str = "auto") -> Job:
    return Job(
        "j", Feature.BACKGROUND, InputRef("url", url), "p", size=size, location="c.csv row 3"
    )


def test_a_url_is_fetched_measured_and_keyed_by_its_bytes(
    tmp_path: Path,
    image_host: ImageHost,
) -> None:
    url = image_host.url("/img/tall.png")
    preflight = _preflight(tmp_path)
    job, problems, notices = preflight.check(_job(url))
    assert problems == [] and notices == []  # no "auto needs a local image"
    assert job is not None and job.size == "1024x1536"  # measured: 40x80 is portrait
    assert job.image.kind == "file" and preflight.sources[job.image.value] == url
    first_key = Planner().plan(job).key
    # The image behind the same URL changes: a new run fetches again and gets another key.
    image_host.images["tall.png"] = image_host.png((0, 200, 0), (40, 80))
    again, _, _ = _preflight(tmp_path).check(_job(url))
    assert again is not None and Planner().plan(again).key != first_key


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/img/missing.png", "does not exist (HTTP 404)"),
        ("/page.jpg", "is not an image"),
        ("/go?to=ftp://127.0.0.1/a.png", "only http(s) redirects are followed"),
    ],
)
def test_bad_urls_are_problems_naming_row_and_url(
    tmp_path: Path,
    image_host: ImageHost,
    path: str,
    expected: str,
) -> None:
    url = image_host.url(path)
    _, problems, _ = _preflight(tmp_path).check(_job(url))
    assert len(problems) == 1
    assert problems[0].location == "c.csv row 3"
    assert url in problems[0].message and expected in problems[0].message


def test_a_redirect_to_http_is_followed(tmp_path: Path, image_host: ImageHost) -> None:
    url = image_host.url("/go?to=" + image_host.url("/img/a.png"))
    job, problems, _ = _preflight(tmp_path).check(_job(url, "1024x1024"))
    assert problems == [] and job is not None


def test_a_host_that_dies_mid_run_is_a_problem_not_a_traceback(
    tmp_path: Path,
    image_host: ImageHost,
) -> None:
    preflight = _preflight(tmp_path)
    ok, problems, _ = preflight.check(_job(image_host.url("/img/a.png"), "1024x1024"))
    assert ok is not None and problems == []
    image_host.stop()
    _, problems, _ = preflight.check(_job(image_host.url("/img/other.png"), "1024x1024"))
    assert len(problems) == 1 and "could not be fetched" in problems[0].message
    assert "(after 2 tries)" in problems[0].message


def test_prefetch_fetches_each_distinct_url_once(tmp_path: Path, image_host: ImageHost) -> None:
    preflight = _preflight(tmp_path)
    jobs = [_job(image_host.url("/img/a.png"), "1024x1024") for _ in range(50)]
    assert preflight.prefetch_manifest(jobs) == 1
    for job in jobs:
        assert preflight.check(job)[1] == []
    assert image_host.hits["a.png"] == 1 and preflight.fetched == 1


def test_the_prefetcher_keeps_concurrency_fetches_open_and_no_more(
    tmp_path: Path,
    image_host: ImageHost,
) -> None:
    image_host.hold_until = 3  # each request waits until three are in flight together
    urls = [image_host.url(f"/held/a.png?copy={i}") for i in range(7)]
    options = FetchOptions(concurrency=3, backoff=0.0, retries=0, timeout=10.0)
    with Prefetcher(InputCache(tmp_path / "cache"), options) as prefetcher:
        prefetcher.submit(urls)
        results = [prefetcher.result(url) for url in urls]
    assert image_host.max_in_flight == 3
    assert all(not isinstance(result, str) for result in results)
    assert image_host.hits["a.png"] == 7  # seven distinct URLs, one blob in the cache


def test_prefetched_reads_a_window_ahead_in_order_and_each_url_once(
    tmp_path: Path,
    image_host: ImageHost,
) -> None:
    rows = [
        image_host.url(f"/img/{name}") for name in ("a.png", "missing.png", "a.png", "tall.png")
    ]
    with Prefetcher(InputCache(tmp_path / "cache"), FAST) as prefetcher:
        stream = prefetched(rows, lambda url: [url], prefetcher, window=2)
        assert next(stream) == rows[0]
        assert prefetcher.submitted == 2  # rows 0..2 read: a.png and missing.png started
        assert list(stream) == rows[1:]
        assert prefetcher.submitted == 3
        assert prefetcher.result(rows[1]) == "does not exist (HTTP 404)"
        fetched = prefetcher.result(rows[3])
    assert (
        not isinstance(fetched, str) and fetched.path.read_bytes() == image_host.images["tall.png"]
    )
    assert image_host.hits == {"a.png": 1, "missing.png": 1, "tall.png": 1}


def test_validate_names_the_one_404_among_200_urls(
    tmp_path: Path,
    image_host: ImageHost,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ONEMIN_INPUT_CACHE", str(tmp_path / "cache"))
    for index in range(200):
        image_host.images[f"p{index}.png"] = image_host.png((index, 10, 10))
    rows = ["id,image,prompt"]
    rows += [f"p{i},{image_host.url(f'/img/p{i}.png')},studio shot" for i in range(200)]
    rows[118] = f"p117,{image_host.url('/img/gone.png')},studio shot"  # CSV row 118
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump({"version": 1, "defaults": {"type": "background"}, "items": "catalog.csv"})
    )
    assert main(["validate", str(manifest)]) == 2
    output = capsys.readouterr()
    text = output.out + output.err
    assert "catalog.csv row 118" in text and image_host.url("/img/gone.png") in text


def test_the_preflight_pass_fetches_the_next_rows_urls_together(
    tmp_path: Path,
    image_host: ImageHost,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ONEMIN_INPUT_CACHE", str(tmp_path / "cache"))
    image_host.hold_until = 8  # one at a time, each request would wait out the hold
    rows = ["id,image,prompt"]
    rows += [f"p{i},{image_host.url(f'/held/a.png?row={i}')},studio shot" for i in range(8)]
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump({"version": 1, "defaults": {"type": "background"}, "items": "catalog.csv"})
    )
    assert main(["validate", str(manifest)]) == 0, capsys.readouterr()
    assert image_host.max_in_flight == 8  # the eight rows' fetches were open at once
    assert image_host.hits["a.png"] == 8  # and each URL fetched once, rows read once


def test_a_remote_inputs_url_is_what_the_ledger_and_the_review_page_show(
    tmp_path: Path,
    image_host: ImageHost,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.review.page import build_payload
    from tests.helpers.e2e import records, run_cli

    monkeypatch.setenv("ONEMIN_INPUT_CACHE", str(tmp_path / "cache"))
    url = image_host.url("/img/tall.png")
    manifest = tmp_path / "m.yaml"
    job = {"id": "lamp", "type": "background", "image": url, "prompt": "on marble"}
    manifest.write_text(yaml.safe_dump({"version": 1, "jobs": [job]}))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--emulator", "--out", str(out), "--no-progress", "--no-report"]
    args += ["--config", str(QUICK_POLLS), "--rpm", "60000"]
    assert run_cli(args, {}, monkeypatch) == 0
    started = [r for r in records(out) if r["status"] == "started"]
    assert started[0]["job"]["image"] == url  # what the user wrote, not the cache's file
    payload, _thumbs = build_payload(out)
    (source,) = payload["sources"]
    assert source["label"] == url and source.get("thumb")  # labelled by URL, drawn from cache
