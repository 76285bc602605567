"""Argument types shared by the commands: each refuses a bad value with a one-line reason."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from pipeline.config import ConfigError, concurrency_value, http_url_problem
from pipeline.inputs.objectstore import REMOTE_SCHEMES, is_object_store


def add_redo_missing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redo-missing",
        action="store_true",
        help="buy again succeeded jobs whose outputs are gone and could not be re-fetched free",
    )


def add_rehash(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rehash",
        action="store_true",
        help="read every input file again, ignoring the input cache (then rebuild it)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def concurrency_option(text: str) -> int | str:
    """``--concurrency``: ``auto`` or a whole number of at least 1."""
    try:
        return concurrency_value(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("rate.concurrency: ")) from exc


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def http_url(text: str) -> str:
    """An http(s) base URL with a host: ``127.0.0.1:8765`` without a scheme is refused."""
    problem = http_url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text.strip()


def out_option(text: str) -> str:
    """``--out``: a folder, a ``file://`` URL, or an object-store URL (s3://, gs://, az://)."""
    if "://" in text and not is_object_store(text) and not text.startswith("file://"):
        schemes = ", ".join(f"{scheme}://" for scheme in REMOTE_SCHEMES)
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a folder nor an object-store URL ({schemes})"
        )
    return text


def ids_option(text: str) -> frozenset[str]:
    """``ID,ID`` or ``@FILE``: ids one a line, or JSON (a list of ids, or the review page's
    export: an object whose ``ids``, ``rejected`` or ``jobs`` list holds ids or {"id": ...})."""
    if not text.startswith("@"):
        given = frozenset(part.strip() for part in text.split(",") if part.strip())
        if not given:
            raise argparse.ArgumentTypeError("no ids given")
        return given
    path = Path(text[1:])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from exc
    is_json = data.lstrip()[:1] in (b"[", b"{")
    ids: frozenset[str] | None = _ids_from_json(data) if is_json else _ids_from_lines(data)
    if ids is None:
        raise argparse.ArgumentTypeError(f"{path}: expected ids one a line, or a JSON list of ids")
    if not ids:
        raise argparse.ArgumentTypeError(f"{path}: no ids in it")
    return ids


def _ids_from_lines(data: bytes) -> frozenset[str]:
    lines = data.decode("utf-8", "replace").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _ids_from_json(data: bytes) -> frozenset[str] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict):
        value = next((value[k] for k in ("ids", "rejected", "jobs") if k in value), None)
    if not isinstance(value, list):
        return None
    ids = set()
    for item in value:
        if isinstance(item, dict):
            item = item.get("id") or item.get("job_id")
        if not isinstance(item, str) or not item:
            return None
        ids.add(item)
    return frozenset(ids)
