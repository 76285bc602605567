"""items as a mapping (columns, skip_empty, ignore_unknown) and {Column} templates
(docs/manifest.md#mapped-exports)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.errors import ManifestError, Problem
from pipeline.manifest import load_manifest
from pipeline.models import Feature, Job, PlannedJob
from pipeline.plan.prepare import scan
from tests.helpers.images import make_image, write_manifest

JOBS = Path(__file__).resolve().parent.parent / "jobs"
HEADER = "Handle,Title,Type,Variant SKU,Image Src,Image Position,Image Alt Text"


def _stream(folder: Path, data: dict[str, Any]) -> list[Job | Problem]:
    return list(load_manifest(write_manifest(folder, data, "m.yaml")).iter_jobs())


def _catalog(folder: Path, rows: list[str], name: str = "export.csv") -> str:
    make_image(folder / "images" / "a.png", (40, 80))
    (folder / name).write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return name


ROWS = [
    "mug,Speckled Mug,Mugs,MUG-1,images/a.png,1,mug front",
    "mug,,,MUG-2,,,",  # a variant row: no image
    "mug,,,,images/a.png,2,mug top",
]
DEFAULTS = {"type": "background", "id": "{Handle}-{Image Position}", "prompt": "{Image Alt Text}"}
ITEMS = {"columns": {"image": "Image Src"}, "skip_empty": "image", "ignore_unknown": True}


def test_a_shopify_export_maps_to_one_job_per_image(tmp_path: Path) -> None:
    items = {"path": _catalog(tmp_path, ROWS), **ITEMS}
    result = _stream(tmp_path, {"version": 1, "defaults": DEFAULTS, "items": items})
    assert all(isinstance(item, Job) for item in result), result
    assert [(j.id, j.prompt) for j in result if isinstance(j, Job)] == [
        ("mug-1", "mug front"),
        ("mug-2", "mug top"),
    ]
    # Shopify's Type ("Mugs") is data: the job's type is the default, not a bad "Mugs".
    assert {j.feature for j in result if isinstance(j, Job)} == {Feature.BACKGROUND}
    assert result[1].location == "export.csv row 3"  # rows keep their numbers after a skip


def test_a_mapped_type_column_becomes_the_type(tmp_path: Path) -> None:
    items = {
        "path": _catalog(tmp_path, ROWS[:1]),
        **ITEMS,
        "columns": {"image": "Image Src", "type": "Type"},
    }
    result = _stream(tmp_path, {"version": 1, "defaults": DEFAULTS, "items": items})
    assert [(p.field, p.location) for p in result if isinstance(p, Problem)] == [
        ("type", "export.csv row 1")
    ]


def test_without_ignore_unknown_other_columns_are_errors(tmp_path: Path) -> None:
    items = {"path": _catalog(tmp_path, ROWS[:1]), "columns": {"image": "Image Src"}}
    result = _stream(tmp_path, {"version": 1, "defaults": DEFAULTS, "items": items})
    fields = [p.field for p in result if isinstance(p, Problem)]
    assert "Handle" in fields and "Type" not in fields  # same-name columns are data


def test_an_unknown_placeholder_is_a_problem_naming_the_row(tmp_path: Path) -> None:
    items = {"path": _catalog(tmp_path, ROWS), **ITEMS}
    defaults = {**DEFAULTS, "prompt": "{Title} in {Colour}"}
    result = _stream(tmp_path, {"version": 1, "defaults": defaults, "items": items})
    problems = [p for p in result if isinstance(p, Problem)]
    assert [p.location for p in problems] == ["export.csv row 1", "export.csv row 3"]
    assert all("{Colour}" in p.message and p.field == "prompt" for p in problems)


def test_a_mapping_to_a_missing_column_names_it(tmp_path: Path) -> None:
    items = {"path": _catalog(tmp_path, ROWS), **ITEMS, "columns": {"image": "Image URL"}}
    result = _stream(tmp_path, {"version": 1, "defaults": DEFAULTS, "items": items})
    assert len(result) == 1 and isinstance(result[0], Problem)
    assert "'Image URL'" in result[0].message and "'Image Src'" in result[0].message


def test_braces_are_escaped_and_a_yaml_jobs_own_text_is_literal(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", (40, 40))
    jobs = [
        {"id": "k", "image": "images/a.png"},
        {"id": "own", "image": "images/a.png", "prompt": "a {literal} sign"},
    ]
    defaults = {"type": "background", "prompt": "a {{curly}} {id} sign"}
    result = _stream(tmp_path, {"version": 1, "defaults": defaults, "jobs": jobs})
    assert [j.prompt for j in result if isinstance(j, Job)] == [
        "a {curly} k sign",
        "a {literal} sign",
    ]


def test_templates_work_in_jsonl_and_glob(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "chair.png", (40, 40))
    line = {"sku": "C-1", "name": "oak chair", "image": "images/chair.png"}
    (tmp_path / "items.jsonl").write_text(json.dumps(line) + "\n")
    data = {
        "version": 1,
        "defaults": {"type": "background", "id": "{sku}", "prompt": "studio shot of the {name}"},
        "items": {"path": "items.jsonl", "ignore_unknown": True},
        "glob": {"pattern": "images/*.png", "id": "{stem}-g", "prompt": "the {stem}"},
    }
    jobs = [item for item in _stream(tmp_path, data) if isinstance(item, Job)]
    assert [(j.id, j.prompt) for j in jobs] == [
        ("chair-g", "the chair"),
        ("C-1", "studio shot of the oak chair"),
    ]


def test_a_plain_default_id_is_still_refused(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", (40, 40))
    path = write_manifest(
        tmp_path,
        {"version": 1, "defaults": {"id": "same"}, "jobs": [{"image": "images/a.png"}]},
        "m.yaml",
    )
    with pytest.raises(ManifestError, match="unless it is a template"):
        load_manifest(path)


def test_the_shipped_shopify_example_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(JOBS / "shopify.yaml")]) == 0
    assert "5 feature calls" in capsys.readouterr().out


# -- group: the product a job belongs to ------------------------------------------------------


def test_a_rows_handle_is_its_group_by_default(tmp_path: Path) -> None:
    items = {"path": _catalog(tmp_path, ROWS), **ITEMS}
    jobs = [j for j in _stream(tmp_path, {"version": 1, "defaults": DEFAULTS, "items": items})]
    assert [(j.id, j.group) for j in jobs if isinstance(j, Job)] == [
        ("mug-1", "mug"),
        ("mug-2", "mug"),
    ]


def test_a_group_template_wins_over_the_handle(tmp_path: Path) -> None:
    items = {"path": _catalog(tmp_path, ROWS), **ITEMS}
    defaults = {**DEFAULTS, "group": "{Handle}-{Type}"}
    jobs = [{"id": "set", "image": "images/a.png", "prompt": "p", "group": "sofas"}]
    data = {"version": 1, "defaults": defaults, "items": items, "jobs": jobs}
    result = [(j.id, j.group) for j in _stream(tmp_path, data) if isinstance(j, Job)]
    assert result == [("set", "sofas"), ("mug-1", "mug-Mugs"), ("mug-2", "mug-")]


def test_a_handle_that_is_the_id_column_keeps_each_rows_group_on_the_fast_path(
    tmp_path: Path,
) -> None:
    # Rows equal but for their id share one checked shape; the group read from that id column
    # must still be each row's own.
    make_image(tmp_path / "images" / "a.png", (40, 80))
    rows = ["Handle,Image Src", "mug,images/a.png", "lamp,images/a.png"]
    (tmp_path / "export.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = {
        "version": 1,
        "defaults": {"type": "background", "prompt": "on white"},
        "items": {"path": "export.csv", "columns": {"id": "Handle", "image": "Image Src"}},
    }
    manifest = load_manifest(write_manifest(tmp_path, data, "m.yaml"))
    planned = [p for p in scan(manifest) if isinstance(p, PlannedJob)]
    assert [(p.job.id, p.job.group) for p in planned] == [("mug", "mug"), ("lamp", "lamp")]


def test_the_group_does_not_change_the_content_key(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", (40, 40))
    keys = []
    for group in ("one", "two"):
        job = {"id": "j", "image": "images/a.png", "prompt": "p", "group": group}
        data = {"version": 1, "defaults": {"type": "background"}, "jobs": [job]}
        manifest = load_manifest(write_manifest(tmp_path, data, f"{group}.yaml"))
        keys += [p.key for p in scan(manifest) if isinstance(p, PlannedJob)]
    assert len(keys) == 2 and keys[0] == keys[1]
