"""The stat cache: what preflight learnt about each input file, kept between runs.

A nightly catalog of a million photos mostly did not change since last night. Like git's index
and rsync's quick check, a file whose device, inode, size, mtime and ctime are the ones
recorded when it was last read is taken as unchanged: its digest and facts come from here and
its bytes are not read at all. Anything else (a new file, new bytes, a file replaced by a
rename, a ``touch``) is read again, once (``preflight.reader``).

**Racily clean entries** (git's rule): a file modified in the same instant it was read could
change again without its recorded times moving (timestamps are coarse: a second on some file
systems, a kernel tick on others). An entry whose file was modified within
``RACY_WINDOW_NS`` before the read is therefore not trusted: the file is read again next time,
and that later read, well after the change, is trusted.

**Where and how**: ``inputs.sqlite`` in the state folder (the folder of ``ledger.jsonl``),
SQLite from the standard library in WAL mode (a ``validate`` may read it while a run writes),
one transaction per ``BATCH`` new entries. The schema (``user_version`` ``SCHEMA_VERSION``,
``application_id`` ``APPLICATION_ID``)::

    files(path BLOB PRIMARY KEY,            -- the real path, as the OS spells it (bytes)
          dev, ino, size, mtime_ns, ctime_ns INTEGER,   -- the signature
          checked_ns INTEGER,               -- wall clock just before the read (racy rule)
          digest BLOB,                      -- sha256 of the bytes (32 bytes)
          image BLOB, mask BLOB)            -- what preflight found, as an image and as a mask
                                            -- (encoded by the reader; NULL: not looked at)
    WITHOUT ROWID

A lookup is one prepared ``SELECT`` on the primary key (a few microseconds at a million rows).
The cache is only ever an optimisation: a file that is not a database of ours, or that breaks
while in use, is removed and rebuilt; a folder where it cannot be written leaves the run
without it (everything read, as before), said once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

CACHE_NAME = "inputs.sqlite"
APPLICATION_ID = 0x314D5053  # "1MPS": this file is a onemin-pipeline stat cache
SCHEMA_VERSION = 1
RACY_WINDOW_NS = 1_000_000_000  # a file modified this close to its read is read again next time
BATCH = 1000  # new entries written per transaction
# Entries read ahead in path order, one query for many lookups: a catalog mostly lists its files
# in that order. A pass whose lookups do not follow it (fewer than 1 in AHEAD_USEFUL of a read
# ahead used) goes back to one query a lookup.
AHEAD = 512
AHEAD_USEFUL = 16
BUSY_TIMEOUT_MS = 2000  # another process writes (a run beside a validate): wait, then skip
CLOCK: Callable[[], int] = time.time_ns  # the wall clock entries are stamped with (tests move it)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    checked_ns INTEGER NOT NULL,
    digest BLOB NOT NULL,
    image BLOB,
    mask BLOB
) WITHOUT ROWID
"""
_COLUMNS = "dev, ino, size, mtime_ns, ctime_ns, checked_ns, digest, image, mask"
_LOOKUP = f"SELECT {_COLUMNS} FROM files WHERE path = ?"
_AHEAD = f"SELECT path, {_COLUMNS} FROM files WHERE path >= ? ORDER BY path LIMIT ?"
_REMEMBER = "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_PAST_ALL_KEYS = b"\xff" * 4096  # sorts after every path (a path is at most 4,096 bytes)
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class _Foreign(Exception):
    """The file is a database, but not a stat cache of this version."""


class Signature(NamedTuple):
    """What says a file is the one read before: where it is and when it last changed (a
    tuple: compared and made a million times a night)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> Signature:
        # tuple.__new__: a NamedTuple's own __new__ is a Python function (a lambda); this is C.
        fields = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        return tuple.__new__(cls, fields)

    def racy(self, checked_ns: int) -> bool:
        """Modified so close to ``checked_ns`` (the read) that a later change may not show."""
        return max(self.mtime_ns, self.ctime_ns) + RACY_WINDOW_NS > checked_ns


class Entry(NamedTuple):
    """One file as it was read: its signature, when, its digest and what preflight found
    (``image`` and ``mask`` encoded by ``preflight.reader``; None: not looked at as that)."""

    signature: Signature
    checked_ns: int
    digest: bytes
    image: bytes | None = None
    mask: bytes | None = None


class StatCache:
    """The cache of one state folder (``open``), or a cache that keeps nothing (``StatCache()``).

    Single-threaded, like preflight. ``rehash`` starts a new database (lookups find nothing; the
    pass writes fresh entries), which also drops the entries of files no longer in the catalog.
    """

    def __init__(
        self,
        connection: sqlite3.Connection | None = None,
        path: Path | None = None,
        clock: Callable[[], int] | None = None,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._connection = connection
        self.path = path
        self._clock = clock if clock is not None else CLOCK
        self._warn = warn
        self._pending: list[tuple[object, ...]] = []
        self._cursor = connection.cursor() if connection is not None else None
        # Lookups share one read transaction (a snapshot: cheaper than one per lookup; in WAL
        # mode it blocks no writer), ended before each batch is written.
        self._reading = False
        self._ahead: dict[bytes, tuple[Any, ...]] = {}  # rows read ahead, by path
        self._ahead_first = self._ahead_last = b""  # the range of paths they cover
        self._ahead_used = 0
        self._ahead_on = True
        self.hits = 0  # files known and unchanged: not read

    @classmethod
    def open(
        cls,
        folder: Path,
        rehash: bool = False,
        clock: Callable[[], int] | None = None,
        warn: Callable[[str], None] = lambda message: None,
    ) -> StatCache:
        """The cache in ``folder`` (created if need be); never raises: a folder or file that
        cannot serve gives a cache that keeps nothing, and ``warn`` is told why, once."""
        path = folder / CACHE_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if rehash:  # a new file: cheaper than deleting a million rows, and compact
                _remove_database(path)
            connection = _connect(path)
        except (OSError, sqlite3.Error) as exc:
            reason = _reason(exc)
            warn(f"cannot keep the input cache in {folder} ({reason}): inputs are read in full")
            return cls(clock=clock)
        return cls(connection, path, clock, warn)

    @property
    def kept(self) -> bool:
        """Whether entries are kept (a real, working database)."""
        return self._connection is not None

    def now(self) -> int:
        """The wall clock, read just before a file is (``Entry.checked_ns``)."""
        return self._clock()

    def lookup(self, real: str, signature: Signature) -> Entry | None:
        """The entry of ``real`` if the file is unchanged since and was not racily clean."""
        row = self.unchanged(real, signature)
        if row is None:
            return None
        return tuple.__new__(Entry, (signature, row[5], row[6], row[7], row[8]))

    def unchanged(self, real: str, signature: tuple[int, ...]) -> tuple[Any, ...] | None:
        """``lookup``'s answer as the stored row (``dev, ino, size, mtime_ns, ctime_ns,
        checked_ns, digest, image, mask``), no Entry made: a night's fast path asks this a
        million times. ``signature`` as ``Signature`` (a plain tuple will do)."""
        if self._cursor is None:
            return None
        try:
            if not self._reading:
                self._begin_reading()
            key = real.encode(_FS_ENCODING, _FS_ERRORS)  # os.fsencode, inlined
            row = self._ahead.get(key)  # ``_row``'s usual answer, inlined
            if row is None:
                row = self._row(key)
            else:
                self._ahead_used += 1
        except sqlite3.Error as exc:
            self._broken(exc)
            return None
        if row is None or row[:5] != signature:
            return None
        # The racy rule (``Signature.racy``), inlined.
        if max(signature[3], signature[4]) + RACY_WINDOW_NS > row[5]:
            return None
        self.hits += 1
        return row

    def _begin_reading(self) -> None:
        assert self._connection is not None
        self._connection.execute("BEGIN")
        self._reading = True

    def _row(self, key: bytes) -> tuple[Any, ...] | None:
        """The stored row of ``key``: from the rows read ahead, or read ahead from it, or
        alone (a key before the rows read ahead, or a pass out of path order)."""
        ahead = self._ahead
        if ahead:
            row = ahead.get(key)
            if row is not None:
                self._ahead_used += 1
                return row
            if self._ahead_first <= key <= self._ahead_last:
                return None  # inside the range read ahead: not in the cache
        if self._ahead_on and (not ahead or key > self._ahead_last):
            if ahead and self._ahead_used * AHEAD_USEFUL < len(ahead):
                self._ahead_on = False  # lookups jump about: one query each from now on
            else:
                return self._read_ahead(key)
        assert self._cursor is not None
        found: tuple[Any, ...] | None = self._cursor.execute(_LOOKUP, (key,)).fetchone()
        return found

    def _read_ahead(self, key: bytes) -> tuple[Any, ...] | None:
        assert self._cursor is not None
        rows = self._cursor.execute(_AHEAD, (key, AHEAD)).fetchall()
        self._ahead = {row[0]: row[1:] for row in rows}
        self._ahead_used = 0
        if not rows:
            self._ahead_first = self._ahead_last = key
            return None
        self._ahead_first, self._ahead_last = key, rows[-1][0]
        if len(rows) < AHEAD:
            self._ahead_last = _PAST_ALL_KEYS  # the end of the table: nothing after it either
        row = self._ahead.get(key)
        if row is not None:
            self._ahead_used += 1
        return row

    def remember(self, real: str, entry: Entry) -> None:
        """Keep ``entry`` for ``real`` (written with the next batch, or at ``close``)."""
        if self._connection is None:
            return
        signature = entry.signature
        self._pending.append(
            (
                os.fsencode(real),
                signature.dev,
                signature.ino,
                signature.size,
                signature.mtime_ns,
                signature.ctime_ns,
                entry.checked_ns,
                entry.digest,
                entry.image,
                entry.mask,
            )
        )
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the pending entries in one transaction."""
        if self._connection is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            self._end_reading()
            with _transaction(self._connection):
                self._connection.executemany(_REMEMBER, pending)
        except sqlite3.Error as exc:
            if _code(exc) in _BUSY_CODES:
                return  # another process holds the write lock: these are read again next time
            self._broken(exc)

    def close(self) -> None:
        """Write what is pending and let the database go."""
        self.flush()
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._end_reading()
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _end_reading(self) -> None:
        """End the read snapshot (the rows read ahead with it: the next write may change them)."""
        self._ahead = {}
        if self._reading and self._connection is not None:
            self._reading = False
            self._connection.execute("COMMIT")

    def _broken(self, exc: sqlite3.Error) -> None:
        """The database failed in use: this run goes on without it; a new one is started for
        the next run (a cache that lies would be worse than none)."""
        assert self._connection is not None and self.path is not None
        with contextlib.suppress(sqlite3.Error):
            self._connection.close()
        self._connection, self._cursor, self._pending = None, None, []
        self._reading = False
        _remove_database(self.path)
        self._warn(f"the input cache {self.path} failed ({_reason(exc)}); it is rebuilt next time")


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to a database of ours at ``path``: a foreign or damaged file is replaced."""
    try:
        return _open_ours(path)
    except (sqlite3.DatabaseError, _Foreign) as exc:
        # Busy, unreadable, read-only: the file may be good, so it is left alone.
        if isinstance(exc, sqlite3.Error) and _code(exc) not in _DAMAGE_CODES:
            raise
        _remove_database(path)  # not a database, damaged, another program's or version
    try:
        return _open_ours(path)
    except _Foreign as exc:  # removed, yet not ours: someone writes it beside us
        raise sqlite3.DatabaseError(str(exc)) from exc


def _open_ours(path: Path) -> sqlite3.Connection:
    # Autocommit (isolation_level None): transactions are opened by hand, one per batch.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        fresh = application_id == 0 and version == 0 and not _has_tables(connection)
        if not fresh and (application_id, version) != (APPLICATION_ID, SCHEMA_VERSION):
            raise _Foreign("not a stat cache of this version")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")  # a lost batch is only read again
        if fresh:
            with _transaction(connection):
                connection.execute(_SCHEMA)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute(_LOOKUP, (b"",)).fetchone()  # the table is there and readable
    except BaseException:
        connection.close()
        raise
    return connection


def _has_tables(connection: sqlite3.Connection) -> bool:
    return connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def _code(exc: sqlite3.Error) -> int | None:
    # SQLite's primary result code (the low byte of an extended one), when SQLite raised it.
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None
