"""``ledger.checkpoint``: the folded state beside the ledger, so a resume reads only what is new.

The ledger stays the source of truth and append-only; the checkpoint is derived data, rewritten
whole (temporary file, fsync, rename, fsync of the folder) and always safe to delete. A resume
reads it, then folds the ledger lines after the offset it records (``reader.read_ledger``).

The file: ``MAGIC``, a little-endian u32 length and a msgpack header (format version, byte
order, the ledger identity, the columns' lengths and types, the status names the status codes
stand for), the columns of ``compact.JobTable`` and ``compact.AssetTable`` as raw bytes, a
msgpack section of what does not fit a column (the few jobs' ``extras`` too), and a CRC-32 of
everything before it.

It is used only when it describes a prefix of this very ledger: the ledger is at least
``offset`` bytes long, the byte before ``offset`` ends a line, and SHA-256 digests of the
ledger's first bytes, of the bytes just before ``offset`` and of a few blocks spread between
them are those it recorded. So a ledger that was truncated, replaced, restored from another
folder or edited by hand at those places gets a full fold, as does a checkpoint that is torn,
corrupt (CRC), of another format, byte order or set of statuses. Ignoring a checkpoint is never
an error: the full fold is what a run without one does, and the next checkpoint replaces it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
import sys
import weakref
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from pipeline.durability import atomic_file
from pipeline.layout import CHECKPOINT_SUFFIX
from pipeline.ledger.compact import LATER_COLUMNS, STATUSES, ByteIndex
from pipeline.ledger.extras import JobExtras
from pipeline.ledger.fold import LedgerState
from pipeline.ledger.schema import Submitted
from pipeline.models import ErrorInfo

MAGIC = b"onemin-pipeline ledger checkpoint\n"
# 2: the few jobs' extras (parts, partial jobs, lost answers), possibly charged calls, and the
# status names the status column's codes stand for.
FORMAT_VERSION = 2
HEAD_BYTES = 64 * 1024  # the ledger's first bytes, hashed: another ledger has other ones
WINDOW_BYTES = 64 * 1024  # the bytes just before the offset: a truncation or a rewrite shows
SAMPLES = 16  # blocks hashed between them, evenly spread
SAMPLE_BYTES = 4096
COPY_BLOCK = 1 << 20
_LENGTH = struct.Struct("<I")


def checkpoint_path(ledger: Path) -> Path:
    return ledger.with_suffix(CHECKPOINT_SUFFIX)


class Extras(msgspec.Struct, frozen=True):
    """What does not fit a column (``compact`` keeps it in dicts), and the scalars."""

    credits: int = 0
    possibly_charged: int = 0
    job_extras: dict[str, JobExtras] = {}  # ``LedgerState.extras``: the few jobs that have them
    corrupt_lines: list[int] = []
    key_text: dict[int, str] = {}
    uuid_text: dict[int, str] = {}
    outputs_text: dict[int, tuple[str, ...]] = {}
    big: list[tuple[str, int, int]] = []
    updated_text: dict[int, str] = {}
    errors: dict[int, ErrorInfo] = {}
    pending: dict[int, Submitted] = {}
    asset_replaced: dict[int, str] = {}
    asset_forgotten: list[int] = []
    asset_text: dict[str, str] = {}


class Identity(msgspec.Struct, frozen=True):
    """Which ledger prefix a checkpoint describes (see the module docstring)."""

    offset: int
    lines: int
    digests: list[tuple[int, int, str]]  # (start, length, sha256 hex) of ledger byte ranges


class Header(msgspec.Struct, frozen=True):
    version: int
    byteorder: str
    identity: Identity
    jobs: int
    assets: int
    # (name, typecode or "" for raw bytes, byte length), in file order
    sections: list[tuple[str, str, int]]
    extras: int  # byte length of the msgpack Extras after the sections
    statuses: list[str] = []  # the status column's codes, in order: another version's may differ


_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(Header)
_extras_decoder = msgspec.msgpack.Decoder(Extras)


# -- identity -------------------------------------------------------------------------------------


def ledger_identity(ledger: Path, offset: int, lines: int) -> Identity | None:
    """The digests of the ledger's prefix up to ``offset``; None if it cannot be read."""
    try:
        with ledger.open("rb") as handle:
            return Identity(offset, lines, [_digest(handle, *r) for r in _ranges(offset)])
    except OSError:
        return None


def _ranges(offset: int) -> list[tuple[int, int]]:
    """The byte ranges hashed for a prefix of ``offset`` bytes (a function of it alone)."""
    ranges = [(0, min(HEAD_BYTES, offset))]
    window = max(0, offset - WINDOW_BYTES)
    ranges.append((window, offset - window))
    span = window - HEAD_BYTES
    if span > SAMPLES * SAMPLE_BYTES:
        step = span // (SAMPLES + 1)
        ranges += [(HEAD_BYTES + step * k, SAMPLE_BYTES) for k in range(1, SAMPLES + 1)]
    return ranges


def _digest(handle: IO[bytes], start: int, length: int) -> tuple[int, int, str]:
    handle.seek(start)
    data = handle.read(length)
    return start, length, hashlib.sha256(data).hexdigest() if len(data) == length else ""


def identity_problem(ledger: Path, identity: Identity) -> str | None:
    """Why ``identity`` does not describe this ledger's prefix, or None when it does."""
    try:
        size = ledger.stat().st_size
    except OSError:
        return "no ledger"
    if size < identity.offset:
        return "the ledger is shorter than the checkpoint says (truncated or replaced)"
    expected = [(start, length) for start, length, _ in identity.digests]
    if expected != _ranges(identity.offset):
        return "the checkpoint's identity is malformed"
    current = ledger_identity(ledger, identity.offset, identity.lines)
    if current is None:
        return "the ledger cannot be read"
    if identity.offset and not _ends_a_line(ledger, identity.offset):
        return "the ledger differs from the one the checkpoint was made of (no line ends there)"
    if current.digests != identity.digests:
        return "the ledger differs from the one the checkpoint was made of"
    return None


def _ends_a_line(ledger: Path, offset: int) -> bool:
    with ledger.open("rb") as handle:
        handle.seek(offset - 1)
        return handle.read(1) == b"\n"


# -- writing --------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """A state ready to be written: the header and the pieces of the file after it."""

    header: bytes
    pieces: list[bytes | memoryview]
    offset: int
    lines: int

    @property
    def size(self) -> int:
        return sum(len(piece) for piece in self.pieces) + len(self.header)


def _columns(state: LedgerState) -> list[tuple[str, bytearray | array[int]]]:
    table, assets = state.table, state.assets
    return [
        ("ids", table.ids.blob),
        ("id_ends", table.ids.ends),
        ("id_slots", table.ids.slots),
        ("id_tags", table.ids.tags),
        ("status", table.status),
        ("flags", table.flags),
        ("keys", table.keys),
        ("uuids", table.uuids),
        ("output_count", table.output_count),
        ("output_ext", table.output_ext),
        ("attempts", table.attempts),
        ("credits", table.credits),
        ("updated", table.updated),
        ("asset_digests", assets.digests.blob),
        ("asset_digest_ends", assets.digests.ends),
        ("asset_slots", assets.digests.slots),
        ("asset_tags", assets.digests.tags),
        ("asset_paths", assets.paths),
        ("asset_path_ends", assets.path_ends),
    ]


def snapshot(state: LedgerState, ledger: Path, *, copy: bool) -> Snapshot | None:
    """The state as checkpoint pieces. ``copy``: the columns are copied (a run goes on
    changing them while a thread writes); else they are views, to be written at once.
    None when the ledger cannot be read (then there is nothing to check a checkpoint with)."""
    if not state.table.keeps_uuids:
        raise ValueError("a fold kept without record uuids is not a checkpoint")
    identity = ledger_identity(ledger, state.offset, state.lines)
    if identity is None:
        return None
    table, assets = state.table, state.assets
    extras = Extras(
        credits=state.credits_folded,
        possibly_charged=state.possibly_charged_folded,
        job_extras=state.extras,  # encoded here, on the caller's thread: a copy as of now
        corrupt_lines=list(state.damage.corrupt_lines),
        key_text=dict(table.key_text),
        uuid_text=dict(table.uuid_text),
        outputs_text=dict(table.outputs_text),
        big=[(name, number, value) for (name, number), value in table.big.items()],
        updated_text=dict(table.updated_text),
        errors=dict(table.errors),
        pending=dict(table.pending),
        asset_replaced=dict(assets.replaced),
        asset_forgotten=sorted(assets.forgotten),
        asset_text=dict(assets.text),
    )
    extras_bytes = _encoder.encode(extras)
    sections: list[tuple[str, str, int]] = []
    pieces: list[bytes | memoryview] = []
    for name, column in _columns(state):
        typecode = column.typecode if isinstance(column, array) else ""
        data = bytes(column) if copy else memoryview(column).cast("B")
        sections.append((name, typecode, len(data)))
        pieces.append(data)
    pieces.append(extras_bytes)
    header = Header(
        FORMAT_VERSION,
        sys.byteorder,
        identity,
        len(table),
        len(assets.digests),
        sections,
        len(extras_bytes),
        [status.value for status in STATUSES],
    )
    return Snapshot(_encoder.encode(header), pieces, state.offset, state.lines)


def write_snapshot(snap: Snapshot, ledger: Path) -> Path:
    """Write the checkpoint whole (``durability.atomic_file``: temporary file, fsync, rename,
    fsync of the folder).

    The temporary has one fixed name, a killed run's removed first: it is replaced, not hunted
    for (OUT holds a folder per job: a listing of a million names would cost more memory than
    the checkpoint saves). Two writers at once (outside the run's lock) cannot both create it:
    the second fails, and the CRC would refuse interleaved bytes anyway."""
    path = checkpoint_path(ledger)
    temp_name = f".{path.name}.tmp"
    path.with_name(temp_name).unlink(missing_ok=True)
    with atomic_file(path, sync=True, temp_name=temp_name) as handle:
        crc = 0
        for piece in (MAGIC, _LENGTH.pack(len(snap.header)), snap.header, *snap.pieces):
            handle.write(piece)
            crc = zlib.crc32(piece, crc)
        handle.write(_LENGTH.pack(crc))
    return path


def write_checkpoint(state: LedgerState, ledger: Path) -> Path | None:
    """Write ``state``'s checkpoint now (no copy: nothing may change it meanwhile)."""
    snap = snapshot(state, ledger, copy=False)
    if snap is None:
        return None
    try:
        return write_snapshot(snap, ledger)
    finally:
        for piece in snap.pieces:
            if isinstance(piece, memoryview):
                piece.release()  # the columns may grow again


# -- reading --------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """A checkpoint read back: the state it holds, or why it was not used."""

    state: LedgerState | None
    note: str  # "none", "used", or why it was ignored


class _Corrupt(Exception):
    pass


def load_checkpoint(ledger: Path) -> Loaded:
    """The state in the ledger's checkpoint, if it is whole and describes this ledger."""
    path = checkpoint_path(ledger)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return Loaded(None, "none")
    except OSError as exc:
        return Loaded(None, f"ignored: cannot read it ({exc.strerror})")
    try:
        with handle:
            return _load(handle, ledger)
    except _Corrupt as exc:
        return Loaded(None, f"ignored: {exc}")
    except (OSError, ValueError, MemoryError, msgspec.DecodeError) as exc:
        return Loaded(None, f"ignored: unreadable ({type(exc).__name__})")


def _load(handle: io.BufferedReader, ledger: Path) -> Loaded:
    reader = _CrcReader(handle)
    if handle.read(len(MAGIC)) != MAGIC:
        raise _Corrupt("not a checkpoint of this format")
    reader.crc = zlib.crc32(MAGIC)
    (length,) = _LENGTH.unpack(reader.read(_LENGTH.size))
    header = _header_decoder.decode(reader.read(length))
    if header.version != FORMAT_VERSION or header.byteorder != sys.byteorder:
        raise _Corrupt(f"format {header.version} ({header.byteorder}-endian), not ours")
    if header.statuses != [status.value for status in STATUSES]:
        raise _Corrupt("its statuses are another version's")
    problem = identity_problem(ledger, header.identity)
    if problem is not None:
        return Loaded(None, f"ignored: {problem}")
    later = _LaterFile(handle)
    columns: dict[str, Any] = {}
    for name, typecode, size in header.sections:
        if name in LATER_COLUMNS:
            columns[name] = later.column(typecode, size, reader)
        else:
            columns[name] = reader.column(typecode, size)
    extras = _extras_decoder.decode(reader.read(header.extras))
    crc = reader.crc
    stored = handle.read(_LENGTH.size + 1)
    if len(stored) != _LENGTH.size or _LENGTH.unpack(stored)[0] != crc:
        raise _Corrupt("its checksum does not match (torn or damaged)")
    state = _state(header, columns, extras)
    state.checkpoint_offset = header.identity.offset
    state.checkpoint_lines = header.identity.lines
    return Loaded(state, "used")


class _CrcReader:
    """Reads exact lengths, straight into the columns, keeping the CRC of all it read."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self.handle = handle
        self.crc = 0

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise _Corrupt("it is shorter than its header says (torn)")
        self.crc = zlib.crc32(data, self.crc)
        return data

    def skip(self, size: int) -> int:
        """Read ``size`` bytes through a small buffer (the CRC covers them; nothing is kept);
        their own CRC-32."""
        buffer = memoryview(bytearray(min(size, COPY_BLOCK)))
        own = 0
        left = size
        while left:
            part = buffer[: min(left, len(buffer))]
            if self.handle.readinto(part) != len(part):
                raise _Corrupt("it is shorter than its header says (torn)")
            self.crc = zlib.crc32(part, self.crc)
            own = zlib.crc32(part, own)
            left -= len(part)
        return own

    def column(self, typecode: str, size: int) -> bytearray | array[int]:
        column = _empty_column(typecode, size)
        view = memoryview(column).cast("B")
        try:
            for start in range(0, size, COPY_BLOCK):
                part = view[start : start + COPY_BLOCK]
                if self.handle.readinto(part) != len(part):
                    raise _Corrupt("it is shorter than its header says (torn)")
                self.crc = zlib.crc32(part, self.crc)
        finally:
            view.release()
        return column


def _items(typecode: str, size: int) -> int:
    """How many items ``size`` bytes of a column of ``typecode`` hold ("": bytes)."""
    itemsize = array(typecode).itemsize if typecode else 1
    if size % itemsize:
        raise _Corrupt(f"a column of {typecode!r} has {size} bytes")
    return size // itemsize


def _empty_column(typecode: str, size: int) -> bytearray | array[int]:
    items = _items(typecode, size)
    if not typecode:
        return bytearray(items)
    return array(typecode, [0]) * items  # one allocation, no copy


class _LaterFile:
    """The checkpoint's columns read on first use (``compact.LATER_COLUMNS``), through a
    descriptor of their own: a checkpoint written meanwhile replaces the file's name, not the
    bytes this one holds. Closed when the last of them is read or dropped."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self.fd = os.dup(handle.fileno())
        weakref.finalize(self, os.close, self.fd)

    def column(self, typecode: str, size: int, reader: _CrcReader) -> Later:
        offset = reader.handle.tell()
        _items(typecode, size)  # a size no column of its type has is damage, found now
        crc = reader.skip(size)
        return Later(self, typecode, size, offset, crc)

    def read(self, column: bytearray | array[int], offset: int, crc: int) -> None:
        view = memoryview(column).cast("B")
        try:
            done = 0
            while done < len(view):
                got = os.preadv(self.fd, [view[done:]], offset + done)
                if got <= 0:
                    break
                done += got
            if done != len(view) or zlib.crc32(view) != crc:
                raise OSError(errno.EIO, "the ledger checkpoint changed while the run read it")
        finally:
            view.release()


@dataclass(frozen=True)
class Later:
    """One column of a checkpoint, read when called."""

    file: _LaterFile
    typecode: str
    size: int
    offset: int
    crc: int

    def __len__(self) -> int:
        return _items(self.typecode, self.size)

    def __call__(self) -> bytearray | array[int]:
        column = _empty_column(self.typecode, self.size)
        self.file.read(column, self.offset, self.crc)
        return column


def _state(header: Header, columns: dict[str, Any], extras: Extras) -> LedgerState:
    state = LedgerState()
    table, assets = state.table, state.assets
    _fill_index(table.ids, columns, "id", header.jobs)
    for name in ("status", "flags", "output_count", "output_ext", "attempts"):
        setattr(table, name, _sized(columns[name], header.jobs, name))
    table.keys = _sized(columns["keys"], header.jobs * 32, "keys")
    lengths = {"uuids": header.jobs * 16, "credits": header.jobs, "updated": header.jobs}
    for name, length in lengths.items():  # read on first use (``compact.LATER_COLUMNS``)
        table.read_later(name, _sized(columns[name], length, name))
    table.key_text, table.uuid_text = extras.key_text, extras.uuid_text
    table.outputs_text, table.updated_text = extras.outputs_text, extras.updated_text
    table.big = {(name, number): value for name, number, value in extras.big}
    table.errors, table.pending = extras.errors, extras.pending
    _fill_index(assets.digests, columns, "asset", header.assets)
    assets.paths = columns["asset_paths"]
    assets.path_ends = _sized(columns["asset_path_ends"], header.assets + 1, "asset_path_ends")
    if assets.path_ends[-1] != len(assets.paths):
        raise _Corrupt("the asset paths do not add up")
    assets.replaced, assets.forgotten = extras.asset_replaced, set(extras.asset_forgotten)
    assets.text = extras.asset_text
    identity = header.identity
    state.offset, state.lines = identity.offset, identity.lines
    state.credits_spent = extras.credits
    state.possibly_charged = extras.possibly_charged
    state.extras = dict(extras.job_extras)
    state.damage.corrupt_lines = list(extras.corrupt_lines)
    state.damage.lines = identity.lines
    return state


def _fill_index(index: ByteIndex, columns: dict[str, Any], prefix: str, count: int) -> None:
    blob = columns["ids" if prefix == "id" else "asset_digests"]
    ends = _sized(
        columns[f"{prefix}_ends" if prefix == "id" else "asset_digest_ends"], count + 1, prefix
    )
    slots, tags = columns[f"{prefix}_slots"], columns[f"{prefix}_tags"]
    size = len(tags)
    if (
        size < 16
        or size & (size - 1)
        or len(slots) != size
        or count >= size
        or ends[-1] != len(blob)
    ):
        raise _Corrupt(f"the {prefix} index does not add up")
    index.blob, index.ends, index.slots, index.tags = blob, ends, slots, tags
    index.bits = size.bit_length() - 1


def _sized(column: Any, length: int, name: str) -> Any:
    if len(column) != length:
        raise _Corrupt(f"the {name} column has {len(column)} entries, not {length}")
    return column
