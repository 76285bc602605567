"""The folder's tests share one Ray instance only if pytest-xdist keeps them on one worker
(``tests/conftest.py`` marks them ``xdist_group("ray")``). pytest 9.2 stopped reading the
node id xdist 3.8 rewrites to carry the group, and nothing failed: every worker started its
own Ray. This test fails instead."""

from __future__ import annotations

import pytest


def test_this_folder_runs_as_one_xdist_group(request: pytest.FixtureRequest) -> None:
    if not hasattr(request.config, "workerinput") or not request.config.getvalue("loadgroup"):
        pytest.skip("not under pytest-xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@ray")
