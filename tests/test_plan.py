"""plan.py (content keys, digests, scan, prepare), summary.py (the validate / dry-run report),
credits.py (the credit table)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.credits import load_credit_table
from pipeline.errors import ConfigError, Problem
from pipeline.ledger import JobState, LedgerState
from pipeline.manifest import load_manifest
from pipeline.models import Feature, InputRef, Job, PlannedJob, Status
from pipeline.plan import keys as keys_module
from pipeline.plan import prepare as plan_module
from pipeline.plan.prepare import Planner, content_key, file_digest, prepare_file, scan
from pipeline.plan.summary import PlanSummary, format_plan, format_problems
from pipeline.preflight import Notice
from tests.helpers.images import demo_inputs, make_alpha_mask, make_mask, write_manifest

REPO = Path(__file__).resolve().parent.parent


def summarize(path: Path, done: dict[str, str] | None = None) -> PlanSummary:
    """The plan's summary, with ``done`` (job id -> key) succeeded in the ledger."""
    ledger = LedgerState()
    for order, (job_id, key) in enumerate((done or {}).items()):
        ledger.jobs[job_id] = JobState(job_id, Status.SUCCEEDED, key, order)
    return prepare_file(path, ledger).summary


def raw_inputs(folder: Path) -> tuple[Path, Path]:
    # The planner never decodes: plain bytes keep the golden key independent of Pillow.
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = folder / "image.png", folder / "mask.png"
    image.write_bytes(b"image-bytes")
    mask.write_bytes(b"mask-bytes")
    return image, mask


def job_for(image: Path, mask: Path | None = None, **changes: Any) -> Job:
    job = Job(
        id="sku-1",
        feature=Feature.INPAINT,
        image=InputRef("file", str(image)),
        mask=InputRef("file", str(mask)) if mask else None,
        prompt="linen lampshade",
        location="m.yaml job 1",
    )
    return replace(job, **changes)


# --- digests and keys -----------------------------------------------------------------------


def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()


GOLDEN_KEY = "b940a09e4844d6036989a051b9ccb9796d9a99b8d0cd97a5c605a785c161815a"


def test_key_is_stable_across_processes(tmp_path: Path) -> None:
    image, mask = raw_inputs(tmp_path)
    key = Planner().plan(job_for(image, mask)).key
    code = (
        "import sys; from pathlib import Path; from pipeline.plan.prepare import Planner;"
        "from tests.test_plan import job_for;"
        "print(Planner().plan(job_for(Path(sys.argv[1]), Path(sys.argv[2]))).key)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(image), str(mask)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == key


def test_key_has_not_changed_by_accident(tmp_path: Path) -> None:
    # Changing what goes into the key re-runs every user's finished jobs: bump KEY_VERSION and
    # update this value deliberately, never as a side effect.
    image, mask = raw_inputs(tmp_path)
    assert Planner().plan(job_for(image, mask)).key == GOLDEN_KEY


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "linen lampshade."},
        {"size": "1536x1024"},
        {"n": 2},
        {"quality": "high"},
        {"output_format": "webp"},
        {"output_compression": 84},
        {"feature": Feature.BACKGROUND, "mask": None},
    ],
)
def test_any_parameter_changes_the_key(tmp_path: Path, changes: dict[str, Any]) -> None:
    image, mask = raw_inputs(tmp_path)
    planner = Planner()
    base = planner.plan(job_for(image, mask)).key
    assert planner.plan(replace(job_for(image, mask), **changes)).key != base


def test_background_parameter_changes_the_key(tmp_path: Path) -> None:
    image, _ = raw_inputs(tmp_path)
    job = job_for(image, feature=Feature.BACKGROUND)
    planner = Planner()
    assert planner.plan(job).key != planner.plan(replace(job, background="opaque")).key


def test_id_and_location_do_not_change_the_key(tmp_path: Path) -> None:
    image, mask = raw_inputs(tmp_path)
    planner = Planner()
    moved = job_for(image, mask, id="other", location="rows.csv row 9")
    assert planner.plan(moved).key == planner.plan(job_for(image, mask)).key


def test_a_changed_byte_or_mask_conversion_changes_the_key(tmp_path: Path) -> None:
    image, mask = raw_inputs(tmp_path)
    job = job_for(image, mask)
    before = Planner().plan(job).key
    assert Planner().plan(job, mask_convert=True).key != before
    mask.write_bytes(b"mask-bytez")
    assert Planner().plan(job).key != before
    mask.write_bytes(b"mask-bytes")
    image.write_bytes(b"image-bytez")
    assert Planner().plan(job).key != before


def test_url_and_asset_inputs_are_keyed_by_their_text(tmp_path: Path) -> None:
    job = job_for(tmp_path, mask=None, feature=Feature.BACKGROUND)
    url = replace(job, image=InputRef("url", "https://e.com/a.png"))
    asset = replace(job, image=InputRef("asset", "https://e.com/a.png"))
    planned = Planner().plan(url)
    assert planned.image_digest is None
    assert planned.key != Planner().plan(asset).key
    assert planned.key == content_key(url, "url:https://e.com/a.png", None)


def test_digest_computed_once_per_distinct_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real_digest = keys_module.file_digest

    def counting_digest(path: Path) -> str:
        calls.append(path)
        return real_digest(path)

    monkeypatch.setattr(keys_module, "file_digest", counting_digest)
    image, mask = raw_inputs(tmp_path)
    (tmp_path / "alias.png").symlink_to(image)
    planner = Planner()
    spellings = [image, tmp_path / "alias.png", tmp_path / ".." / tmp_path.name / "image.png"]
    for index in range(300):
        planner.plan(job_for(spellings[index % 3], mask, id=f"j{index}"))
    assert sorted(calls) == sorted([image, mask])


# --- scan -----------------------------------------------------------------------------------


def test_scan_yields_problems_notices_and_planned_jobs_in_order(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    make_mask(tmp_path / "masks" / "black.png", fill=0, edit=0)
    make_alpha_mask(tmp_path / "masks" / "alpha.png")
    base = {"type": "inpaint", "image": "images/item.png", "prompt": "p"}
    jobs = [
        {**base, "id": "good", "mask": "masks/item.png", "size": "auto"},
        {**base, "id": "black", "mask": "masks/black.png"},
        {**base, "id": "missing", "mask": "masks/none.png"},
        {**base, "id": "alpha", "mask": "masks/alpha.png"},
        {**base, "id": "bad-n", "mask": "masks/item.png", "n": "many"},
    ]
    manifest = load_manifest(write_manifest(tmp_path, {"jobs": jobs}))
    items = list(scan(manifest))
    kinds = [(type(item).__name__, _job_id(item)) for item in items]
    assert kinds == [
        ("PlannedJob", "good"),
        # All black: it would buy an unchanged image (docs/manifest.md#mask-modifiers).
        ("Problem", "black"),
        ("Problem", "missing"),
        ("Notice", "alpha"),
        ("PlannedJob", "alpha"),
        ("Problem", "bad-n"),
    ]
    planned = [item for item in items if isinstance(item, PlannedJob)]
    assert planned[0].job.size == "1024x1024"  # auto resolved before the key is made
    assert [p.mask_convert for p in planned] == [False, True]
    assert planned[0].image_digest == planned[1].image_digest


def _job_id(item: PlannedJob | Problem | Notice) -> str | None:
    return item.job.id if isinstance(item, PlannedJob) else item.job


def test_scan_is_lazy(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    rows = "".join(f"j{i},images/item.png,p\n" for i in range(20_000))
    (tmp_path / "rows.csv").write_text("id,image,prompt\n" + rows, encoding="utf-8")
    manifest = load_manifest(
        write_manifest(tmp_path, {"defaults": {"type": "background"}, "items": "rows.csv"})
    )
    first = next(scan(manifest))
    assert isinstance(first, PlannedJob) and first.job.id == "j0"


def test_duplicate_ids_across_jobs_and_items(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    (tmp_path / "rows.csv").write_text("id,image,prompt\nsame,images/item.png,p\n")
    data = {
        "defaults": {"type": "background", "prompt": "p"},
        "jobs": [{"id": "same", "image": "images/item.png"}],
        "items": "rows.csv",
    }
    items = list(scan(load_manifest(write_manifest(tmp_path, data))))
    (problem,) = [item for item in items if isinstance(item, Problem)]
    assert (problem.job, problem.field, problem.location) == ("same", "id", "rows.csv row 1")
    assert "already used by the job at manifest.yaml:" in problem.message


def test_every_reuse_of_an_id_is_named(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    rows = "".join(f"{name},images/item.png,p\n" for name in ("a", "B", "b", "c", "A"))
    (tmp_path / "rows.csv").write_text("id,image,prompt\n" + rows)
    data = {"defaults": {"type": "background"}, "items": "rows.csv"}
    items = list(scan(load_manifest(write_manifest(tmp_path, data))))
    named = [(p.job, p.location) for p in items if isinstance(p, Problem)]
    assert named == [("b", "rows.csv row 3"), ("A", "rows.csv row 5")]


# --- validate -------------------------------------------------------------------------------


def test_summary_counts_and_credits(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    base = {"image": "images/item.png", "prompt": "p"}
    jobs = [
        {**base, "id": "a", "type": "inpaint", "mask": "masks/item.png", "n": 3, "quality": "low"},
        {**base, "id": "b", "type": "inpaint", "mask": "masks/item.png"},
        {**base, "id": "c", "type": "background", "quality": "high"},
        {**base, "id": "d", "type": "background", "prompt": ""},
    ]
    summary = summarize(write_manifest(tmp_path, {"name": "spring", "jobs": jobs}))
    inpaint, background = summary.counts[Feature.INPAINT], summary.counts[Feature.BACKGROUND]
    assert (inpaint.jobs, inpaint.calls, inpaint.images, inpaint.uploads) == (2, 2, 4, 2)
    assert inpaint.credits == 3 * 1000 + 4000
    assert (background.jobs, background.images, background.credits) == (1, 1, 8000)
    assert (summary.uploads, summary.total.credits, summary.total.jobs) == (2, 15000, 3)
    assert (summary.problem_count, summary.ok) == (1, False)
    report = format_plan(summary)
    assert "Manifest 'spring'" in report and "15,000" in report and "NOT READY" in report
    assert "job 'd' (manifest.yaml:" in report and "prompt: is empty" in report


def test_summary_skips_jobs_the_ledger_has_done(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    jobs = [{"id": f"j{i}", "image": "images/item.png", "prompt": f"p{i}"} for i in range(3)]
    path = write_manifest(tmp_path, {"defaults": {"type": "background"}, "jobs": jobs})
    keys = {p.job.id: p.key for p in scan(load_manifest(path)) if isinstance(p, PlannedJob)}
    # A finished job with another key (its prompt changed since) runs again.
    done = {"j0": keys["j0"], "j1": "stale-key"}
    summary = summarize(path, done)
    counts = summary.counts[Feature.BACKGROUND]
    assert (counts.jobs, counts.skipped, counts.calls) == (3, 1, 2)
    assert "READY: 2 feature calls would produce 2 images." in format_plan(summary)


def test_summary_of_a_manifest_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\njobs: [\n")
    summary = summarize(path)
    assert not summary.ok and "not valid YAML" in format_plan(summary)


def test_the_examples_in_jobs_are_valid() -> None:
    for name in ("demo", "catalog"):
        summary = summarize(REPO / "jobs" / f"{name}.yaml")
        assert summary.ok, format_plan(summary)
        assert summary.warning_count == 0


def test_format_problems_groups_by_job_and_limits() -> None:
    problems = [Problem(None, "version", "missing", "m.yaml")]
    problems += [Problem(f"j{i}", "n", "too big", f"m.yaml job {i}") for i in range(5)]
    problems.append(Problem("j4", "prompt", "is empty", "m.yaml job 4"))
    text = format_problems(problems, limit=4)
    assert text.splitlines() == [
        "7 problems:",
        "  m.yaml:",
        "    version: missing",
        "  job 'j0' (m.yaml job 0):",
        "    n: too big",
        "  job 'j1' (m.yaml job 1):",
        "    n: too big",
        "  job 'j2' (m.yaml job 2):",
        "    n: too big",
        "  ... and 3 more",
    ]
    assert format_problems([]) == ""
    warning = Notice("j1", "mask", "is all black", "m.yaml job 1")
    assert format_problems([warning], heading="warnings").startswith("1 warning:\n")
    assert "and 4,995 more" in format_problems(problems[:5], limit=10, total=5000)


def test_credit_table_is_package_data_and_a_file_may_replace_it(tmp_path: Path) -> None:
    table = load_credit_table()
    assert table.source == "pipeline/data/credits.yaml"  # shipped in the wheel, not a checkout
    assert table.per_image["IMAGE_INPAINTER"] == {"low": 1000, "medium": 4000, "high": 8000}
    custom = tmp_path / "credits.yaml"
    custom.write_text(
        "per_image:\n"
        "  IMAGE_INPAINTER: {low: 1, medium: 2, high: 3}\n"
        "  BACKGROUND_REPLACER: {low: 4, medium: 5, high: 6}\n"
    )
    assert load_credit_table(custom).per_image["BACKGROUND_REPLACER"]["high"] == 6
    custom.write_text("per_image:\n  IMAGE_INPAINTER: {low: 1, medium: -2, high: 3}\n")
    with pytest.raises(ConfigError, match=r"per_image\.IMAGE_INPAINTER\.medium"):
        load_credit_table(custom)


def entries_manifest(folder: Path) -> Path:
    """Two jobs, a glob of one file and a CSV of three rows (one blank): six entries."""
    demo_inputs(folder)
    (folder / "items.csv").write_text(
        "id,image,mask,prompt\n"
        "c1,images/item.png,masks/item.png,one\n"
        ",,,\n"
        "c2,images/item.png,masks/item.png,two\n"
        "c3,images/item.png,masks/item.png,three\n",
        encoding="utf-8",
    )
    return write_manifest(
        folder,
        {
            "defaults": {"type": "inpaint"},
            "jobs": [
                {"id": "j1", "image": "images/item.png", "mask": "masks/item.png", "prompt": "a"},
                {"id": "j2", "image": "images/item.png", "mask": "masks/item.png", "prompt": "b"},
            ],
            "glob": [
                {
                    "pattern": "images/*.png",
                    "id": "g-{stem}",
                    "prompt": "c",
                    "mask": "masks/{stem}.png",
                }
            ],
            "items": "items.csv",
        },
    )


def test_entries_stream_in_manifest_order(tmp_path: Path) -> None:
    manifest = load_manifest(entries_manifest(tmp_path))
    jobs = [item for item in manifest.iter_jobs() if isinstance(item, Job)]
    assert [(job.id, job.location) for job in jobs] == [
        ("j1", "manifest.yaml:5 job 1"),
        ("j2", "manifest.yaml:9 job 2"),
        ("g-item", "manifest.yaml:14 glob 1 (images/item.png)"),
        ("c1", "items.csv row 1"),
        ("c2", "items.csv row 3"),  # the blank row is no job
        ("c3", "items.csv row 4"),
    ]


def test_the_plan_streams_what_its_one_pass_spooled(tmp_path: Path) -> None:
    manifest = load_manifest(entries_manifest(tmp_path))
    full = [p for p in scan(manifest) if isinstance(p, PlannedJob)]
    ledger = LedgerState()
    ledger.jobs["j2"] = JobState("j2", Status.SUCCEEDED, full[1].key, 0)
    plan = plan_module.prepare(manifest, ledger, plan_module.PlanOptions(), load_credit_table())
    assert plan.ok and plan.skipped == {plan_module.Skip.DONE: 1}
    streamed = list(plan.jobs)
    assert streamed == [p for p in full if p.job.id != "j2"]  # equal values, manifest order
    assert list(plan.jobs) == []  # read once; the spool is closed and gone


def test_a_flawed_job_is_checked_for_everything_but_never_planned(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    make_mask(tmp_path / "masks" / "small.png", size=(32, 16))  # another aspect ratio: an error
    data = {
        "defaults": {"type": "inpaint"},
        "jobs": [
            {"id": "ok", "image": "images/item.png", "mask": "masks/item.png", "prompt": "p"},
            {
                "id": "../escape",
                "image": "images/item.png",
                "mask": "masks/small.png",
                "prompt": "",
                "n": 12,
                "qualty": "high",
            },
        ],
    }
    items = list(scan(load_manifest(write_manifest(tmp_path, data))))
    assert [p.job.id for p in items if isinstance(p, PlannedJob)] == ["ok"]
    fields = {p.field for p in items if isinstance(p, Problem) and p.job == "../escape"}
    assert fields == {"qualty", "id", "prompt", "n", "mask"}  # every problem, in one pass


def test_the_spool_gives_back_every_job_equal_and_in_order(tmp_path: Path) -> None:
    image, mask = raw_inputs(tmp_path)
    shared = [job_for(image, mask, id=f"j{i}", prompt=f"p{i % 3}") for i in range(50)]
    planned = [Planner().plan(job) for job in shared]
    spool = plan_module.Spool()
    for item in planned:
        spool.add(item)
    assert list(spool) == planned  # each job pickled alone: no memo shared between them
