"""manifest.py: YAML header, jobs / glob / items (CSV, JSONL) → a stream of Job | Problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import naming
from pipeline.errors import ManifestError, Problem
from pipeline.manifest import Manifest, folder_name_problem, load_manifest, parse_feature
from pipeline.models import Feature, InputRef, Job
from tests.helpers.images import demo_inputs, make_image, make_mask, write_manifest

INPAINT = {"type": "inpaint", "image": "images/item.png", "mask": "masks/item.png", "prompt": "p"}
BACKGROUND = {"type": "background", "image": "images/item.png", "prompt": "p"}


def load(folder: Path, data: dict[str, Any], name: str = "manifest.yaml") -> Manifest:
    return load_manifest(write_manifest(folder, data, name))


def stream(folder: Path, data: dict[str, Any]) -> list[Job | Problem]:
    return list(load(folder, data).iter_jobs())


def jobs_of(items: list[Job | Problem]) -> list[Job]:
    assert all(isinstance(item, Job) for item in items), items
    return [item for item in items if isinstance(item, Job)]


def problems_of(items: list[Job | Problem]) -> list[Problem]:
    return [item for item in items if isinstance(item, Problem)]


def header_problems(folder: Path, text: str) -> list[Problem]:
    path = folder / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return caught.value.problems


# --- header ---------------------------------------------------------------------------------


def test_minimal_manifest_applies_job_defaults(tmp_path: Path) -> None:
    manifest = load(tmp_path, {"jobs": [INPAINT]}, name="spring.yaml")
    assert (manifest.name, manifest.version, manifest.base_dir) == ("spring", 1, tmp_path)
    (job,) = jobs_of(list(manifest.iter_jobs()))
    assert job == Job(
        id="item",
        feature=Feature.INPAINT,
        image=InputRef("file", str(tmp_path / "images" / "item.png")),
        mask=InputRef("file", str(tmp_path / "masks" / "item.png")),
        prompt="p",
        location="spring.yaml:3 job 1",
    )


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("version: 1\njobs: [\n", None, "not valid YAML"),
        ("", None, "manifest is empty"),
        ("- a\n- b\n", None, "a manifest is a mapping"),
        ("jobs: []\n", "version", "missing: add `version: 1`"),
        ("version: 2\njobs: []\n", "version", "2 is not supported"),
        ("version: '1'\njobs: []\n", "version", "'1' is not supported"),
        ("version: 1\njbos: []\n", "jbos", "unknown field 'jbos' (did you mean 'jobs'?)"),
        ("version: 1\njobs: {a: 1}\n", "jobs", "must be a list of jobs"),
        ("version: 1\n", "jobs", "no jobs: add jobs, glob or items"),
        ("version: 1\nname: a/b\njobs: []\n", "name", "cannot name the output folder"),
        ("version: 1\ndefaults: [1]\njobs: []\n", "defaults", "must be a mapping"),
        ("version: 1\ndefaults: {promt: x}\njobs: []\n", "promt", "did you mean 'prompt'?"),
        ("version: 1\ndefaults: {id: x}\njobs: []\n", "id", "cannot have a default"),
        ("version: 1\ndefaults: {type: paint}\njobs: []\n", "type", "'paint' is not"),
        ("version: 1\ndefaults: {n: two}\njobs: []\n", "n", "must be a whole number, got 'two'"),
        ("version: 1\nitems: nowhere.csv\n", "items", "nowhere.csv: no such file"),
        ("version: 1\nitems: list.txt\n", "items", "ends in .csv or .jsonl"),
        ("version: 1\nglob: {prompt: x}\n", "pattern", "required"),
        ("version: 1\nglob: [{pattern: '*.png', image: a.png}]\n", "image", "from the pattern"),
        ("version: 1\nglob: 3\n", "glob", "must be a mapping or a list"),
    ],
)
def test_header_problems(tmp_path: Path, text: str, field: str | None, message: str) -> None:
    problems = header_problems(tmp_path, text)
    assert any(p.field == field and message in p.message for p in problems), problems


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    text = "version: 1\njobs:\n  - id: a\n    prompt: [unclosed\n  - id: b\n"
    (problem,) = header_problems(tmp_path, text)
    assert problem.location is not None
    assert problem.location.startswith("bad.yaml:5:")
    assert problem.message.startswith("not valid YAML")


def test_missing_manifest_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "absent.yaml")
    assert "cannot read manifest" in caught.value.problems[0].message


def test_every_header_problem_reported_at_once(tmp_path: Path) -> None:
    problems = header_problems(tmp_path, "version: 3\nname: ..\ndefaults: {qualty: high}\n")
    assert {p.field for p in problems} >= {"version", "name", "qualty"}


# --- jobs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "feature"),
    [
        ("IMAGE_INPAINTER", Feature.INPAINT),
        ("inpaint", Feature.INPAINT),
        ("Inpaint", Feature.INPAINT),
        ("image-inpainter", Feature.INPAINT),
        ("BACKGROUND_REPLACER", Feature.BACKGROUND),
        ("background", Feature.BACKGROUND),
        ("Background", Feature.BACKGROUND),
    ],
)
def test_feature_aliases(alias: str, feature: Feature) -> None:
    assert parse_feature(alias) is feature


def test_defaults_apply_and_a_jobs_own_value_wins(tmp_path: Path) -> None:
    defaults = {
        "type": "inpaint",
        "quality": "high",
        "size": "auto",
        "n": 3,
        "background": "opaque",
    }
    own = {**INPAINT, "quality": "low"}
    del own["type"]
    jobs = jobs_of(stream(tmp_path, {"defaults": defaults, "jobs": [own, BACKGROUND]}))
    assert (jobs[0].quality, jobs[0].size, jobs[0].n) == ("low", "auto", 3)
    # Defaults for the other feature are ignored, not problems: both features share them.
    assert (jobs[1].n, jobs[1].background, jobs[1].quality) == (1, "opaque", "high")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"promt": "x"}, "promt", "unknown field 'promt' (did you mean 'prompt'?)"),
        ({"feature": "x"}, "feature", "did you mean 'type'?"),
        ({"n": "abc"}, "n", "must be a whole number, got 'abc'"),
        ({"n": 2.5}, "n", "must be a whole number, got 2.5"),
        ({"n": True}, "n", "must be a whole number, got True"),
        ({"prompt": ["a"]}, "prompt", "must be text, got ['a']"),
        ({"prompt": True}, "prompt", "must be text, got True"),
        ({"type": "paint"}, "type", "'paint' is not IMAGE_INPAINTER"),
        ({"type": None}, "type", "required"),
        ({"prompt": None}, "prompt", "required: describe the edit"),
        ({"image": None}, "image", "required"),
        ({"image": "ftp://host/a.png"}, "image", "ftp:// is not supported"),
        ({"mask": "asset:"}, "mask", "asset: needs a path"),
        ({"background": "opaque"}, "background", "applies only to BACKGROUND_REPLACER"),
    ],
)
def test_job_problems(tmp_path: Path, change: dict[str, Any], field: str, message: str) -> None:
    problems = problems_of(stream(tmp_path, {"jobs": [{**INPAINT, "id": "j1", **change}]}))
    assert any(p.field == field and message in p.message for p in problems), problems
    assert all(p.job == "j1" and p.location == "manifest.yaml:3 job 1" for p in problems)


@pytest.mark.parametrize("field", ["n", "output_format", "output_compression", "mask"])
def test_inpainter_fields_on_a_background_job_are_problems(tmp_path: Path, field: str) -> None:
    value = {"n": 2, "output_format": "png", "output_compression": 50, "mask": "m.png"}[field]
    (problem,) = problems_of(stream(tmp_path, {"jobs": [{**BACKGROUND, field: value}]}))
    assert problem.field == field
    assert "applies only to IMAGE_INPAINTER" in problem.message


def test_several_bad_jobs_all_named_in_one_pass(tmp_path: Path) -> None:
    jobs = [
        {**INPAINT, "id": "ok"},
        {**INPAINT, "id": "bad-n", "n": "x"},
        {**INPAINT, "id": "bad-field", "colour": "red"},
        "not a mapping",
        {**BACKGROUND, "id": "bad-type", "type": "?"},
    ]
    items = stream(tmp_path, {"jobs": jobs})
    # A flawed entry still yields its job, built from its good fields, after its problems, so
    # preflight can report the rest of what is wrong with it (plan.scan never plans it).
    assert [job.id for job in items if isinstance(job, Job)] == ["ok", "bad-n", "bad-field"]
    order = [(type(i).__name__, getattr(i, "id", None) or i.job) for i in items]  # type: ignore[union-attr]
    assert order.index(("Problem", "bad-n")) < order.index(("Job", "bad-n"))
    named = {(p.job, p.field) for p in problems_of(items)}
    assert named == {("bad-n", "n"), ("bad-field", "colour"), (None, None), ("bad-type", "type")}


def test_a_job_with_a_bad_field_still_reports_its_other_problems(tmp_path: Path) -> None:
    job = {"type": "inpaint", "image": "a.png", "n": "x"}  # no prompt either
    fields = {p.field for p in problems_of(stream(tmp_path, {"jobs": [job]}))}
    assert fields == {"n", "prompt"}


def test_values_are_normalised(tmp_path: Path) -> None:
    job = {**INPAINT, "id": 1001, "quality": " High ", "output_format": "JPG", "size": "AUTO"}
    (parsed,) = jobs_of(stream(tmp_path, {"jobs": [job]}))
    assert (parsed.id, parsed.quality, parsed.output_format, parsed.size) == (
        "1001",
        "high",
        "jpeg",
        "auto",
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("images/a.png", InputRef("file", "{base}/images/a.png")),
        ("./images/../images/a.png", InputRef("file", "{base}/images/a.png")),
        ("/abs/a.png", InputRef("file", "/abs/a.png")),
        (
            "https://cdn.example.com/x/a.png?v=2",
            InputRef("url", "https://cdn.example.com/x/a.png?v=2"),
        ),
        ("HTTP://example.com/a.png", InputRef("url", "HTTP://example.com/a.png")),
        ("asset:development/images/a.png", InputRef("asset", "development/images/a.png")),
    ],
)
def test_input_references(tmp_path: Path, written: str, expected: InputRef) -> None:
    (job,) = jobs_of(stream(tmp_path, {"jobs": [{**BACKGROUND, "image": written}]}))
    assert job.image == InputRef(expected.kind, expected.value.format(base=tmp_path))
    assert job.id == "a"  # the image's stem, whatever the kind of reference


def test_folder_name_rules() -> None:
    assert folder_name_problem("sku-1001_a.b") is None
    assert folder_name_problem("a/b") is not None


# --- glob -----------------------------------------------------------------------------------


def test_glob_makes_one_job_per_file_with_stem(tmp_path: Path) -> None:
    for stem in ("chair", "lamp"):
        make_image(tmp_path / "images" / f"{stem}.jpg", fmt="JPEG")
        make_mask(tmp_path / "masks" / f"{stem}.png")
    make_image(tmp_path / "images" / "skip.png")
    entry = {
        "pattern": "images/*.jpg",
        "type": "inpaint",
        "prompt": "studio shot of {stem}",
        "mask": "masks/{stem}.png",
    }
    jobs = jobs_of(stream(tmp_path, {"glob": entry}))
    assert [job.id for job in jobs] == ["chair", "lamp"]
    assert jobs[0].prompt == "studio shot of chair"
    assert jobs[1].mask == InputRef("file", str(tmp_path / "masks" / "lamp.png"))
    assert jobs[0].location == "manifest.yaml:3 glob 1 (images/chair.jpg)"


def test_glob_id_template_and_list_form(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png")
    entries = [{"pattern": "*.png", "id": "{stem}-bg", "type": "background", "prompt": "p"}]
    (job,) = jobs_of(stream(tmp_path, {"glob": entries}))
    assert job.id == "a-bg"


def test_glob_matching_nothing_is_a_problem(tmp_path: Path) -> None:
    (problem,) = stream(tmp_path, {"glob": {"pattern": "none/*.png", "type": "bg", "prompt": "p"}})
    assert isinstance(problem, Problem)
    assert "matches no file" in problem.message


def test_order_is_jobs_then_glob_then_items(tmp_path: Path) -> None:
    make_image(tmp_path / "g.png")
    (tmp_path / "rows.csv").write_text("id,image\nfrom-items,x.png\n", encoding="utf-8")
    data = {
        "defaults": {"type": "background", "prompt": "p"},
        "items": "rows.csv",
        "glob": {"pattern": "g.png"},
        "jobs": [{"id": "from-jobs", "image": "x.png"}],
    }
    assert [job.id for job in jobs_of(stream(tmp_path, data))] == ["from-jobs", "g", "from-items"]


# --- items ----------------------------------------------------------------------------------


def test_csv_items_cells_are_coerced_and_empty_means_default(tmp_path: Path) -> None:
    demo_inputs(tmp_path)
    (tmp_path / "catalog.csv").write_text(
        "\ufeffId, Type ,image,mask,prompt,n,output_compression,quality\n"
        "a,inpaint,images/item.png,masks/item.png,first,2,70,\n"
        "\n"
        'b,,images/item.png,,"second, with comma",,,high\n',
        encoding="utf-8",
    )
    data = {"defaults": {"type": "background", "quality": "low"}, "items": "catalog.csv"}
    first, second = jobs_of(stream(tmp_path, data))
    assert (first.feature, first.n, first.output_compression, first.quality) == (
        Feature.INPAINT,
        2,
        70,
        "low",
    )
    assert (second.feature, second.prompt, second.quality) == (
        Feature.BACKGROUND,
        "second, with comma",
        "high",
    )
    assert second.location == "catalog.csv row 3"  # the blank line still counts as a row


@pytest.mark.parametrize(
    ("csv_text", "field", "location", "message"),
    [
        ("id,image,prompt,n\na,x.png,p,two\n", "n", "rows.csv row 1", "whole number, got 'two'"),
        ("id,image,prompt,promt\na,x.png,p,q\n", "promt", "rows.csv header", "did you mean"),
        ("id,image,prompt,id\na,x.png,p,b\n", "id", "rows.csv header", "column appears twice"),
        ("id,image,prompt\na,x.png,p,extra\n", None, "rows.csv row 1", "has 4 cells"),
        ("id,image\na,x.png\n", "prompt", "rows.csv row 1", "required"),
        ("", None, "rows.csv", "items file is empty"),
    ],
)
def test_csv_problems(
    tmp_path: Path, csv_text: str, field: str | None, location: str, message: str
) -> None:
    (tmp_path / "rows.csv").write_text(csv_text, encoding="utf-8")
    items = stream(tmp_path, {"defaults": {"type": "inpaint"}, "items": "rows.csv"})
    problems = problems_of(items)
    assert any(
        p.field == field and p.location == location and message in p.message for p in problems
    ), problems


def test_csv_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_bytes(b"id,image,prompt\na,x.png,caf\xe9\n" * 3)
    (problem,) = stream(tmp_path, {"defaults": {"type": "background"}, "items": "rows.csv"})
    assert isinstance(problem, Problem)
    assert "not UTF-8" in problem.message


def test_jsonl_items(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "image": "a.png", "prompt": "p", "n": 2}),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "b", "image": "b.png", "prompt": "p", "colour": "red"}),
        json.dumps({"id": "c", "image": "https://example.com/c.png", "prompt": "p"}),
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = stream(tmp_path, {"defaults": {"type": "inpaint"}, "items": "rows.jsonl"})
    assert [(i.id, i.n) for i in items if isinstance(i, Job)] == [("a", 2), ("b", 1), ("c", 1)]
    assert [(p.location, p.field) for p in problems_of(items)] == [
        ("rows.jsonl line 3", None),
        ("rows.jsonl line 4", None),
        ("rows.jsonl line 5", "colour"),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_items_are_streamed_not_read_whole(tmp_path: Path, suffix: str) -> None:
    rows = 50_000
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        body = "".join(f"job-{i},images/item.png,prompt {i}\n" for i in range(rows))
        path.write_text("id,image,prompt\n" + body, encoding="utf-8")
    else:
        body = "".join(
            json.dumps({"id": f"job-{i}", "image": "images/item.png", "prompt": "p"}) + "\n"
            for i in range(rows)
        )
        path.write_text(body, encoding="utf-8")
    stream_ = load(tmp_path, {"defaults": {"type": "background"}, "items": path.name}).iter_jobs()
    first = next(stream_)
    assert isinstance(first, Job) and first.id == "job-0"
    # Cut the file under the open reader: a lazy reader sees at most what it had buffered.
    with path.open("r+b") as handle:
        handle.truncate(64 * 1024)
    remaining = sum(1 for item in stream_ if isinstance(item, Job))
    assert remaining < rows // 10


def test_iter_jobs_can_be_read_again(tmp_path: Path) -> None:
    manifest = load(tmp_path, {"jobs": [INPAINT]})
    assert list(manifest.iter_jobs()) == list(manifest.iter_jobs())


# --- the folder-name policy's shortcut for plain names ---------------------------------------

_NAME_CHARS = st.sampled_from([*"aZ09_-. :/é\x01", "con", "COM1", "lpt9", "nul"])


@given(st.lists(_NAME_CHARS, max_size=12).map("".join))
def test_the_plain_name_shortcut_agrees_with_the_rules(name: str) -> None:
    assert folder_name_problem(name) == naming._rules(name)


@pytest.mark.parametrize("name", ["con", "CON.txt", "com1.v2", "a" * 201, "a..b", "x."])
def test_plain_looking_names_that_are_still_refused(name: str) -> None:
    assert folder_name_problem(name) is not None
