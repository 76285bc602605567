"""Hostile files and servers: broken or odd images and masks, symbolic links out of the
manifest's folder, an endless download, a result URL on a foreign host.

Pass: a refused input exits 2 naming the job and the field, before anything is sent; an odd but
valid input runs to the end; a hostile server fails the job (never the process), writes nothing
partial and nothing outside OUT, and a foreign host is never contacted.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import main
from tests.helpers.e2e import (
    CliResult,
    assert_no_partial_final_files,
    records,
    run_inprocess,
    states,
    write_profile,
)
from tests.helpers.images import make_alpha_mask, make_animated, make_image, make_mask, truncate
from tests.reliability.figures import tally
from tests.reliability.harness import (
    QUICK,
    QUIET,
    assert_outputs_whole,
    emulator,
    paid_feature_calls,
)
from tests.reliability.harness import Expected as Want

Maker = Callable[[Path], object]  # makes the file at the path; what it returns is not used


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: a decompression bomb's calling
    card, refused from the header alone (no pixel is ever decoded)."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _exif_rotated(path: Path) -> None:
    image = Image.new("RGB", (96, 64), (20, 120, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display, so it shows as 64x96
    image.save(path, "JPEG", exif=exif.tobytes())


def _sixteen_bit(path: Path) -> None:
    Image.new("I;16", (64, 64), 40000).save(path, "PNG")


def _cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (64, 64), (0, 120, 200, 10)).save(path, "JPEG")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


REFUSED_IMAGES: dict[str, tuple[Maker, str]] = {
    # name: (how the image file is made, words the refusal must contain)
    "zero bytes": (lambda p: p.write_bytes(b""), "empty"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(2048)), "not an image"),
    "png signature then junk": (
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        "not an image",
    ),
    "truncated png": (lambda p: truncate(make_image(p, (256, 256)), 0.5) and None, "truncated"),
    "truncated jpeg": (
        lambda p: truncate(make_image(p, (256, 256), fmt="JPEG"), 0.4) and None,
        "truncated",
    ),
    "truncated webp": (
        lambda p: truncate(make_image(p, (256, 256), fmt="WEBP"), 0.5) and None,
        "truncated",
    ),
    "decompression bomb": (
        lambda p: p.write_bytes(_png_claiming(60_000, 60_000)),
        "decompression bomb",
    ),
    "too many pixels": (lambda p: p.write_bytes(_png_claiming(9_500, 9_000)), "megapixels"),
    "animated png": (lambda p: make_animated(p, fmt="PNG") and None, "animated"),
    "animated webp": (lambda p: make_animated(p, fmt="WEBP") and None, "animated"),
    "gif": (lambda p: Image.new("P", (8, 8)).save(p, "GIF"), "GIF"),
    "tiff": (lambda p: Image.new("RGB", (8, 8)).save(p, "TIFF"), "TIFF"),
    "a folder": (lambda p: p.mkdir(), "folder"),
    "a fifo": (_fifo, "not a regular file"),
    "missing": (lambda p: None, "does not exist"),
}

ODD_BUT_VALID_IMAGES: dict[str, Maker] = {
    "cmyk jpeg": _cmyk_jpeg,
    "16-bit png": _sixteen_bit,
    "exif-rotated jpeg": _exif_rotated,
    "grayscale png": lambda p: make_image(p, mode="L") and None,
    "palette png": lambda p: make_image(p, mode="P") and None,
    "rgba webp": lambda p: make_image(p, mode="RGBA", fmt="WEBP") and None,
}


def _validate(
    folder: Path, jobs: Sequence[Mapping[str, object]], capsys: pytest.CaptureFixture[str]
) -> CliResult:
    manifest = folder / "manifest.yaml"
    manifest.write_text(json.dumps({"version": 1, "jobs": jobs}))  # JSON is YAML
    capsys.readouterr()
    code = main(["validate", str(manifest)])
    captured = capsys.readouterr()
    result = CliResult(code, captured.out, captured.err)
    assert "Traceback" not in result.streams
    tally("hostile/fixed/input file")
    return result


@pytest.mark.parametrize("name", REFUSED_IMAGES)
@pytest.mark.parametrize("role", ["image", "mask"])
def test_a_broken_image_or_mask_is_refused_naming_job_and_field(
    name: str, role: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, words = REFUSED_IMAGES[name]
    good_image = make_image(tmp_path / "good.png")
    good_mask = make_mask(tmp_path / "good-mask.png")
    make(tmp_path / "bad.png")
    files = {"image": good_image.name, "mask": good_mask.name, role: "bad.png"}
    job = {"id": "sku-9", "type": "inpaint", "prompt": "a lamp", **files}
    result = _validate(tmp_path, [job], capsys)
    assert result.code == 2
    assert "job 'sku-9'" in result.stderr
    line = next(ln for ln in result.stderr.splitlines() if ln.strip().startswith(f"{role}:"))
    assert words.lower() in line.lower(), line


MASK_MISFITS: dict[str, Maker] = {
    "wrong size": lambda p: make_mask(p, size=(32, 64)) and None,
    "wrong aspect": lambda p: make_mask(p, size=(64, 65)) and None,
}


@pytest.mark.parametrize("name", MASK_MISFITS)
def test_a_mask_of_the_wrong_size_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image(tmp_path / "p.png")
    MASK_MISFITS[name](tmp_path / "m.png")
    job = {"id": "sku-3", "type": "inpaint", "image": "p.png", "mask": "m.png", "prompt": "x"}
    result = _validate(tmp_path, [job], capsys)
    assert result.code == 2
    assert "job 'sku-3'" in result.stderr and "    mask: " in result.stderr
    assert "aspect ratio" in result.stderr  # another size of the same shape is scaled


MASK_MODES: dict[str, Maker] = {
    "rgba with transparency": lambda p: make_alpha_mask(p) and None,
    "palette": lambda p: make_mask(p, mode="P") and None,
    "la": lambda p: make_mask(p, mode="LA") and None,
    "1-bit": lambda p: make_mask(p, mode="1") and None,
    "rgb jpeg": lambda p: make_mask(p, mode="RGB", fmt="JPEG") and None,
    "cmyk jpeg": lambda p: make_mask(p, mode="CMYK", fmt="JPEG") and None,
    "16-bit": lambda p: make_mask(p, mode="I;16") and None,
    "webp": lambda p: make_mask(p, mode="RGB", fmt="WEBP") and None,
}


def test_odd_but_valid_images_and_masks_run_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every odd image (as a background job) and odd mask mode (inpaint) is accepted, uploaded
    as the API wants it, and comes back whole at the requested size."""
    jobs, want = [], {}
    for index, (name, make) in enumerate(ODD_BUT_VALID_IMAGES.items()):
        make(tmp_path / f"image-{index}")
        jobs.append({"id": f"img-{index}", "type": "background", "image": f"image-{index}"})
        want[f"img-{index}"] = Want(1, (1024, 1024))
        tally(f"hostile/fixed/odd image: {name}")
    make_image(tmp_path / "photo.png")
    for index, (name, make) in enumerate(MASK_MODES.items()):
        make(tmp_path / f"mask-{index}")
        jobs.append({"id": f"mask-{index}", "type": "inpaint", "image": "photo.png"})
        jobs[-1]["mask"] = f"mask-{index}"
        want[f"mask-{index}"] = Want(1, (1024, 1024))
        tally(f"hostile/fixed/odd mask: {name}")
    for job in jobs:
        job |= {"prompt": "studio shot", "size": "1024x1024", "quality": "low"}
    manifest = tmp_path / "odd.yaml"
    manifest.write_text(json.dumps({"version": 1, "jobs": jobs}))
    out = tmp_path / "out"
    with emulator() as emu:
        result = run_inprocess(
            ["run", str(manifest), "--out", str(out), *QUIET, *QUICK], emu.env, monkeypatch, capsys
        )
    assert result.code == 0, result.streams
    assert_outputs_whole(out, want)


# -- symbolic links: the policy of preflight.py's docstring ----------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A photo outside the manifest's folder (``tmp_path/project`` is that folder)."""
    return make_image(tmp_path / "elsewhere" / "secret.png")


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    make_image(project / "images" / "real.png")
    make_mask(project / "masks" / "m.png")
    return project


LINKS: dict[str, tuple[str, str, bool]] = {
    # name: (field, how the manifest writes the path, refused?)
    "image link inside pointing outside": ("image", "images/link.png", True),
    "mask link inside pointing outside": ("mask", "masks/link.png", True),
    "linked folder pointing outside": ("image", "linked/secret.png", True),
    "link inside pointing inside": ("image", "images/inner-link.png", False),
    "absolute path outside, as written": ("image", "{outside}", False),
    "dot-dot path outside, as written": ("image", "../elsewhere/secret.png", False),
}


@pytest.mark.parametrize("name", LINKS)
def test_symbolic_links_follow_the_documented_policy(
    name: str, tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path into the manifest's folder must stay inside once links are resolved; a path
    written outside (absolute or ``..``) is taken as written (preflight.py, "Files")."""
    field, written, refused = LINKS[name]
    project = _project(tmp_path)
    mask_of_outside = make_mask(tmp_path / "elsewhere" / "secret-mask.png")
    (project / "images" / "link.png").symlink_to(outside)
    (project / "masks" / "link.png").symlink_to(mask_of_outside)
    (project / "linked").symlink_to(outside.parent, target_is_directory=True)
    (project / "images" / "inner-link.png").symlink_to(project / "images" / "real.png")
    job = {"id": "sku-7", "type": "inpaint", "image": "images/real.png", "mask": "masks/m.png"}
    job |= {"prompt": "x", field: written.format(outside=outside)}
    result = _validate(project, [job], capsys)
    if refused:
        assert result.code == 2, result.stdout
        assert f"    {field}: " in result.stderr and "symbolic link" in result.stderr
        assert str(outside.parent) in result.stderr  # says where the link really leads
    else:
        assert result.code == 0, result.stderr


# -- hostile servers ---------------------------------------------------------------------------


def _one_job_catalog(tmp_path: Path) -> tuple[Path, Path]:
    make_image(tmp_path / "p.png")
    manifest = tmp_path / "one.yaml"
    job = {"id": "sku-1", "type": "background", "image": "p.png", "prompt": "marble"}
    manifest.write_text(json.dumps({"version": 1, "jobs": [job]}))
    return manifest, tmp_path / "out"


def test_an_absurdly_large_result_fails_the_job_not_the_run_and_is_fetched_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rate_huge: every download announces 256 MiB. The job fails as ``download`` after its
    attempts, nothing is written, and ``--retry-failed`` later fetches the paid result
    without buying it again."""
    manifest, out = _one_job_catalog(tmp_path)
    args = ["run", str(manifest), "--out", str(out), *QUIET, "--max-attempts", "3"]
    args += ["--config", str(write_profile(tmp_path))]
    with emulator(rate_huge=1.0) as emu:
        result = run_inprocess(args, emu.env, monkeypatch, capsys)
        assert result.code == 1
        failed = [r for r in records(out) if r["status"] == "failed"]
        assert [r["error"]["kind"] for r in failed] == ["download"]
        assert "256" in failed[0]["error"]["message"] or "bytes" in failed[0]["error"]["message"]
        status = run_inprocess(["status", str(out)], {}, monkeypatch, capsys)
        assert "sku-1: download" in status.stdout
        assert not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size > 2**20]
        assert_no_partial_final_files(out)

        emu.configure(rate_huge=0.0)
        again = run_inprocess([*args, "--retry-failed"], emu.env, monkeypatch, capsys)
        assert again.code == 0, again.streams
        assert paid_feature_calls(emu.log) == 1  # the stored result, not a new edit
    assert_outputs_whole(out, {"sku-1": Want(1, (1024, 1024))})
    tally("hostile/fixed/huge download")


def test_a_result_url_on_a_foreign_host_is_never_contacted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    loopback_only: list[str],
) -> None:
    """foreign_temporary_url: the signed URL points at 203.0.113.1. The client trusts only the
    API host, the asset host and *.amazonaws.com, so it checks once whether the asset host
    serves unsigned reads (it does here), then fetches from it. The loopback guard (conftest)
    would fail the test on any attempt to reach that host."""
    manifest, out = _one_job_catalog(tmp_path)
    with emulator(foreign_temporary_url=True) as emu:
        result = run_inprocess(
            ["run", str(manifest), "--out", str(out), *QUIET, *QUICK], emu.env, monkeypatch, capsys
        )
        downloads = [e for e in emu.log if e["route"] in ("asset", "temporary")]
    assert result.code == 0, result.streams
    assert loopback_only == []
    assert [e["route"] for e in downloads] == ["asset", "asset"]  # the check, then the result
    assert states(out) == {"sku-1": "succeeded"}
    assert_outputs_whole(out, {"sku-1": Want(1, (1024, 1024))})
    tally("hostile/fixed/foreign result host")


def test_hostile_ids_write_nothing_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` (not just validate) with ids that try to escape: exit 2, nothing sent, and no
    file appears anywhere but OUT."""
    make_image(tmp_path / "p.png")
    ids = ["../escape", "/tmp/abs", "a\x00b", "..", "sub/dir", "~", "CON", "x" * 300]
    jobs = [{"id": job_id, "type": "background", "image": "p.png", "prompt": "x"} for job_id in ids]
    manifest = tmp_path / "ids.yaml"
    manifest.write_text(json.dumps({"version": 1, "jobs": jobs}))
    before = _tree(tmp_path.parent)
    out = tmp_path / "out"
    with emulator() as emu:
        result = run_inprocess(
            ["run", str(manifest), "--out", str(out), *QUIET, *QUICK], emu.env, monkeypatch, capsys
        )
        assert emu.log == []  # nothing sent
    assert result.code == 2
    assert result.stderr.count("\n    id: ") >= len(ids) - 1  # "~" may be a fine name
    after = _tree(tmp_path.parent)
    assert {p for p in after - before if not p.startswith(str(out))} == set()
    tally("hostile/fixed/escaping ids", len(ids))


def _tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}
