"""Object stores (s3://, gs://, az://) through fsspec: what a URL names, its filesystem, and
reading an input from it. Writing outputs there is ``store.objects``'s.

Endpoints: credentials and endpoints come from the standard places. For S3-compatible servers
(MinIO, moto, R2) set ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``): botocore >= 1.31 reads
it, and s3fs hands the client to botocore, so nothing of ours is needed; ``storage_options``
(fsspec's ``client_kwargs={"endpoint_url": ...}``) overrides it for one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec

from pipeline.errors import ObjectStoreError

REMOTE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")


EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}


PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_object_store(url: str) -> bool:
    return scheme_of(url) in REMOTE_SCHEMES


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``url``; a clear message naming the extra when it is missing."""
    scheme = scheme_of(url)
    try:
        return fsspec.filesystem(scheme, **dict(storage_options or {}))
    except ImportError as exc:
        extra = EXTRAS.get(scheme, scheme)
        package = PACKAGES.get(extra, extra)
        message = f"{scheme}:// needs {package}: pip install 'onemin-pipeline[{extra}]'"
        raise ObjectStoreError(message) from exc
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ObjectStoreError(f"{scheme}:// is not a storage fsspec knows") from exc
    except Exception as exc:  # a client that cannot start: a credentials file it cannot load
        raise ObjectStoreError(f"cannot use {scheme}://: {one_line(exc)}") from exc


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def one_line(exc: BaseException) -> str:
    """An exception as one line: botocore's and s3fs's messages may span several."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fetch_bytes(url: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """The object's bytes (remote inputs); FileNotFoundError when it is not there."""
    fs = filesystem(url, storage_options)
    with fs.open(url, "rb") as handle:
        data: bytes = handle.read()
    return data
