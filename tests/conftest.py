"""Fixtures every test folder may use, registered once: the local servers of
``tests.helpers.servers`` (``moto_endpoint``, ``s3_server``: S3 on moto; ``image_host``: an
HTTP host of input images) and of ``tests.helpers.stores`` (``gcs_endpoint``,
``azurite_endpoint`` and the ``store`` parametrised over S3, GCS and Azure). Markers are
registered in ``pyproject.toml`` only.

Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``) the tests of a folder that
shares one costly thing run in one worker: ``tests/distributed`` one local Ray instance,
``tests/browser`` one Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("tests.helpers.servers", "tests.helpers.stores")

SHARED_BY_FOLDER = {"distributed": "ray", "browser": "chromium"}
TESTS = Path(__file__).resolve().parent


# tryfirst: xdist's worker reads the xdist_group marks in its own hook of the same name, which
# pytest would otherwise call before this one (the later registered plugin runs first).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(item.fspath).resolve().relative_to(TESTS).parts[0]
        if folder in SHARED_BY_FOLDER:
            item.add_marker(pytest.mark.xdist_group(SHARED_BY_FOLDER[folder]))
