"""Generated masks and protect end to end: manifest fields, preflight, keys, upload, delivery."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops

from pipeline.images.masks import AlphaSource, FileSource, MaskRecipe, MaskSource, ShapeSource
from pipeline.images.protect import fit_to
from pipeline.images.provenance import read_provenance
from pipeline.manifest import load_manifest
from pipeline.models import Job, PlannedJob
from pipeline.plan.prepare import Planner, content_key, scan
from pipeline.preflight import Notice, Preflight
from tests.helpers.e2e import QUICK_POLLS, run_cli
from tests.helpers.emulator import emulator_thread
from tests.helpers.images import (
    band_extrema,
    demo_inputs,
    make_image,
    make_mask,
    write_manifest,
)

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


def items(manifest: Path) -> list[Any]:
    return list(load_manifest(manifest).iter_jobs())


def jobs(manifest: Path) -> list[Job]:
    found = items(manifest)
    assert all(isinstance(item, Job) for item in found), found
    return found


def scanned(manifest: Path, preflight: Preflight | None = None) -> list[Any]:
    return list(scan(load_manifest(manifest), preflight))


# --- manifest -------------------------------------------------------------------------------

FORMS: list[tuple[str, MaskSource]] = [
    ("box:0,0.7,1,1", ShapeSource("box", (0, 0.7, 1, 1), True)),
    ("Ellipse: 0.3, 0.2, 0.7, 0.6", ShapeSource("ellipse", (0.3, 0.2, 0.7, 0.6), True)),
    ("box:0,10,64,64", ShapeSource("box", (0, 10, 64, 64), False)),
    ("alpha", AlphaSource()),
]


def _expected_recipes(tmp_path: Path) -> list[MaskRecipe | None]:
    modified = MaskRecipe(FileSource(str(tmp_path / "masks" / "item.png")), True, 8, 12)
    shapes = [MaskRecipe(source, feather=12) for _, source in FORMS]
    return [*shapes, modified, None]  # the plain file keeps no recipe


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"id": f"j{i}", "mask": text, "mask_feather": 12} for i, (text, _) in enumerate(FORMS)
    ]
    rows.append(
        {"id": "mod", "mask": "masks/item.png", "mask_invert": True, "mask_grow": 8}
        | {"mask_feather": 12, "protect": True}
    )
    rows.append({"id": "plain", "mask": "masks/item.png"})
    return rows


def _defaults() -> dict[str, Any]:
    return {"type": "inpaint", "image": "images/item.png", "prompt": "p"}


def test_every_mask_form_parses_in_yaml(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    manifest = write_manifest(tmp_path, {"defaults": _defaults(), "jobs": _rows()})
    found = jobs(manifest)
    assert [job.mask_recipe for job in found] == _expected_recipes(tmp_path)
    assert [job.protect for job in found] == [False] * 4 + [True, False]
    assert [job.mask is not None for job in found] == [False] * 4 + [True, True]


def test_every_mask_form_parses_in_csv(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    lines = ["id,mask,mask_invert,mask_grow,mask_feather,protect"]
    lines += [f'j{i},"{text}",,,12,' for i, (text, _) in enumerate(FORMS)]
    lines += ["mod,masks/item.png,yes,8,12,1", "plain,masks/item.png,,,,no"]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = write_manifest(tmp_path, {"defaults": _defaults(), "items": "rows.csv"})
    found = jobs(manifest)
    assert [job.mask_recipe for job in found] == _expected_recipes(tmp_path)
    assert [job.protect for job in found] == [False] * 4 + [True, False]


def test_every_mask_form_parses_in_jsonl(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
    manifest = write_manifest(tmp_path, {"defaults": _defaults(), "items": "rows.jsonl"})
    assert [job.mask_recipe for job in jobs(manifest)] == _expected_recipes(tmp_path)


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"mask_feather": 12}, "mask_feather", "needs a mask"),
        ({"protect": True}, "protect", "needs a mask"),
        ({"mask": "box:0,0.5,1,1", "mask_grow": 600}, "mask_grow", "within -512..512"),
        ({"mask": "box:0,0.5,1,1", "mask_feather": -2}, "mask_feather", "within 0..512"),
        ({"mask": "box:0,0.5,1,1", "mask_invert": "maybe"}, "mask_invert", "true or false"),
        ({"mask": "box:0,0.5,1", "protect": True}, "mask", "needs 4 numbers"),
        ({"mask": "ellipse:0.5,0,0.2,1"}, "mask", "x0 must be < x1"),
        ({"type": "background", "mask_invert": True}, "mask_invert", "applies only to"),
        ({"type": "background", "protect": True}, "protect", "applies only to"),
    ],
)
def test_mask_field_problems_name_job_and_field(
    tmp_path: Path, row: dict[str, Any], field: str, message: str
) -> None:
    demo_inputs(tmp_path)
    manifest = write_manifest(tmp_path, {"defaults": _defaults(), "jobs": [{"id": "x", **row}]})
    problems = [item for item in items(manifest) if not isinstance(item, Job)]
    assert len(problems) == 1, problems
    assert (problems[0].job, problems[0].field) == ("x", field)
    assert message in problems[0].message


# --- preflight ------------------------------------------------------------------------------


def _one(tmp_path: Path, row: dict[str, Any], **defaults: Any) -> list[Any]:
    manifest = write_manifest(
        tmp_path, {"defaults": {**_defaults(), **defaults}, "jobs": [{"id": "x", **row}]}
    )
    return scanned(manifest)


def _problem(found: list[Any]) -> Any:
    problems = [item for item in found if not isinstance(item, PlannedJob | Notice)]
    assert len(problems) == 1, found
    assert not any(isinstance(item, PlannedJob) for item in found)
    return problems[0]


def test_all_black_after_invert_is_a_problem(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    problem = _problem(_one(tmp_path, {"mask": "box:0,0,1,1", "mask_invert": True}))
    assert problem.field == "mask" and "edits nothing" in problem.message
    assert "mask_invert" in problem.message


def test_an_all_black_file_mask_is_a_problem_unless_a_modifier_changes_it(
    tmp_path: Path,
) -> None:
    demo_inputs(tmp_path)
    make_mask(tmp_path / "masks" / "black.png", fill=0, edit=0)
    problem = _problem(_one(tmp_path, {"mask": "masks/black.png"}))
    assert problem.field == "mask" and "edits nothing" in problem.message
    inverted = _one(tmp_path, {"mask": "masks/black.png", "mask_invert": True})
    assert any(isinstance(item, PlannedJob) for item in inverted)  # all white: a warning
    assert any(isinstance(i, Notice) and "all white" in i.message for i in inverted)


def test_alpha_on_an_opaque_image_is_a_problem(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    problem = _problem(_one(tmp_path, {"mask": "alpha"}))
    assert problem.field == "mask" and "no transparency" in problem.message


def test_a_mask_of_another_aspect_ratio_is_a_problem(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    make_mask(tmp_path / "masks" / "wide.png", size=(64, 32))
    problem = _problem(_one(tmp_path, {"mask": "masks/wide.png"}))
    assert problem.field == "mask" and "is 64x32 but the image is 64x64" in problem.message


def test_pixel_box_beyond_the_image_is_a_problem(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    problem = _problem(_one(tmp_path, {"mask": "box:0,0,100,10"}))
    assert problem.field == "mask" and "beyond the image" in problem.message


def test_a_mask_of_the_same_shape_is_scaled_with_a_note(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    make_mask(tmp_path / "masks" / "half.png", size=(32, 32))
    found = _one(tmp_path, {"mask": "masks/half.png"})
    notices = [item.message for item in found if isinstance(item, Notice)]
    assert any("scaled from 32x32 to 64x64" in text for text in notices), notices
    (planned,) = [item for item in found if isinstance(item, PlannedJob)]
    assert planned.mask_png is not None
    assert Image.open(io.BytesIO(planned.mask_png)).size == (64, 64)


def test_all_white_is_a_notice_given_once_per_distinct_mask(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    rows = [{"id": f"w{i}", "mask": "box:0,0,1,1"} for i in range(3)]
    found = scanned(write_manifest(tmp_path, {"defaults": _defaults(), "jobs": rows}))
    notices = [item for item in found if isinstance(item, Notice) and "all white" in item.message]
    assert len(notices) == 1 and notices[0].job == "w0"
    assert sum(isinstance(item, PlannedJob) for item in found) == 3


def test_generated_mask_is_drawn_on_the_image_and_scaled_with_its_upload(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "item.png", size=(400, 200))
    manifest = write_manifest(
        tmp_path, {"defaults": _defaults(), "jobs": [{"id": "x", "mask": "box:0,100,400,200"}]}
    )
    (planned,) = [
        i for i in scanned(manifest, Preflight(max_input_side=100)) if isinstance(i, PlannedJob)
    ]
    assert planned.mask_png is not None
    mask = Image.open(io.BytesIO(planned.mask_png))
    assert mask.size == (100, 50)  # the image's upload size
    assert mask.getpixel((50, 10)) == 0 and mask.getpixel((50, 40)) == 255


# --- content keys ---------------------------------------------------------------------------


def _key(tmp_path: Path, row: dict[str, Any]) -> str:
    (planned,) = [i for i in _one(tmp_path, row) if isinstance(i, PlannedJob)]
    return planned.key


def test_a_generated_mask_is_keyed_by_its_recipe(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    keys = {
        _key(tmp_path, {"mask": "box:0,0.5,1,1"}),
        _key(tmp_path, {"mask": "box:0,0.5,1,1", "mask_feather": 4}),
        _key(tmp_path, {"mask": "box:0,0.6,1,1"}),
        _key(tmp_path, {"mask": "masks/item.png", "mask_grow": 2}),
        _key(tmp_path, {"mask": "masks/item.png"}),
    }
    assert len(keys) == 5
    # Same recipe, same image: same key, run after run.
    assert _key(tmp_path, {"mask": "box:0,0.5,1,1"}) == _key(tmp_path, {"mask": "box:0,0.5,1,1"})


def test_a_plain_file_mask_keeps_its_digest_key(tmp_path: Path) -> None:
    image, mask = demo_inputs(tmp_path)
    (planned,) = [
        i for i in _one(tmp_path, {"mask": "masks/item.png"}) if isinstance(i, PlannedJob)
    ]
    planner = Planner()
    expected = content_key(
        planned.job, f"sha256:{planner.digest(image)}", f"sha256:{planner.digest(mask)}"
    )
    assert planned.key == expected and planned.mask_png is None
    assert planned.mask_digest == planner.digest(mask)


# --- end to end -----------------------------------------------------------------------------


def _protect_manifest(tmp_path: Path, prompt: str = "oak tabletop") -> Path:
    make_image(tmp_path / "images" / "item.png", size=(64, 64))
    shared = {"mask": "box:0,0.5,1,1", "mask_feather": 4, "protect": True}
    rows = [{"id": f"p{i}", "prompt": f"{prompt} {i}", **shared} for i in range(2)]
    return write_manifest(
        tmp_path,
        {"defaults": {"type": "inpaint", "image": "images/item.png", "size": "1024x1024"}}
        | {"jobs": rows},
    )


def test_protect_run_keeps_the_source_outside_the_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _protect_manifest(tmp_path)
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        args = ["run", str(manifest), "--out", str(out), *FAST]
        assert run_cli(args, emulator.env, monkeypatch) == 0
        # One image and one generated mask, shared by both jobs.
        assert len(emulator.calls("assets")) == 2
    source = fit_to(Image.open(tmp_path / "images" / "item.png"), (1024, 1024), "RGB")
    # Edit from source row 32 on (x16 at 1024); the feather reaches 2 source px (+1 for the
    # bilinear fit): rows above 29 * 16 are kept exactly.
    kept = (0, 0, 1024, 29 * 16)
    for job_id in ("p0", "p1"):
        delivered_path = out / job_id / "0.png"
        delivered = Image.open(delivered_path).convert("RGB")
        raw = Image.open(out / job_id / ".raw" / "0.png").convert("RGB")
        assert _max_difference(delivered.crop(kept), source.crop(kept)) <= 1
        assert _max_difference(raw.crop(kept), source.crop(kept)) >= 2  # the emulator drifted
        edited = (0, 700, 1024, 1024)
        assert _max_difference(delivered.crop(edited), raw.crop(edited)) == 0
        marked = read_provenance(delivered_path.read_bytes())
        assert marked is not None and marked["creator_tool"].startswith("onemin-pipeline")


def test_a_changed_protected_job_moves_its_raw_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        first = ["run", str(_protect_manifest(tmp_path)), "--out", str(out), *FAST]
        assert run_cli(first, emulator.env, monkeypatch) == 0
        second = ["run", str(_protect_manifest(tmp_path, "walnut")), "--out", str(out), *FAST]
        assert run_cli(second, emulator.env, monkeypatch) == 0
    (stamp,) = (out / "p0" / ".superseded").iterdir()
    assert (stamp / "0.png").is_file() and (stamp / ".raw" / "0.png").is_file()
    assert (out / "p0" / ".raw" / "0.png").is_file() and (out / "p0" / "0.png").is_file()


def _max_difference(first: Image.Image, second: Image.Image) -> int:
    return max(high for _low, high in band_extrema(ImageChops.difference(first, second)))


# --- validate --masks -----------------------------------------------------------------------


def test_validate_writes_effective_masks_and_overlays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    demo_inputs(tmp_path)
    rows = [
        {"id": "gen", "mask": "box:0,0.5,1,1"},
        {"id": "file", "mask": "masks/item.png"},
        {"id": "bg", "type": "background"},
    ]
    manifest = write_manifest(tmp_path, {"defaults": _defaults(), "jobs": rows})
    folder = tmp_path / "previews"
    assert run_cli(["validate", str(manifest), "--masks", str(folder)], {}, monkeypatch) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "file.mask.png",
        "file.overlay.png",
        "gen.mask.png",
        "gen.overlay.png",
    ]
    generated = Image.open(folder / "gen.mask.png")
    assert generated.getpixel((10, 10)) == 0 and generated.getpixel((10, 50)) == 255
    assert str(folder / "gen.mask.png") in capsys.readouterr().out


def test_generated_mask_and_protect_need_a_local_image(tmp_path: Path) -> None:
    found = _one(tmp_path, {"image": "asset:uploads/a.png", "mask": "box:0,0,1,1", "protect": 1})
    problems = {item.field: item.message for item in found if not isinstance(item, Notice)}
    assert set(problems) == {"mask", "protect"}
    assert "local image" in problems["mask"] and "local image" in problems["protect"]
