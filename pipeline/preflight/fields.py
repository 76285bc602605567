"""Checks on a job's own fields (id, prompt, parameters, remote references), and the ids seen.

Fields that belong to one feature only are the manifest's rule (``manifest.build``: it alone
knows whether a value was written on the job or came from ``defaults``); a Job reaching
preflight carries no such field for the other feature.
"""

from __future__ import annotations

import unicodedata
from array import array
from collections import Counter
from collections.abc import Hashable, Iterator
from urllib.parse import urlsplit

from pipeline.inputs.objectstore import REMOTE_SCHEMES
from pipeline.models import (
    BACKGROUNDS,
    N_MAX,
    OUTPUT_FORMATS,
    PROMPT_MAX,
    QUALITIES,
    SIZES,
    Feature,
    InputRef,
    Job,
)
from pipeline.naming import folder_name_problem

AUTO_SIZE = "auto"
COMPRESSION_RANGE = range(0, 101)
ID_FILTER_BITS = 1 << 26  # 8 MB: about 1.5% of a million ids look like repeats, and are checked
_WORD = (1 << 64) - 1


def fingerprint(value: Hashable) -> int:
    """64 bits of ``value``'s hash, for ``Fingerprints`` (compared within one pass only)."""
    return hash(value) & _WORD


def id_fingerprint(job_id: str) -> int:
    """64 bits of the id as a folder name sees it: letter case and Unicode form ignored, since
    ``SKU-1`` and ``sku-1`` are one folder on macOS and Windows.

    Python's own string hash (SipHash): a tenth of the cost of blake2b. It differs between
    processes, which is fine: fingerprints only compare ids within one pass.
    """
    if job_id.isascii():  # ASCII is its own NFC form, and casefold is lower there
        return hash(job_id.lower()) & _WORD
    return hash(unicodedata.normalize("NFC", job_id).casefold()) & _WORD


def id_problem(job_id: str) -> str | None:
    """Why the id cannot name the job's output folder (one message), or None."""
    reason = folder_name_problem(job_id)
    return f"{job_id!r} cannot name the job's output folder: {reason}" if reason else None


class Fingerprints:
    """64-bit fingerprints of one pass in an array, not a set of Python objects (about 95 bytes
    a string): memory must not grow with a million-row catalog.

    A bit per fingerprint's low bits: a fingerprint whose bit is already set may repeat one
    (false positives are a few percent at a million), so only those are kept as Python ints.
    Repeats are therefore known once the pass is over (``duplicates``, ``distinct``).
    """

    def __init__(self, filter_bits: int | None = None) -> None:
        bits = filter_bits if filter_bits is not None else ID_FILTER_BITS
        self._mask = bits - 1
        self._ids: array[int] = array("Q")
        self._filter = bytearray(max(1, bits // 8))
        self._maybe_seen: set[int] = set()

    def add_fingerprint(self, fingerprint: int) -> None:
        self._ids.append(fingerprint)
        index = fingerprint & self._mask
        byte, bit = index >> 3, 1 << (index & 7)
        if self._filter[byte] & bit:
            self._maybe_seen.add(fingerprint)
        else:
            self._filter[byte] |= bit

    def __len__(self) -> int:
        """How many were added, repeats included."""
        return len(self._ids)

    def __iter__(self) -> Iterator[int]:
        """Every fingerprint added, in order, repeats included."""
        return iter(self._ids)

    def distinct(self) -> int:
        """How many distinct fingerprints were added (a pass over the array)."""
        if not self._maybe_seen:
            return len(self._ids)
        seen = Counter(f for f in self._ids if f in self._maybe_seen)
        return len(self._ids) - sum(count - 1 for count in seen.values())

    def duplicates(self) -> set[int]:
        """The fingerprints added more than once."""
        if not self._ids or not self._maybe_seen:
            return set()
        seen: set[int] = set()
        duplicates: set[int] = set()
        for fingerprint in self._ids:  # only candidates are held as Python ints
            if fingerprint in self._maybe_seen:
                (duplicates if fingerprint in seen else seen).add(fingerprint)
        return duplicates


class IdSet(Fingerprints):
    """The ids of one pass as fingerprints (``id_fingerprint``); ``duplicates`` once the pass
    is over."""

    def add(self, job_id: str) -> None:
        # Once a row of the catalog: the two calls cost about 30 ms a million rows more than
        # both inlined, too little to keep two copies of them.
        self.add_fingerprint(id_fingerprint(job_id))


def prompt_problems(prompt: str) -> Iterator[tuple[str, str]]:
    if not prompt.strip():
        yield "prompt", f"is empty: describe the edit (1-{PROMPT_MAX} characters)"
    elif len(prompt) > PROMPT_MAX:
        yield "prompt", f"is {len(prompt)} characters long; the API takes at most {PROMPT_MAX}"


def parameter_problems(job: Job) -> Iterator[tuple[str, str]]:
    yield from _choice("size", job.size, (*SIZES, AUTO_SIZE))
    yield from _choice("quality", job.quality, QUALITIES)
    if job.feature is Feature.INPAINT:
        if not _is_int(job.n) or not 1 <= job.n <= N_MAX:
            yield "n", f"is {job.n!r}; must be 1 to {N_MAX}"
        yield from _choice("output_format", job.output_format, OUTPUT_FORMATS)
        if not _is_int(job.output_compression) or job.output_compression not in COMPRESSION_RANGE:
            yield "output_compression", f"is {job.output_compression!r}; must be 0 to 100"
        if not job.has_mask:
            yield "mask", "required for IMAGE_INPAINTER: white marks the area to edit"
    else:
        yield from _choice("background", job.background, BACKGROUNDS)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if value not in allowed:
        yield name, f"{value!r} is not one of {', '.join(allowed)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def remote_urls(item: object) -> list[str]:
    """The URLs a manifest item's job fetches (none for a problem or a bad URL)."""
    if not isinstance(item, Job):
        return []
    refs = (item.image, item.mask)
    return [r.value for r in refs if r and r.kind == "url" and not remote_ref_problem(r)]


def shown_ref(value: str) -> str:
    """A reference as messages show it: as written, or escaped if it holds control characters
    (a newline or an escape sequence must not reach the terminal raw)."""
    return value if value.isprintable() else repr(value)


def remote_ref_problem(ref: InputRef) -> str | None:
    if ref.kind == "asset":
        return None if ref.value.strip() else "asset: needs a path after the colon"
    try:
        parts = urlsplit(ref.value)
        host = parts.hostname
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https", *REMOTE_SCHEMES):
        return f"{ref.value!r} is not an http(s) or object-store URL"
    if not host:
        return f"{ref.value!r} has no host"
    if not ref.value.replace(" ", "").isprintable():
        return "holds a control character; encode it (%XX)"
    if any(char.isspace() for char in ref.value):
        return f"{ref.value!r} contains spaces; encode them as %20"
    return None
