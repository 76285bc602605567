"""Input files read once: the digest and the checks of a file from one read of its bytes, and
not even that while the stat cache (``preflight.statcache``) says the file is unchanged.

``InputReader`` answers three questions about a file (by its real path): its facts as an
image, its facts as a mask (``preflight.files``) and its sha256 (the content key's). Each
answer comes, in order, from this pass's memory (a bounded LRU), from the stat cache (one
``stat`` and one lookup), or from reading the file: one ``open``, one read of the whole file,
then the hash and the checks from the same bytes. A file larger than ``WHOLE_READ_MAX`` (past
any size the API takes) is hashed while streamed, then checked from its path: read twice.

A first run's new photo may instead be glanced at (``image(..., glance=True)``: its header and
last bytes, ``files.glance_facts``) and read once later, by its upload (``read_photo`` on a
worker thread, ``learn`` back on the caller's): the digest, the full check and the report's
thumbnail then come from the bytes uploaded (docs/ledger.md#stat-cache).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from pipeline.preflight.files import (
    MAX_PIXELS,
    UNUSABLE_NAME,
    ImageFacts,
    glance_facts,
    image_facts,
    mask_facts,
    unusable_file,
)
from pipeline.preflight.statcache import Entry, Signature, StatCache

WHOLE_READ_MAX = 64 * 1024 * 1024  # bytes: files up to this size are read into memory at once
MEMORY_SIZE = 4096  # files remembered in this pass (the stat cache holds the rest)
FACTS_VERSION = 1  # bump when ImageFacts or the checks change: cached facts are then re-read
DECODED_SIZE = 256  # distinct encoded verdicts whose decoding is remembered

Verdict = ImageFacts | str  # what preflight found, or why the file cannot be used
IMAGE, MASK = "image", "mask"
Inspect = Callable[[str, bytes | None, int, int], Verdict]
_INSPECTORS: dict[str, Inspect] = {IMAGE: image_facts, MASK: mask_facts}


class Known(NamedTuple):
    """A file as this pass knows it: unchanged since ``signature`` was taken (a tuple: one is
    made for every row of a catalog of distinct photos)."""

    signature: Signature
    checked_ns: int
    digest: str
    image: Verdict | None = None  # None: not looked at as an image yet
    mask: Verdict | None = None


def read_whole(real: str) -> bytes:
    """The file's bytes, in one open (``InputReader``'s default opener)."""
    with open(real, "rb") as handle:
        return handle.read()


class PhotoRead(NamedTuple):
    """A photo read once for its upload (``InputReader.read_photo``): its bytes, and what the
    stat cache is to remember of them."""

    data: bytes
    known: Known

    @property
    def verdict(self) -> Verdict:
        assert self.known.image is not None
        return self.known.image


class InputReader:
    """Facts and digests of input files, each file read at most once (see the module)."""

    def __init__(
        self,
        cache: StatCache | None = None,
        max_pixels: int = MAX_PIXELS,
        read: Callable[[str], bytes] = read_whole,
        memory_size: int = MEMORY_SIZE,
    ) -> None:
        self.cache = cache if cache is not None else StatCache()
        self.max_pixels = max_pixels
        self._read_file = read
        self._memory: OrderedDict[str, Known] = OrderedDict()
        self._memory_size = memory_size
        # Files glanced at (``image(..., glance=True)``): their header facts, while unchanged,
        # so planning their job reads nothing either.
        self._glanced: OrderedDict[str, tuple[Signature, ImageFacts]] = OrderedDict()
        # When set, the bytes of the latest file read for its facts as an image, kept until
        # the caller takes them (``take_image_bytes``): the report's thumbnail is made from
        # them, so a run does not open the photo again for it.
        self.keep_image_bytes = False
        self._image_bytes: tuple[str, bytes] | None = None

    def image(self, real: str, info: os.stat_result | None = None, glance: bool = False) -> Verdict:
        """The file's facts as an image, or why it cannot be one. ``info``: its stat, when the
        caller just took it. ``glance``: a file this pass and the stat cache do not know is
        looked at, not read, when its header and end say it is whole (its upload will read
        it: ``read_photo``); ``recalled_digest`` then has no digest for it."""
        return self._verdict(real, IMAGE, info, glance)

    def recall_image(self, real: str) -> Known | None:
        """What this pass or the stat cache knows of the file as an image, if it is unchanged
        (not read)."""
        info = _stat(real)
        if isinstance(info, str):
            return None
        known = self._recall(real, Signature.of(info))
        return known if known is not None and known.image is not None else None

    def read_photo(self, real: str) -> PhotoRead | str:
        """Read the file once: its bytes, digest and facts as an image; or why it cannot be
        read. Touches nothing shared (a worker thread may call it); ``learn`` keeps the
        result."""
        signature = _usable(real)
        if isinstance(signature, str):
            return signature
        checked_ns = self.cache.now()
        try:
            data = self._read_file(real)
        except OSError as exc:
            return _unreadable(exc)
        if len(data) != signature.size:
            return "changed while it was read; run again"
        verdict = image_facts(real, data, len(data), self.max_pixels)
        digest = hashlib.sha256(data).hexdigest()
        return PhotoRead(data, Known(signature, checked_ns, digest, image=verdict))

    def learn(self, real: str, read: PhotoRead) -> None:
        """Remember a ``read_photo`` (in this pass's memory and the stat cache); call it from
        the thread that owns the reader."""
        self._remember(real, read.known, store=True)

    def mask(self, real: str) -> Verdict:
        """The file's facts as a mask (its content warnings among the notes), or why not."""
        return self._verdict(real, MASK)

    def digest(self, real: str) -> str:
        """sha256 hex of the file's bytes. Raises OSError if the file cannot be read."""
        info = _stat(real)
        if isinstance(info, str):
            raise OSError(f"{real} {info}")
        signature = Signature.of(info)
        known = self._recall(real, signature)
        if known is not None:
            return known.digest
        read = self._read(real, signature, None, None)
        if isinstance(read, str):
            raise OSError(f"{real} {read}")
        return read.digest

    def take_image_bytes(self, real: str) -> bytes | None:
        """The bytes of ``real`` if it is the file just read for its facts as an image (and
        ``keep_image_bytes`` is set); given once, then forgotten."""
        kept, self._image_bytes = self._image_bytes, None
        return kept[1] if kept is not None and kept[0] == real else None

    def facts_of(self, raw: bytes, real: str) -> Verdict | None:
        """The verdict a stat-cache entry holds encoded (``Entry.image`` or ``.mask``) for the
        file at ``real``; None when other rules made it (the file must then be read)."""
        return _decoded(raw, real, self.max_pixels)

    def recalled_digest(self, real: str) -> str | None:
        """The digest of a file this pass just looked at (``image`` or ``mask``), without
        looking again; None if it is not in this pass's memory."""
        known = self._memory.get(real)
        return known.digest if known is not None else None

    def settled(self, real: str, digest: str | None) -> Signature | None:
        """The signature of ``real`` as it is now, when this pass or the stat cache knows the
        file unchanged since it was read, with this ``digest`` (None: any), and not racily
        clean (a plan memo may then vouch for it by its signature alone); None otherwise."""
        info = _stat(real)
        if isinstance(info, str):
            return None
        signature = Signature.of(info)
        known = self._recall(real, signature)
        if known is None or signature.racy(known.checked_ns):
            return None
        if digest is not None and known.digest != digest:
            return None
        return signature

    # -- the three sources, in order --

    def _verdict(
        self, real: str, role: str, taken: os.stat_result | None = None, glance: bool = False
    ) -> Verdict:
        signature = _usable(real, taken)
        if isinstance(signature, str):
            return signature
        known = self._recall(real, signature)
        if known is not None:
            verdict = known.image if role == IMAGE else known.mask
            if verdict is not None:
                return verdict
        elif glance and role == IMAGE:
            glanced = self._glance(real, signature)
            if glanced is not None:
                return glanced
        read = self._read(real, signature, role, known)
        if isinstance(read, str):
            return read
        verdict = read.image if role == IMAGE else read.mask
        assert verdict is not None
        return verdict

    def glanced(self, real: str) -> ImageFacts | None:
        """The header facts of a file this pass glanced at, if it is unchanged since: what
        planning its job needs (its recipe), read from nothing. None: not glanced at."""
        seen = self._glanced.get(real)
        if seen is None:
            return None
        info = _stat(real)
        if isinstance(info, str) or Signature.of(info) != seen[0]:
            return None
        return seen[1]

    def _glance(self, real: str, signature: Signature) -> ImageFacts | None:
        """The header facts of a file glanced at in this pass (if unchanged), or of a look at
        it now; None: read it."""
        seen = self._glanced.get(real)
        if seen is not None and seen[0] == signature:
            return seen[1]
        if signature.size > WHOLE_READ_MAX:
            return None
        facts = glance_facts(real, signature.size, self.max_pixels)
        if facts is not None:
            self._glanced[real] = (signature, facts)
            if len(self._glanced) > self._memory_size:
                self._glanced.popitem(last=False)
        return facts

    def _recall(self, real: str, signature: Signature) -> Known | None:
        """What this pass or the stat cache knows of the file, if it is unchanged."""
        known = self._memory.get(real)
        if known is not None:
            if known.signature == signature:
                self._memory.move_to_end(real)
                return known
            del self._memory[real]
        entry = self.cache.lookup(real, signature)
        if entry is None:
            return None
        image = _decoded(entry.image, real, self.max_pixels) if entry.image else None
        mask = _decoded(entry.mask, real, self.max_pixels) if entry.mask else None
        fields = (signature, entry.checked_ns, entry.digest.hex(), image, mask)
        known = tuple.__new__(Known, fields)
        self._remember(real, known, store=False)
        return known

    def _read(
        self, real: str, signature: Signature, role: str | None, known: Known | None
    ) -> Known | str:
        """Read the file once: its digest and (for ``role``) its checks from the same bytes."""
        checked_ns = self.cache.now()
        try:
            if signature.size > WHOLE_READ_MAX:
                digest, data = _streamed_digest(real), None
            else:
                data = self._read_file(real)
                digest = hashlib.sha256(data).hexdigest()
        except OSError as exc:
            return _unreadable(exc)
        if known is None or known.digest != digest:  # new bytes: what was found no longer holds
            known = Known(signature, checked_ns, digest)
        else:
            known = known._replace(signature=signature, checked_ns=checked_ns)
        if role is not None:
            verdict = _INSPECTORS[role](real, data, signature.size, self.max_pixels)
            if self.keep_image_bytes and role == IMAGE and isinstance(verdict, ImageFacts):
                self._image_bytes = (real, data) if data is not None else None
            known = known._replace(image=verdict) if role == IMAGE else known._replace(mask=verdict)
        self._remember(real, known, store=True)
        return known

    def _remember(self, real: str, known: Known, store: bool) -> None:
        self._memory[real] = known
        if len(self._memory) > self._memory_size:
            self._memory.popitem(last=False)
        if store:
            entry = Entry(
                known.signature,
                known.checked_ns,
                bytes.fromhex(known.digest),
                _encoded(known.image, self.max_pixels),
                _encoded(known.mask, self.max_pixels),
            )
            self.cache.remember(real, entry)


def _usable(real: str, taken: os.stat_result | None = None) -> Signature | str:
    """The signature of a file that can be an input (``taken``: its stat, if just taken), or
    why it cannot."""
    info = taken if taken is not None else _stat(real)
    if isinstance(info, str):
        return info
    return unusable_file(info) or Signature.of(info)


def _stat(real: str) -> os.stat_result | str:
    """The file's stat, or why there is none (in words)."""
    try:
        return os.stat(real)
    except FileNotFoundError:
        return f"does not exist (looked for {real})"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except ValueError:  # a NUL byte or a character the file system cannot encode
        return UNUSABLE_NAME


def _unreadable(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    return f"cannot be read: {exc.strerror or exc}"


def _streamed_digest(real: str) -> str:
    with open(real, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# -- verdicts in the stat cache: a JSON array, tagged with the rules that produced it --------


def _encoded(verdict: Verdict | None, max_pixels: int) -> bytes | None:
    if verdict is None:
        return None
    if isinstance(verdict, str):
        return orjson.dumps([FACTS_VERSION, max_pixels, verdict])
    return orjson.dumps(
        [
            FACTS_VERSION,
            max_pixels,
            verdict.format,
            verdict.width,
            verdict.height,
            verdict.mode,
            verdict.notes,
            verdict.convert_mask,
            verdict.orientation,
            verdict.sixteen_bit,
            verdict.edits_nothing,
        ]
    )


def _decoded(raw: bytes | None, real: str, max_pixels: int) -> Verdict | None:
    """The verdict, or None when there is none or other rules made it (then the file is read)."""
    if raw is None:
        return None
    fields = _fields(raw, max_pixels)
    if fields is None or isinstance(fields, str):
        return fields
    return ImageFacts(real, *fields)


@lru_cache(maxsize=DECODED_SIZE)
def _fields(raw: bytes, max_pixels: int) -> tuple[Any, ...] | str | None:
    """An encoded verdict's fields but the path (photos of one catalog mostly share them)."""
    try:
        values: list[Any] = orjson.loads(raw)
        if values[:2] != [FACTS_VERSION, max_pixels]:
            return None
        if len(values) == 3:
            return str(values[2])
        fmt, width, height, mode, notes, convert, orientation, sixteen, nothing = values[2:]
        return (fmt, width, height, mode, tuple(notes), convert, orientation, sixteen, nothing)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None  # written by something else: read the file again
