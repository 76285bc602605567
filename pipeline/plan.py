"""Plan: a content key per job, and ``scan``, the single pass both ``validate`` and ``run`` use.

The content key decides whether a re-run must redo a job (SPEC §4: "same content (image, mask,
prompt and parameters)"). It is the sha256 of a canonical JSON document holding the feature,
the model, the image's and mask's byte digests (or the URL / asset path as written), every
parameter the API gets, and whether the mask is converted. It holds neither the id nor the
location, so moving or renaming a job keeps its key. Nothing in it depends on the process
(no ``hash()``, sorted keys), so it is the same across runs and machines. ``KEY_VERSION`` is
in it too: changing what goes into the key means bumping it, which re-runs every job once.

A URL's key is its text: the pipeline cannot see, offline, that the bytes behind it changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import Problem
from pipeline.manifest import Manifest
from pipeline.models import MODEL, InputRef, Job, PlannedJob
from pipeline.preflight import Notice, Preflight, id_fingerprint

KEY_VERSION = 1
CACHE_SIZE = 65_536  # distinct files whose digest is remembered


def file_digest(path: Path) -> str:
    """sha256 hex of the file's bytes, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def content_key(
    job: Job, image_token: str, mask_token: str | None, mask_convert: bool = False
) -> str:
    """The job's content key from its inputs' tokens (see the module docstring)."""
    document: dict[str, Any] = {
        "key_version": KEY_VERSION,
        "model": MODEL,
        "feature": job.feature.value,
        "image": image_token,
        "mask": mask_token,
        "mask_convert": mask_convert,
        "parameters": job.parameters(),
    }
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Planner:
    """Makes PlannedJobs; hashes each distinct file once (by real path, bounded cache)."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._real_path = lru_cache(maxsize=cache_size)(os.path.realpath)
        self._digest = lru_cache(maxsize=cache_size)(_digest_of_real_path)

    def digest(self, path: str | Path) -> str:
        return self._digest(self._real_path(os.fspath(path)))

    def plan(self, job: Job, mask_convert: bool = False) -> PlannedJob:
        """Raises OSError if an input file can no longer be read (``scan`` reports it)."""
        image_digest = self._file_digest(job.image)
        mask_digest = self._file_digest(job.mask) if job.mask is not None else None
        key = content_key(
            job,
            _token(job.image, image_digest),
            _token(job.mask, mask_digest) if job.mask is not None else None,
            mask_convert,
        )
        return PlannedJob(job, key, image_digest, mask_digest, mask_convert)

    def _file_digest(self, ref: InputRef) -> str | None:
        return self.digest(ref.value) if ref.kind == "file" else None


def _digest_of_real_path(real: str) -> str:
    return file_digest(Path(real))


def _token(ref: InputRef, digest: str | None) -> str:
    # The kind prefix keeps a URL from ever colliding with a digest or an asset path.
    return f"sha256:{digest}" if digest is not None else f"{ref.kind}:{ref.value}"


class EntrySet:
    """A set of manifest entry ordinals, one bit each: a million entries in 125 KB."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, ordinal: int) -> None:
        index, bit = ordinal >> 3, 1 << (ordinal & 7)
        if index >= len(self._bits):
            self._bits.extend(bytes(index - len(self._bits) + 1 + len(self._bits) // 2))
        if not self._bits[index] & bit:
            self._bits[index] |= bit
            self.count += 1

    def __contains__(self, ordinal: object) -> bool:
        if not isinstance(ordinal, int) or ordinal < 0:
            return False
        index = ordinal >> 3
        return index < len(self._bits) and bool(self._bits[index] & (1 << (ordinal & 7)))


def scan(
    manifest: Manifest,
    preflight: Preflight | None = None,
    planner: Planner | None = None,
    wanted: EntrySet | None = None,
) -> Iterator[PlannedJob | Problem | Notice]:
    """Stream the manifest's jobs through preflight and the planner, in manifest order.

    Yields a job's problems and notices before its PlannedJob; a job with problems yields no
    PlannedJob. Read again on every call, so ``run`` can check everything first, then feed.
    Give each pass a fresh Preflight (it remembers the ids it saw, to find duplicates); a
    Planner may be shared between passes to reuse its digests. With ``wanted``, only those
    entries are read (the first pass said the others are done or cannot run).
    """
    preflight = preflight if preflight is not None else Preflight()
    planner = planner if planner is not None else Planner()
    flawed: str | None = None  # location of the latest entry the manifest found wrong
    for item in manifest.iter_jobs(None if wanted is None else wanted.__contains__):
        if isinstance(item, Problem):
            flawed = item.location
            yield item
            continue
        job, problems, notices = preflight.check(item, manifest.base_dir)
        yield from problems
        yield from notices
        # A flawed entry's job (built from its good fields) is checked for the rest of its
        # problems, so all are reported at once, but never planned.
        if job is None or item.location == flawed:
            continue
        try:
            yield planner.plan(job, preflight.mask_convert(job))
        except OSError as exc:  # the file went away or changed permissions since preflight
            reason = exc.strerror or str(exc)
            yield Problem(job.id, None, f"cannot read an input: {reason}", job.location)
    duplicates = preflight.duplicate_ids()
    if duplicates:
        yield from _name_duplicates(manifest, duplicates)


def _name_duplicates(manifest: Manifest, duplicates: set[int]) -> Iterator[Problem]:
    """Every reuse of an id, with where it was first used (a second pass over the ids alone)."""
    first: dict[int, str] = {}
    for item in manifest.iter_jobs():
        if not isinstance(item, Job):
            continue
        fingerprint = id_fingerprint(item.id)
        if fingerprint not in duplicates:
            continue
        if fingerprint not in first:
            first[fingerprint] = item.location
            continue
        message = f"{item.id!r} is already used by the job at {first[fingerprint]} "
        yield Problem(item.id, "id", message + "(letter case ignored)", item.location)
