"""One local Ray instance for the whole package (2 CPUs, no dashboard): starting one costs
seconds, so the tests share it (each uses its own budget name and shards); workers import this
checkout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def ray_local() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    from pipeline.distributed.budget import NAMESPACE

    path = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace=NAMESPACE,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()
