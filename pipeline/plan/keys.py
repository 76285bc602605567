"""Content keys: what decides whether a re-run must redo a job, and the digests they hold.

The content key decides whether a re-run must redo a job (docs/ledger.md#content-key: "same content
(image, mask, prompt and parameters)"). It is the sha256 of a canonical JSON document holding the
feature, the model, the image's and mask's byte digests (or the URL / asset path as written), every
parameter the API gets, and whether the mask is converted. It holds neither the id nor the location,
so moving or renaming a job keeps its key. Nothing in it depends on the process (no ``hash()``,
sorted keys), so it is the same across runs and machines. ``KEY_VERSION`` is in it too: changing
what goes into the key means bumping it, which re-runs every job once.

A URL's key is its text: the pipeline cannot see, offline, that the bytes behind it changed.
A mask made here (``box:``, ``alpha``, a modified or scaled file) is keyed by its recipe, the
image's digest and the file's (``masks.recipe_token``), not by the PNG's bytes: the key then
says what was asked, and a plain file mask keeps the key it always had.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from pipeline.images import masks
from pipeline.images.upload import Recipe
from pipeline.models import MODEL, InputRef, Job, PlannedJob, UnreadImage
from pipeline.preflight.effective import EffectiveMask
from pipeline.preflight.files import ImageFacts

KEY_VERSION = 1
# The digest a template of rows of distinct photos is planned with when its first photo was not
# read (``models.UnreadImage``): each row gets its own key and digest, so none carries this one.
UNREAD_DIGEST = "0" * 64
CACHE_SIZE = 65_536  # distinct files whose digest is remembered


def file_digest(path: Path) -> str:
    """sha256 hex of the file's bytes, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def content_key(
    job: Job,
    image_token: str,
    mask_token: str | None,
    mask_convert: bool = False,
    recipes: Mapping[str, str] | None = None,
) -> str:
    """The job's content key from its inputs' tokens (see the module docstring).

    ``recipes`` holds the non-empty upload recipes (``image_recipe``, ``mask_recipe``): other
    bytes are uploaded, so another key; a job whose files go up as they are keeps its old key.
    """
    return key_of(key_document(job, image_token, mask_token, mask_convert, recipes))


def key_of(document: Mapping[str, Any]) -> str:
    """The sha256 of the key document's canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ImageKeys:
    """``key_of`` for the documents of one job shape that differ in their image digest alone
    (a catalog of distinct photos): the canonical JSON is made once, split around the image's
    token, and each key hashes a digest between the two halves. The same bytes are hashed, so
    the same keys come out (a test compares them with ``key_of``)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = dict(document)
        halves = key_halves(document)
        self._head: Any = None  # the hash of everything before the digest, copied per key
        self._tail = b""
        if halves is not None:
            self._head = hashlib.sha256(halves[0])
            self._tail = halves[1]

    def key(self, digest: str) -> str:
        """The key of the document with ``"image": "sha256:<digest>"`` (hex, lowercase)."""
        if self._head is None:  # the marker was not found once (it cannot be): the long way
            self._document["image"] = f"sha256:{digest}"
            return key_of(self._document)
        hashed = self._head.copy()
        hashed.update(digest.encode("ascii"))
        hashed.update(self._tail)
        return hashed.hexdigest()


_MARKER = "sha256:" + "*" * 64  # no digest has a "*"; a quote inside a string is escaped


def key_halves(document: Mapping[str, Any]) -> tuple[bytes, bytes] | None:
    """The canonical JSON of ``document`` with ``"image": "sha256:<digest>"``, split around
    the digest: ``key_of`` is then the sha256 of head + digest + tail. None if the split is
    not exact (it always is: the marker cannot occur elsewhere)."""
    probe = {**document, "image": _MARKER}
    text = orjson.dumps(probe, option=orjson.OPT_SORT_KEYS)
    before, found, after = text.partition(orjson.dumps(_MARKER))
    tail = b'"' + after
    if not found or tail.count(found):
        return None
    return before + b'"sha256:', tail


def unread_image(document: Mapping[str, Any], facts: ImageFacts) -> UnreadImage | None:
    """What completes the key of a job whose photo is read at its upload (``UnreadImage``),
    from its key document and the header facts its plan was made from."""
    halves = key_halves(document)
    if halves is None:
        return None
    return UnreadImage(halves[0], halves[1], facts.planned_from)


def with_prompt(document: dict[str, Any], prompt: str) -> str:
    """The key of the job the document is of, with another prompt (the document is reused)."""
    document["parameters"]["prompt"] = prompt
    return key_of(document)


def key_document(
    job: Job,
    image_token: str,
    mask_token: str | None,
    mask_convert: bool = False,
    recipes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What ``content_key`` hashes."""
    return {
        "key_version": KEY_VERSION,
        "model": MODEL,
        "feature": job.feature.value,
        "image": image_token,
        "mask": mask_token,
        "mask_convert": mask_convert,
        "parameters": job.parameters(),
        **(recipes or {}),
    }


class Planner:
    """Makes PlannedJobs. ``digest_of`` gives a file's sha256 by its path (``Preflight.digest``:
    from the one read that checked it, or the stat cache); without it each distinct file is
    hashed here, once (by real path, bounded cache)."""

    def __init__(
        self, cache_size: int = CACHE_SIZE, digest_of: Callable[[str], str] | None = None
    ) -> None:
        if digest_of is None:
            real_path = lru_cache(maxsize=cache_size)(os.path.realpath)
            digest = lru_cache(maxsize=cache_size)(_digest_of_real_path)
            digest_of = lambda path: digest(real_path(path))  # noqa: E731
        self._digest_of = digest_of

    def digest(self, path: str | Path) -> str:
        return self._digest_of(os.fspath(path))

    def plan(
        self,
        job: Job,
        mask_convert: bool = False,
        image_recipe: Recipe | None = None,
        mask_recipe: Recipe | None = None,
        effective: EffectiveMask | None = None,
    ) -> PlannedJob:
        """Raises OSError if an input file can no longer be read (``scan`` reports it)."""
        return self.plan_and_document(job, mask_convert, image_recipe, mask_recipe, effective)[0]

    def plan_and_document(
        self,
        job: Job,
        mask_convert: bool = False,
        image_recipe: Recipe | None = None,
        mask_recipe: Recipe | None = None,
        effective: EffectiveMask | None = None,
        image_digest: str | None = None,
    ) -> tuple[PlannedJob, dict[str, Any]]:
        """``plan``, and the key document (``with_prompt`` re-keys it for another prompt).
        ``image_digest``: the image's, when the caller has it (else it is asked for)."""
        if image_digest is None:
            image_digest = self._file_digest(job.image)
        mask_digest = self._file_digest(job.mask) if job.mask is not None else None
        recipes = {
            name: recipe.token
            for name, recipe in (("image_recipe", image_recipe), ("mask_recipe", mask_recipe))
            if recipe is not None and recipe.token
        }
        if effective is not None and image_digest is not None:
            # A mask made here: keyed by its recipe and the image's digest; uploaded as its PNG.
            token = masks.recipe_token(effective.recipe, image_digest, mask_digest)
            if effective.size_token:
                token += f"|{effective.size_token}"
            image_only = {k: v for k, v in recipes.items() if k == "image_recipe"}
            document = key_document(job, _token(job.image, image_digest), token, recipes=image_only)
            planned = PlannedJob(
                job,
                key_of(document),
                image_digest,
                effective.digest,
                False,
                image_recipe,
                None,
                effective.png,
            )
            return planned, document
        document = key_document(
            job,
            _token(job.image, image_digest),
            _token(job.mask, mask_digest) if job.mask is not None else None,
            mask_convert,
            recipes,
        )
        planned = PlannedJob(
            job,
            key_of(document),
            image_digest,
            mask_digest,
            mask_convert,
            image_recipe,
            mask_recipe,
        )
        return planned, document

    def _file_digest(self, ref: InputRef) -> str | None:
        return self.digest(ref.value) if ref.kind == "file" else None


def _digest_of_real_path(real: str) -> str:
    return file_digest(Path(real))


def _token(ref: InputRef, digest: str | None) -> str:
    # The kind prefix keeps a URL from ever colliding with a digest or an asset path.
    return f"sha256:{digest}" if digest is not None else f"{ref.kind}:{ref.value}"
