"""Hostile manifests, property-based: ``pipeline validate`` (in-process) on whatever a user, a
script or an attacker may write. Pass: exit 0 or 2, never a traceback or an exception; exit 2
names the job and the field; an id that is accepted can only ever name a folder inside OUT.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.cli import main
from pipeline.manifest import JOB_FIELDS
from tests.helpers.e2e import (
    CliResult,
)
from tests.reliability.figures import tally

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # seeded: the same examples on every machine, every run
    # One folder per test, rewritten per example: the fixture is reused on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Values of every type YAML can carry, nested a little, with the characters that break naive
# code: NUL and other controls, path separators, dots, right-to-left marks, emoji, combining.
NASTY_TEXT = st.text(
    alphabet=st.sampled_from("a/\\.~\x00\x01\n\t :*?\"'<>|%$\u202e\u0301é😀中 -_0")
    | st.characters(codec="utf-8"),
    max_size=40,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | NASTY_TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NASTY_TEXT, inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one valid photo and mask, shared by every example."""
    folder = tmp_path_factory.mktemp("hostile-manifests")
    Image.new("RGB", (64, 64), (200, 80, 40)).save(folder / "p.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 10, 40, 40))
    mask.save(folder / "m.png")
    return folder


def validate(
    path: Path, capsys: pytest.CaptureFixture[str], figure: str = "hostile/hypothesis examples"
) -> CliResult:
    capsys.readouterr()
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    result = CliResult(code, captured.out, captured.err)
    assert code in (0, 2), result.streams
    assert "Traceback" not in result.streams
    tally(figure)
    return result


def write(folder: Path, data: Any) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def good_job(**fields: Any) -> dict[str, Any]:
    return {"id": "sku-1", "image": "p.png", "mask": "m.png", "prompt": "a lamp", **fields}


def named_fields(stderr: str) -> set[str]:
    """The fields that problem lines name (``    <field>: <message>``)."""
    return {field for field in JOB_FIELDS if f"\n    {field}: " in stderr}


@EXAMPLES
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(data=b"\x00\x00\x00")
@example(data=b"version: 1\njobs: [\n")
@example(data=b"\xff\xfe\x00v\x00e\x00r")  # UTF-16
@example(data=b"a: &a [*a, *a, *a]\n")  # a recursive alias
@example(data=b"!!python/object/apply:os.system ['echo pwned']\n")
def test_a_manifest_that_is_not_yaml_is_refused_cleanly(
    data: bytes, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inputs / "manifest.yaml"
    path.write_bytes(data)
    result = validate(path, capsys)
    assert result.code == 2
    assert result.stderr.strip()


@EXAMPLES
@given(field=st.sampled_from(JOB_FIELDS), value=VALUES)
@example(field="n", value=True)
@example(field="n", value=float("nan"))
@example(field="output_compression", value=2**64)
@example(field="image", value="/dev/zero")
@example(field="mask", value="/proc/self/mem")
@example(field="image", value="")
@example(field="prompt", value="\x00")
@example(field="type", value={"$ne": None})
def test_a_wrong_value_in_any_job_field_names_the_job_and_field(
    field: str, value: Any, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = {"version": 1, "defaults": {"type": "inpaint"}, "jobs": [good_job(**{field: value})]}
    result = validate(write(inputs, manifest), capsys)
    if result.code == 0:
        return  # the value happened to be valid (a prompt, n: 2, ...)
    if field == "id":
        assert "id" in named_fields(result.stderr) or "\n    id: " in result.stderr
        return
    assert "job 'sku-1'" in result.stderr, result.stderr
    named = named_fields(result.stderr)
    # A wrong type (say ``background``) can make another field the one in the wrong place.
    assert field in named or (field == "type" and named), result.stderr


HEADER_FIELDS = ("version", "name", "defaults", "jobs", "glob", "items")


@EXAMPLES
@given(field=st.sampled_from(HEADER_FIELDS), value=VALUES)
@example(field="jobs", value=[None, 1, "x", []])
@example(field="items", value="../../../../etc/passwd")
@example(field="items", value=["/dev/zero.csv"])
@example(field="defaults", value={"id": "same-for-all"})
@example(field="name", value="../escape")
def test_a_wrong_header_names_the_field(
    field: str, value: Any, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if field == "glob" and "*" in repr(value):
        value = repr(value).replace("*", "")  # a pattern like "/**" would walk the whole disk
    manifest: dict[str, Any] = {"version": 1, "jobs": [good_job()], field: value}
    result = validate(write(inputs, manifest), capsys)
    if result.code == 2:
        assert field in result.stderr or "job" in result.stderr, result.stderr


@EXAMPLES
@given(job_id=st.text(max_size=250) | NASTY_TEXT)
@example(job_id="../outside")
@example(job_id="..")
@example(job_id=".")
@example(job_id="/etc/cron.d/x")
@example(job_id="a\x00b")
@example(job_id="C:\\Windows")
@example(job_id="CON")
@example(job_id="x" * 201)
@example(job_id="\u202etxt.exe")
@example(job_id=" sku")
@example(job_id="~root")
def test_an_accepted_id_always_names_a_folder_inside_out(
    job_id: str, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = {"version": 1, "defaults": {"type": "inpaint"}, "jobs": [good_job(id=job_id)]}
    result = validate(write(inputs, manifest), capsys)
    if result.code == 2:
        assert "\n    id: " in result.stderr, result.stderr
        return
    out = inputs / "OUT"
    folder = Path(os.path.normpath(out / job_id))
    assert folder.parent == out, job_id  # one level down, no escape
    assert "\x00" not in job_id and not job_id.startswith(".")


@EXAMPLES
@given(prompt=st.text(min_size=0, max_size=4100) | st.text(min_size=3990, max_size=4010))
@example(prompt="x" * 4000)
@example(prompt="x" * 4001)
@example(prompt="😀" * 4000)  # 4000 characters, 16000 bytes
@example(prompt="e\u0301" * 2001)  # 4002 code points, 2001 letters once composed
@example(prompt="   ")
def test_prompts_of_any_size_and_script(
    prompt: str, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = {"version": 1, "defaults": {"type": "inpaint"}, "jobs": [good_job(prompt=prompt)]}
    result = validate(write(inputs, manifest), capsys)
    stripped = prompt.strip()
    if 0 < len(prompt) <= 4000 and stripped:
        assert result.code == 0, result.stderr
    elif len(stripped) > 4000 or not unicodedata.normalize("NFC", prompt).strip():
        assert result.code == 2
        assert named_fields(result.stderr) == {"prompt"}, result.stderr


ITEMS_FILES: dict[str, tuple[str, bytes]] = {
    # name: (file name, content) of an ``items:`` file
    "csv with NUL bytes": ("items.csv", b"id,image,mask,prompt\nsku-1,p.png,m.png,a\x00b\n"),
    "csv in latin-1": (
        "items.csv",
        "id,image,mask,prompt\nsku-1,p.png,m.png,caf\xe9\n".encode("latin-1"),
    ),
    "csv ragged rows": (
        "items.csv",
        b"id,image,mask,prompt\nsku-1,p.png,m.png,a,extra,more\nsku-2\n",
    ),
    "csv field past the csv module's limit": (
        "items.csv",
        b'id,image,mask,prompt\nsku-1,p.png,m.png,"' + b"x" * 200_000 + b'"\n',
    ),
    "csv unterminated quote": ("items.csv", b'id,image,mask,prompt\nsku-1,p.png,m.png,"open\n'),
    "csv header only": ("items.csv", b"id,image,mask,prompt\n"),
    "csv empty": ("items.csv", b""),
    "csv unknown column": ("items.csv", b"id,imagee,prompt\nsku-1,p.png,x\n"),
    "jsonl garbage line": ("items.jsonl", b'{"id": "sku-1"}\nnot json\n[1, 2]\n"text"\n'),
    "jsonl deep nesting": ("items.jsonl", b"[" * 10_000 + b"]" * 10_000 + b"\n"),
    "jsonl huge number": ("items.jsonl", b'{"id": "sku-1", "n": 1' + b"0" * 5000 + b"}\n"),
    "jsonl wrong types": ("items.jsonl", b'{"id": ["a"], "image": {"x": 1}, "n": "many"}\n'),
}


@pytest.mark.parametrize("name", ITEMS_FILES)
def test_a_hostile_items_file_is_reported_not_crashed_on(
    name: str, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file_name, content = ITEMS_FILES[name]
    (inputs / file_name).write_bytes(content)
    manifest = {"version": 1, "defaults": {"type": "inpaint"}, "items": file_name}
    result = validate(write(inputs, manifest), capsys, figure="hostile/fixed/items file")
    if result.code == 2:
        assert file_name in result.stderr, result.stderr  # names the file (and row or line)
