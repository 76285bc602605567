"""Inputs as a person sees them, through a real run (docs/manifest.md#input-preparation): an
EXIF-rotated phone photo is uploaded upright, picks a portrait size, and comes back portrait."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.e2e import QUICK_POLLS, run_cli
from tests.helpers.emulator import emulator_thread

# Whole runs of the CLI against the emulator: make test runs them, test-fast does not.
pytestmark = pytest.mark.slow

FAST = ["--no-progress", "--no-report", "--rpm", "6000", "--config", str(QUICK_POLLS)]


def test_an_exif_rotated_photo_is_uploaded_upright_and_comes_back_portrait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = Image.new("RGB", (120, 80), (200, 40, 40))  # stored landscape ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... shown rotated a quarter turn: a portrait photo
    photo.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    manifest = tmp_path / "m.yaml"
    job = {"id": "phone", "type": "background", "image": "phone.jpg", "prompt": "white studio"}
    manifest.write_text(json.dumps({"version": 1, "defaults": {"size": "auto"}, "jobs": [job]}))
    out = tmp_path / "out"
    with emulator_thread() as emulator:
        assert (
            run_cli(["run", str(manifest), "--out", str(out), *FAST], emulator.env, monkeypatch)
            == 0
        )
        uploaded = next(iter(emulator.server.state.assets.values()))  # the one upload
    assert (uploaded.width, uploaded.height) == (80, 120)  # upright, as a person sees it
    with Image.open(out / "phone" / "0.png") as result:
        assert result.size == (1024, 1536)  # size: auto chose portrait
