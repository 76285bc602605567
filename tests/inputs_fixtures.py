"""Fixtures for the inputs tests: an S3-compatible server (moto's server mode) on 127.0.0.1.

Imported by the test modules that use them (``from tests.inputs_fixtures import s3_server``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server for this test; its endpoint URL, exported as AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    import fsspec

    fsspec.config.conf.pop("s3", None)
    try:
        yield endpoint
    finally:
        server.stop()
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
