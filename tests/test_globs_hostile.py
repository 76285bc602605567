"""Globs stay inside the manifest's folder, every walk is bounded, and hostile paths (NUL
bytes, names in another encoding, control characters) are problems, never tracebacks."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.manifest import globs as globs_module
from pipeline.manifest.globs import GlobWalk, pattern_problem
from tests.helpers.e2e import QUICK_POLLS, run_cli
from tests.helpers.emulator import emulator_thread
from tests.helpers.images import make_image

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A catalog folder: images at a few depths, a hidden folder, a non-image, a folder x.png."""
    base = tmp_path / "catalog"
    for name in (
        "a.png",
        "b.jpg",
        "img/a.png",
        "img/b.png",
        "img/c1.png",
        "img/deep/d.png",
        "img/deep/deeper/e.jpg",
        "img/.hidden/h.png",
        ".top/t.png",
        "img/notes.txt",
    ):
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (base / "img" / "folder.png").mkdir()
    return base


PATTERNS = [
    "*.png",
    "img/*.png",
    "**/*.png",
    "img/**/*.jpg",
    "**",
    "img/**",
    "img/[ab].png",
    "img/?.png",
    "img/c*.png",
    "img/a.png",
    "img/none.png",
    ".top/*.png",
    "img/.hidden/*.png",
    "**/deep/*.png",
    "img//deep/./d.png",
    "img/**/**/*.png",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_walk_inside_finds_what_glob_finds(tree: Path, pattern: str) -> None:
    # A set: glob repeats a file for ``**/**`` (each way of matching); the walk names it once.
    expected = sorted(
        {
            match.replace(os.sep, "/")
            for match in glob.glob(pattern, root_dir=tree, recursive=True)
            if (tree / match).is_file()
        }
    )
    walk = GlobWalk(pattern, str(tree))
    assert walk.matches() == [m.replace("//", "/").replace("/./", "/") for m in expected]
    assert walk.stopped is None


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("../../**/*.png", "climbs out"),
        ("img/../../x/*.png", "climbs out"),
        ("..", "climbs out"),
        ("/**/*.png", "is absolute"),
        ("/etc/*", "is absolute"),
        ("\\\\server\\share\\*.png", "is absolute"),
        ("img/a\x00.png", "NUL byte"),
    ],
)
def test_a_pattern_leaving_the_folder_is_refused_before_any_walk(
    tree: Path, pattern: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_walk(*_args: Any) -> Any:
        raise AssertionError("walked a refused pattern")

    monkeypatch.setattr(globs_module.os, "scandir", no_walk)
    walk = GlobWalk(pattern, str(tree))
    assert walk.matches() == []
    assert walk.stopped is not None and says in walk.stopped
    assert pattern_problem(pattern) == walk.stopped


def test_every_walk_is_bounded(tree: Path) -> None:
    walk = GlobWalk("**/*.png", str(tree), limit=5)
    walk.matches()
    assert walk.visited == 6  # the sixth entry stopped it
    assert walk.stopped is not None and "looked at 5 entries without finishing" in walk.stopped


def test_a_linked_folder_leading_out_is_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.png").write_bytes(b"x")
    (outside / "sub" / "deep.png").write_bytes(b"x")
    (tree / "img" / "out").symlink_to(outside, target_is_directory=True)
    for pattern in ("**/*.png", "img/out/*.png", "img/*/*.png", "img/out/**/*.png"):
        found = GlobWalk(pattern, str(tree)).matches()
        assert not any(match.startswith("img/out/") for match in found), pattern


def test_a_linked_folder_inside_is_followed_and_a_loop_walked_once(tree: Path) -> None:
    (tree / "img" / "alias").symlink_to(tree / "img" / "deep", target_is_directory=True)
    (tree / "img" / "deep" / "loop").symlink_to(tree / "img", target_is_directory=True)
    assert GlobWalk("img/alias/*.png", str(tree)).matches() == ["img/alias/d.png"]
    found = GlobWalk("**/*.png", str(tree)).matches()
    names = sorted(Path(match).name for match in found)
    assert names == ["a.png", "a.png", "b.png", "c1.png", "d.png"]  # each file once


# --- through the commands: exit 2, a message naming the entry, nothing sent ------------------


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(json.dumps({"version": 1, "name": "hostile", **data}))  # JSON is YAML
    return path


@pytest.mark.parametrize("pattern", ["../../**/*.png", "/**/*.png", "~/**/*.png"])
def test_hostile_globs_exit_2_naming_the_entry(
    tmp_path: Path,
    pattern: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "deep" / "er"
    folder.mkdir(parents=True)
    make_image(folder / "img" / "ok.png")
    entries = [
        {"pattern": "img/*.png", "type": "background", "prompt": "p"},
        {"pattern": pattern, "type": "background", "prompt": "p"},
    ]
    manifest = write_manifest(folder, {"glob": entries})
    assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "catalog.yaml:1 glob 2:" in err and "pattern: " in err
    assert "stays inside" in err and "Traceback" not in err
    with emulator_thread() as emulator:
        assert run_cli(["run", str(manifest), *FAST], emulator.env, monkeypatch) == 2
        assert emulator.log == []


def test_a_walk_past_its_bound_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in range(12):
        make_image(tmp_path / "img" / f"p{index}.png", size=(8, 8))
    monkeypatch.setattr(globs_module, "MAX_GLOB_ENTRIES", 10)
    entry = {"pattern": "**/*.png", "type": "background", "prompt": "p"}
    manifest = write_manifest(tmp_path, {"glob": entry})
    assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "looked at 10 entries without finishing" in err and "catalog.yaml:1 glob 1" in err


NUL_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "yaml image": ({"jobs": [{"id": "a", "image": "img/a\x00.png"}]}, "job 'a'", "image:"),
    "yaml mask": (
        {"jobs": [{"id": "a", "image": "img/ok.png", "type": "inpaint", "mask": "m\x00.png"}]},
        "job 'a'",
        "mask:",
    ),
    "file url": ({"jobs": [{"id": "a", "image": "file:///tmp/a%00.png"}]}, "job 'a'", "image:"),
    "http url": ({"jobs": [{"id": "a", "image": "http://h.example/a\x00"}]}, "job 'a'", "image:"),
    "asset": ({"jobs": [{"id": "a", "image": "asset:a\x00b"}]}, "job 'a'", "image:"),
    "items file": ({"items": "rows\x00.csv"}, "catalog.yaml", "items:"),
    "glob": ({"glob": {"pattern": "img/\x00*.png"}}, "catalog.yaml:1 glob 1", "pattern:"),
}


@pytest.mark.parametrize("case", sorted(NUL_CASES))
def test_a_nul_byte_anywhere_is_a_problem_naming_job_and_field(
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, who, field = NUL_CASES[case]
    make_image(tmp_path / "img" / "ok.png")
    defaults = {"type": "background", "prompt": "on marble"}
    manifest = write_manifest(tmp_path, {"defaults": defaults, **data})
    assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert who in err and field in err and "NUL byte" in err
    assert "Traceback" not in err and "\x00" not in err  # shown escaped, never raw


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_nul_byte_in_an_items_row_names_its_row(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image(tmp_path / "img" / "ok.png")
    if suffix == "csv":
        (tmp_path / "rows.csv").write_text('id,image\nok,img/ok.png\nbad,"img/b\x00.png"\n')
        where = "job 'bad' (rows.csv row 2)"
    else:
        lines = [{"id": "ok", "image": "img/ok.png"}, {"id": "bad", "image": "img/b\x00.png"}]
        (tmp_path / "rows.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        where = "job 'bad' (rows.jsonl line 2)"
    defaults = {"type": "background", "prompt": "on marble"}
    manifest = write_manifest(tmp_path, {"defaults": defaults, "items": f"rows.{suffix}"})
    with emulator_thread() as emulator:
        assert run_cli(["run", str(manifest), *FAST], emulator.env, monkeypatch) == 2
        assert emulator.log == []
    err = capsys.readouterr().err
    assert where in err and "image: 'img/b\\x00.png' holds a NUL byte" in err
    assert "Traceback" not in err


def test_a_file_name_in_another_encoding_is_a_problem_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image(tmp_path / "img" / "ok.png")
    os.rename(tmp_path / "img" / "ok.png", os.fsencode(tmp_path / "img") + b"/caf\xe9.png")
    entry = {"pattern": "img/*.png", "type": "background", "prompt": "p", "id": "x-{stem}"}
    manifest = write_manifest(tmp_path, {"glob": entry})
    with emulator_thread() as emulator:
        assert run_cli(["run", str(manifest), *FAST], emulator.env, monkeypatch) == 2
        assert emulator.log == []
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and "rename the file" in err and "Traceback" not in err


@pytest.mark.parametrize("url", ["http://h.example/a\nb.png", "https://h.example/\x1b[2Ja.png"])
def test_a_url_with_a_control_character_is_refused_and_shown_escaped(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = {"id": "a", "image": url, "type": "background", "prompt": "p"}
    manifest = write_manifest(tmp_path, {"jobs": [job]})
    assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "holds a control character" in err and repr(url) in err
    assert url not in err  # never raw: no line break or escape sequence reaches the terminal


def test_a_path_too_long_for_the_system_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image(tmp_path / "img" / "ok.png")
    job = {"id": "a", "image": "img/" + "x" * 300 + ".png", "type": "background", "prompt": "p"}
    manifest = write_manifest(tmp_path, {"jobs": [job]})
    assert run_cli(["validate", str(manifest)], {}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "job 'a'" in err and "File name too long" in err and "Traceback" not in err
