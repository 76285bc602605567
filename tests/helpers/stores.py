"""The three object stores the product offers, each on a real local server on 127.0.0.1:
S3 on moto, Google Cloud Storage on gcp-storage-emulator, Azure Blob on Azurite (npm; ``make
azurite`` installs it into ``.venv/node``). Each server starts once per session on a free port;
each test takes a bucket of its own.

How the clients are pointed at them is what a user of an emulator does (README, "Outputs in a
bucket"): S3 through ``AWS_ENDPOINT_URL``; GCS through ``STORAGE_EMULATOR_HOST`` with
``token="anon"`` (``FSSPEC_GS_TOKEN``) and gcsfs's experimental bucket-type lookup off (it asks
a gRPC control API the emulator lacks, 60 s a bucket); Azure through
``AZURE_STORAGE_CONNECTION_STRING`` with Azurite's well-known development account.

Nothing here may reach a cloud's metadata server (169.254.169.254): instance-metadata lookups
are switched off for both AWS and Google.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import free_port

# Set before gcsfs or google-auth are imported anywhere in this process (both read them once).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("NO_GCE_CHECK", "true")

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".venv" / "node" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every Azurite): not a secret.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_FLAGS = ("--inMemoryPersistence", "--skipApiVersionCheck", "--loose")
SERVER_START_SECONDS = 30

NO_METADATA_SERVERS = {"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "true"}


@dataclass
class StoreServer:
    """One running store: the environment a process needs to use it, and how to make and
    break things in it."""

    scheme: str
    env: dict[str, str]
    wrong_credentials: dict[str, str]  # the same server, credentials it refuses or lacks
    options: dict[str, object] = field(default_factory=dict)  # as FSSPEC_<SCHEME>_<NAME> sets
    wrong_options: dict[str, object] = field(default_factory=dict)

    def bucket(self) -> str:
        """A new, empty bucket (a container on Azure): its URL."""
        name = f"b{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return f"{self.scheme}://{name}"

    def filesystem(self) -> Any:  # an fsspec filesystem (fsspec has no types)
        from pipeline.inputs import objectstore

        return objectstore.filesystem(f"{self.scheme}://x")


def use_store(
    server: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    options: dict[str, object],
) -> None:
    """Point this process's clients at ``server`` with ``env`` and fsspec ``options`` (what
    ``FSSPEC_<SCHEME>_<NAME>`` variables set); forget cached clients."""
    import fsspec

    for name in (*server.env, *server.wrong_credentials):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**NO_METADATA_SERVERS, **env}.items():
        monkeypatch.setenv(name, value)
    protocol = "gcs" if server.scheme == "gs" else server.scheme
    conf = fsspec.config.conf
    for key in {server.scheme, protocol}:
        monkeypatch.setitem(conf, key, dict(options))
    _clear_cached_clients()


def _clear_cached_clients() -> None:
    import fsspec

    for protocol in ("s3", "gs", "az"):
        try:
            fsspec.get_filesystem_class(protocol).clear_instance_cache()
        except (ImportError, ValueError):
            continue


# -- the servers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """gcp-storage-emulator in this process (its own threads), in memory."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # It serves one connection at a time: a client's idle keep-alive connection would hold
        # its shutdown until the client's own timeout. Close the clients first.
        _clear_cached_clients()
        gc.collect()
        server.stop()


@pytest.fixture(scope="session")
def azurite_endpoint() -> Iterator[str]:
    """Azurite's blob service as its own process, in memory, on a port it picks and prints."""
    if not AZURITE.exists():
        pytest.skip("Azurite is not installed: make azurite (npm) installs it into .venv/node")
    workdir = tempfile.mkdtemp(prefix="azurite-")  # its debug and lock files, if any
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", *AZURITE_FLAGS],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = _azurite_base(process)
        yield f"{base}/{AZURITE_ACCOUNT}"
    finally:
        process.kill()  # in memory, nothing to keep; it lets a SIGTERM wait on open sockets
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _azurite_base(process: subprocess.Popen[str]) -> str:
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"listens on (http://127\.0\.0\.1:\d+)", line)
            if match and not found:
                found.append(match.group(1))
        # keep reading until it exits, so it never blocks on a full pipe

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(0.1)
    waited = 0.1
    while not found and waited < SERVER_START_SECONDS and process.poll() is None:
        reader.join(0.1)
        waited += 0.1
    if not found:
        raise RuntimeError("Azurite did not start (see make azurite)")
    return found[0]


def s3_store(endpoint: str) -> StoreServer:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    # No key at all, and nowhere to find one: botocore says so before sending anything.
    missing = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_CONFIG_FILE": "/nonexistent/config",
    }
    return StoreServer("s3", env, missing)


def gcs_store(endpoint: str) -> StoreServer:
    env = {"STORAGE_EMULATOR_HOST": endpoint}
    # The emulator checks no token; a credentials file that is not there is refused by the
    # client itself (google-auth, asked for the default credentials), before any request.
    missing = {
        "STORAGE_EMULATOR_HOST": endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/service-account.json",
    }
    return StoreServer("gs", env, missing, {"token": "anon"}, {"token": "google_default"})


def azure_store(endpoint: str) -> StoreServer:
    def connection(key: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={endpoint};"
        )

    wrong_key = "A" * 86 + "=="  # well-formed, not the account's: Azurite refuses it (403)
    return StoreServer(
        "az",
        {"AZURE_STORAGE_CONNECTION_STRING": connection(AZURITE_KEY)},
        {"AZURE_STORAGE_CONNECTION_STRING": connection(wrong_key)},
    )


STORES: dict[str, Callable[[pytest.FixtureRequest], StoreServer]] = {
    "s3": lambda request: s3_store(request.getfixturevalue("moto_endpoint")),
    "gs": lambda request: gcs_store(request.getfixturevalue("gcs_endpoint")),
    "az": lambda request: azure_store(request.getfixturevalue("azurite_endpoint")),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreServer]:
    """Each store in turn, this process pointed at it."""
    server = STORES[request.param](request)
    use_store(server, monkeypatch, server.env, server.options)
    try:
        yield server
    finally:
        _clear_cached_clients()
