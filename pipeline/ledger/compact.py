"""The resume's fold in flat columns: under 100 bytes a done job instead of about 700.

A nightly resume of a million-job folder holds every job's state. As Python objects (a str id,
a 64-character key, a uuid, a timestamp and a tuple of output paths per job, in a dict) that is
about 700 bytes a job; here it is a few flat arrays, one entry per job, numbered in order of
first appearance:

- ids: one ``bytearray`` of UTF-8 ids back to back, their end offsets, and an open-addressing
  table (a CRC-32 of the id, spread; linear probing) from id to number (``ByteIndex``);
- a content key (sha256 hex) as its 32 bytes, a record uuid as its 16 bytes, the status and a
  few small numbers as one or four bytes, the latest line's time as milliseconds;
- outputs as a count and an extension code when they follow the store's rule
  (``<id>/<index>.<ext>``), which nearly all do.

Anything that does not fit its column (a key that is not sha256 hex, an odd uuid, outputs named
otherwise, a large number, a stamp without a zone) is kept exactly, in a small dict beside it:
the encoding is a compression, never an approximation (a stamp comes back as the same moment,
in the ledger's own form). Failed jobs' errors and paid results not yet stored are few and are
kept as their objects.

``JobRef`` is a job's view over the columns, with the attributes of ``fold.JobState``, so the
one fold (``pipeline.ledger.fold``) writes through it unchanged, and the plan, the scheduler,
``status`` and the report read it. A ``JobRef`` is made on demand and costs nothing once dropped.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.models import ErrorInfo, Status

if TYPE_CHECKING:
    from pipeline.images.checks import ImageChecks
    from pipeline.ledger.fold import JobState
    from pipeline.ledger.schema import JobDetails, Submitted

KEY_BYTES = 32  # a content key is the hex of a sha256
LATER_COLUMNS = frozenset({"uuids", "credits", "updated"})  # ``JobTable.read_later``
UUID_BYTES = 16
MIN_SLOTS = 16
FIBONACCI = 0x9E3779B1  # 2**32 / golden ratio: spreads CRC-32's structured low bits
WORD = 0xFFFFFFFF
# The id table grows when it is two thirds full: linear probing stays short below that.
LOAD_NUMERATOR, LOAD_DENOMINATOR = 2, 3
NO_SMALL = 0xFF  # "None" in a one-byte column; values from here up go to the overflow dict
NO_WORD = 0xFFFFFFFF  # "None" in a four-byte column
WIDE_OFFSETS = 0xFFFFFFFF  # id bytes beyond this switch the offsets from 4 to 8 bytes
MINUTE_CACHE_LIMIT = 100_000

STATUSES: tuple[Status, ...] = tuple(Status)
STATUS_CODE = {status: code for code, status in enumerate(STATUSES)}
# Output extensions a result can have (and a few more); code 0 is "no outputs".
EXTENSIONS = ("", "png", "jpg", "jpeg", "webp", "gif", "avif", "tif", "tiff", "bmp")
EXTENSION_CODE = {ext: code for code, ext in enumerate(EXTENSIONS)}

# The flag byte of a job.
KEY_FORM = 0b11  # 0: empty, 1: 32 bytes in the column, 2: text in the overflow dict
UUID_FORM = 0b1100  # 0: empty, 4: canonical dashed uuid, 8: 32 hex digits, 12: text
RESULT_GONE = 0b10000
OUTPUTS_TEXT = 0b100000
KEY_EMPTY, KEY_HEX, KEY_TEXT = 0, 1, 2
UUID_EMPTY, UUID_DASHED, UUID_HEX, UUID_TEXT = 0, 4, 8, 12


class ByteIndex:
    """An append-only set of byte strings, numbered densely in the order they were added.

    The strings sit back to back in one ``bytearray`` (``blob``), ``ends[i]..ends[i + 1]``
    being string ``i``. ``slots`` is an open-addressing table (linear probing) of
    ``number + 1``, placed by a hash that is stable across processes (CRC-32, spread by a
    Fibonacci multiply), so that a checkpoint stores it as it is; ``tags`` holds a byte of the
    same hash per slot (0: empty), so a probe compares a string only when its tag matches. A
    lookup first tries the string found last and the one after it: the lines of one job, and a
    manifest read in ledger order (the usual cases), then cost a comparison instead of a probe.
    """

    __slots__ = ("bits", "blob", "ends", "hint", "slots", "tags")

    def __init__(self, capacity: int = 0) -> None:
        self.blob = bytearray()
        self.ends = array("I", [0])
        self.hint = 0
        self._empty_table(table_size(capacity))

    def _empty_table(self, size: int) -> None:
        self.slots = array("I", [0]) * size
        self.tags = bytearray(size)
        self.bits = size.bit_length() - 1

    def __len__(self) -> int:
        return len(self.ends) - 1

    def raw(self, number: int) -> bytes:
        ends = self.ends
        return bytes(self.blob[ends[number] : ends[number + 1]])

    def find(self, raw: bytes) -> int:
        """The number of ``raw``, or -1."""
        ends, blob = self.ends, self.blob
        last = self.hint - 1
        if last >= 0:
            if blob[ends[last] : ends[last + 1]] == raw:
                return last
            if last + 2 < len(ends) and blob[ends[last + 1] : ends[last + 2]] == raw:
                self.hint = last + 2
                return last + 1
        mixed = (zlib.crc32(raw) * FIBONACCI) & WORD
        slot, tag = mixed >> (32 - self.bits), (mixed & 0xFF) or 1
        tags = self.tags
        mask = len(tags) - 1
        while True:
            found = tags[slot]
            if not found:
                return -1
            if found == tag:
                number = self.slots[slot] - 1
                if blob[ends[number] : ends[number + 1]] == raw:
                    self.hint = number + 1
                    return number
            slot = (slot + 1) & mask

    def add(self, raw: bytes) -> int:
        """Append ``raw`` (the caller knows it is absent) and return its number."""
        number = len(self.ends) - 1
        self.blob += raw
        end = len(self.blob)
        if end > WIDE_OFFSETS and self.ends.typecode == "I":
            self.ends = array("Q", self.ends)
        self.ends.append(end)
        if (number + 1) * LOAD_DENOMINATOR > len(self.tags) * LOAD_NUMERATOR:
            self._rebuild(table_size(number + 1))
        else:
            self._place(number, zlib.crc32(raw))
        self.hint = number + 1
        return number

    def _place(self, number: int, crc: int) -> None:
        mixed = (crc * FIBONACCI) & WORD
        slot, tag = mixed >> (32 - self.bits), (mixed & 0xFF) or 1
        tags, mask = self.tags, len(self.tags) - 1
        while tags[slot]:
            slot = (slot + 1) & mask
        tags[slot] = tag
        self.slots[slot] = number + 1

    def _rebuild(self, size: int) -> None:
        self._empty_table(size)
        blob, ends, crc = self.blob, self.ends, zlib.crc32
        for number in range(len(ends) - 1):
            self._place(number, crc(blob[ends[number] : ends[number + 1]]))


def as_bytes(text: str) -> bytes:
    """UTF-8, lone surrogates included: a hand-edited ledger may hold any JSON string."""
    return text.encode("utf-8", "surrogatepass")


def as_text(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", "surrogatepass")


def table_size(count: int) -> int:
    """The power of two that keeps ``count`` entries under the load limit."""
    size = MIN_SLOTS
    while count * LOAD_DENOMINATOR > size * LOAD_NUMERATOR:
        size *= 2
    return size


# -- times ---------------------------------------------------------------------------------------

_minutes: dict[str, int] = {}
_last_second: tuple[str, int] = ("", 0)  # the latest stamp's second: lines come in bursts


def updated_millis(ts: str) -> int:
    """A line's time as milliseconds since the epoch; 0 when it is no time at all.

    The ledger's own stamps (``YYYY-MM-DDTHH:MM:SS.mmmZ``, milliseconds, as ``schema.utc_now``
    writes them) take a cached second or minute and a few slices; others with a zone are
    parsed in full. A stamp without a zone, or finer than milliseconds, is 0 (kept as text).
    """
    global _last_second
    if not ts:
        return 0
    if len(ts) == 24 and ts[16] == ":" and ts[19] == "." and ts[23] == "Z" and ts[20:23].isdigit():
        second, whole = _last_second
        if ts[:19] != second:
            minute = _minutes.get(ts[:16])
            if minute is None:
                minute = _parse_minute(ts[:16])
            if minute is None or not ts[17:19].isdigit():
                return _parse_slowly(ts)
            whole = (minute + int(ts[17:19])) * 1000
            _last_second = (ts[:19], whole)
        return whole + int(ts[20:23])
    return _parse_slowly(ts)


def _parse_minute(prefix: str) -> int | None:
    try:
        moment = datetime.fromisoformat(prefix + ":00+00:00")
    except ValueError:
        return None
    if len(_minutes) > MINUTE_CACHE_LIMIT:
        _minutes.clear()
    _minutes[prefix] = seconds = int(moment.timestamp())
    return seconds


def _parse_slowly(ts: str) -> int:
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return 0
    if moment.tzinfo is None:
        return 0  # no zone: kept as written (a comparison with it cannot be decided either)
    millis = int(moment.timestamp()) * 1000 + moment.microsecond // 1000
    return millis if millis > 0 and moment.microsecond % 1000 == 0 else 0


_last_text: tuple[int, str] = (-1, "")  # the latest second formatted: rows come in runs


def millis_text(millis: int) -> str:
    """``updated_millis`` back to the ledger's form (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
    global _last_text
    if not millis:
        return ""
    whole, rest = divmod(millis, 1000)
    second, text = _last_text
    if whole != second:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_text = (whole, text)
    return f"{text}.{rest:03d}Z"


# -- the columns ----------------------------------------------------------------------------------


class JobTable:
    """Every job's fold state in columns (see the module docstring); ``JobRef`` reads them."""

    def __init__(self, *, uuids: bool = True) -> None:
        self.ids = ByteIndex()
        self.status = bytearray()
        self.flags = bytearray()
        self.keys = bytearray()  # KEY_BYTES a job
        self._uuids: bytearray | None = bytearray()  # UUID_BYTES a job
        # False: no record uuid is kept (every ``uuid`` reads ""), for a reader that shows none
        # (the report: 16 bytes a job). Such a table is never written as a checkpoint.
        self.keeps_uuids = uuids
        self.output_count = bytearray()
        self.output_ext = bytearray()
        self.attempts = bytearray()  # NO_SMALL: None
        self._credits: array[int] | None = array("I")  # NO_WORD: None
        self._updated: array[int] | None = array("q")  # updated_millis of the latest line
        # Columns a checkpoint holds that are read on their first use (``read_later``).
        self._later: dict[str, Callable[[], Any]] = {}
        # What does not fit a column, by job number (see the module docstring).
        self.key_text: dict[int, str] = {}
        self.uuid_text: dict[int, str] = {}
        self.outputs_text: dict[int, tuple[str, ...]] = {}
        self.big: dict[tuple[str, int], int] = {}  # ("attempts" | "credits", number) -> value
        self.updated_text: dict[int, str] = {}  # a stamp that is no time at all, as written
        self.errors: dict[int, ErrorInfo] = {}
        self.pending: dict[int, Submitted] = {}  # a paid result not stored yet
        self._last_stamp: tuple[str, int] = ("", 0)

    def __len__(self) -> int:
        return len(self.status)

    # -- columns read on first use --------------------------------------------------------------
    # A job's uuid, its latest time and its credits: a nightly no-op or a resume does not read
    # them while it plans (about 28 bytes a job held for nothing), so a checkpoint's are read
    # when first asked for (``pipeline.ledger.checkpoint``).

    def read_later(self, name: str, load: Callable[[], Any]) -> None:
        """Column ``name`` (``uuids``, ``credits``, ``updated``) comes from ``load()`` when
        first used."""
        if name not in LATER_COLUMNS:
            raise ValueError(f"{name} is read at once")
        setattr(self, f"_{name}", None)
        self._later[name] = load

    def _loaded(self, name: str) -> Any:
        value = self._later.pop(name)()
        setattr(self, f"_{name}", value)
        return value

    @property
    def uuids(self) -> bytearray:
        column = self._uuids
        return column if column is not None else self._loaded("uuids")

    @uuids.setter
    def uuids(self, value: bytearray) -> None:
        self._later.pop("uuids", None)
        self._uuids = value

    @property
    def credits(self) -> array[int]:
        column = self._credits
        return column if column is not None else self._loaded("credits")

    @credits.setter
    def credits(self, value: array[int]) -> None:
        self._later.pop("credits", None)
        self._credits = value

    @property
    def updated(self) -> array[int]:
        column = self._updated
        return column if column is not None else self._loaded("updated")

    @updated.setter
    def updated(self, value: array[int]) -> None:
        self._later.pop("updated", None)
        self._updated = value

    def find(self, job_id: str) -> int:
        return self.ids.find(as_bytes(job_id))

    def add(self, job_id: str, status: Status) -> int:
        number = self.ids.add(as_bytes(job_id))
        self.status.append(STATUS_CODE[status])
        self.flags.append(0)
        self.keys += bytes(KEY_BYTES)
        if self.keeps_uuids:
            self.uuids += bytes(UUID_BYTES)
        self.output_count.append(0)
        self.output_ext.append(0)
        self.attempts.append(NO_SMALL)
        self.credits.append(NO_WORD)
        self.updated.append(0)
        return number

    def job_id(self, number: int) -> str:
        return as_text(self.ids.raw(number))

    # -- content key --------------------------------------------------------------------------

    def key(self, number: int) -> str:
        form = self.flags[number] & KEY_FORM
        if form == KEY_HEX:
            start = number * KEY_BYTES
            return self.keys[start : start + KEY_BYTES].hex()
        return self.key_text[number] if form == KEY_TEXT else ""

    def has_key(self, number: int, key: str) -> bool:
        form = self.flags[number] & KEY_FORM
        if form == KEY_HEX:
            start = number * KEY_BYTES
            return self.keys[start : start + KEY_BYTES].hex() == key
        if form == KEY_TEXT:
            return self.key_text[number] == key
        return key == ""

    def set_key(self, number: int, key: str) -> None:
        flags = self.flags[number] & ~KEY_FORM
        if self.key_text:
            self.key_text.pop(number, None)
        raw = _hex32(key) if key else None
        if raw is not None:
            start = number * KEY_BYTES
            self.keys[start : start + KEY_BYTES] = raw
            flags |= KEY_HEX
        elif key:
            self.key_text[number] = key
            flags |= KEY_TEXT
        self.flags[number] = flags

    # -- record uuid --------------------------------------------------------------------------

    def uuid(self, number: int) -> str:
        form = self.flags[number] & UUID_FORM
        if form == UUID_EMPTY:
            return ""
        if form == UUID_TEXT:
            return self.uuid_text[number]
        start = number * UUID_BYTES
        digits = self.uuids[start : start + UUID_BYTES].hex()
        if form == UUID_HEX:
            return digits
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

    def set_uuid(self, number: int, value: str) -> None:
        if not self.keeps_uuids:
            return
        flags = self.flags[number] & ~UUID_FORM
        if self.uuid_text:
            self.uuid_text.pop(number, None)
        form, raw = _uuid_form(value)
        if raw is not None:
            start = number * UUID_BYTES
            self.uuids[start : start + UUID_BYTES] = raw
        elif form == UUID_TEXT:
            self.uuid_text[number] = value
        self.flags[number] = flags | form

    # -- outputs ------------------------------------------------------------------------------

    def outputs(self, number: int) -> tuple[str, ...]:
        if self.flags[number] & OUTPUTS_TEXT:
            return self.outputs_text[number]
        count = self.output_count[number]
        if not count:
            return ()
        prefix, ext = self.job_id(number), EXTENSIONS[self.output_ext[number]]
        return tuple(f"{prefix}/{index}.{ext}" for index in range(count))

    def only_output(self, number: int) -> str | None:
        """The output of a job of one output named by the store's rule (``outputs()``'s one
        item, without the tuple: the refetch scan asks it of every done job every run); None
        for any other job."""
        if self.output_count[number] != 1 or self.flags[number] & OUTPUTS_TEXT:
            return None
        return f"{self.job_id(number)}/0.{EXTENSIONS[self.output_ext[number]]}"

    def output_total(self, number: int) -> int:
        if self.flags[number] & OUTPUTS_TEXT:
            return len(self.outputs_text[number])
        return self.output_count[number]

    def set_outputs(self, number: int, outputs: tuple[str, ...]) -> None:
        if self.outputs_text:
            self.outputs_text.pop(number, None)
        flags = self.flags[number] & ~OUTPUTS_TEXT
        code = _derived(self.job_id(number), outputs) if outputs else 0
        if code is None:
            self.outputs_text[number] = tuple(outputs)
            flags |= OUTPUTS_TEXT
            self.output_count[number], self.output_ext[number] = 0, 0
        else:
            self.output_count[number], self.output_ext[number] = len(outputs), code
        self.flags[number] = flags

    # -- small numbers ------------------------------------------------------------------------

    def attempts_of(self, number: int) -> int | None:
        value = self.attempts[number]
        if value != NO_SMALL:
            return value
        return self.big.get(("attempts", number))

    def set_attempts(self, number: int, value: int | None) -> None:
        if self.big:
            self.big.pop(("attempts", number), None)
        if value is not None and 0 <= value < NO_SMALL:
            self.attempts[number] = value
            return
        self.attempts[number] = NO_SMALL
        if value is not None:
            self.big["attempts", number] = value

    def credits_of(self, number: int) -> int | None:
        value = self.credits[number]
        if value != NO_WORD:
            return value
        return self.big.get(("credits", number))

    def set_credits(self, number: int, value: int | None) -> None:
        if self.big:
            self.big.pop(("credits", number), None)
        if value is not None and 0 <= value < NO_WORD:
            self.credits[number] = value
            return
        self.credits[number] = NO_WORD
        if value is not None:
            self.big["credits", number] = value

    def updated_of(self, number: int) -> str:
        millis = self.updated[number]
        if millis:
            return millis_text(millis)
        return self.updated_text.get(number, "")

    def set_updated(self, number: int, ts: str) -> None:
        """The latest line's stamp, as milliseconds; one that is no moment to the millisecond
        (no zone, finer, no time at all) is kept as written, beside the column."""
        if ts == self._last_stamp[0]:
            millis = self._last_stamp[1]
        else:
            millis = updated_millis(ts)
            self._last_stamp = (ts, millis)
        if millis:  # the same moment: read back in the ledger's own form
            self.updated[number] = millis
            if self.updated_text:
                self.updated_text.pop(number, None)
            return
        self.updated[number] = 0
        if ts:
            self.updated_text[number] = ts
        else:
            self.updated_text.pop(number, None)

    def status_of(self, number: int) -> Status:
        return STATUSES[self.status[number]]

    def memory(self) -> int:
        """Bytes held by the columns and the id table (the dicts beside them not counted)."""
        ids = self.ids
        columns = (ids.blob, ids.ends, ids.slots, self.status, self.flags, self.keys, self.uuids)
        more = (self.output_count, self.output_ext, self.attempts, self.credits, self.updated)
        # (this reads the columns read on first use: ``memory`` is for measurements)
        return sum(len(column) * _itemsize(column) for column in (*columns, *more))


def _itemsize(column: bytearray | array[int]) -> int:
    return column.itemsize if isinstance(column, array) else 1


def _hex32(key: str) -> bytes | None:
    """A sha256 hex key's 32 bytes, or None for any other key (kept as text)."""
    if len(key) != 2 * KEY_BYTES:
        return None
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        return None
    return raw if raw.hex() == key else None  # upper case: kept as written


_last_uuid: tuple[str, int, bytes | None] = ("", UUID_EMPTY, None)  # a record's lines come close


def _uuid_form(value: str) -> tuple[int, bytes | None]:
    global _last_uuid
    last, form, raw = _last_uuid
    if value == last:
        return form, raw
    form, raw = _parse_uuid(value)
    _last_uuid = (value, form, raw)
    return form, raw


def _parse_uuid(value: str) -> tuple[int, bytes | None]:
    if not value:
        return UUID_EMPTY, None
    if len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        raw = _hex16(value.replace("-", ""))
        if raw is not None:
            return UUID_DASHED, raw
    elif len(value) == 2 * UUID_BYTES:
        raw = _hex16(value)
        if raw is not None:
            return UUID_HEX, raw
    return UUID_TEXT, None


def _hex16(digits: str) -> bytes | None:
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return raw if len(raw) == UUID_BYTES and raw.hex() == digits else None


def _derived(job_id: str, outputs: tuple[str, ...]) -> int | None:
    """The extension code when ``outputs`` are ``<id>/0.<ext>``, ``<id>/1.<ext>``...; or None."""
    ext = outputs[0].rpartition(".")[2]
    code = EXTENSION_CODE.get(ext)
    if not code or len(outputs) >= NO_SMALL:
        return None
    for index, output in enumerate(outputs):
        if output != f"{job_id}/{index}.{ext}":
            return None
    return code


# -- a job's view ---------------------------------------------------------------------------------


class JobRef:
    """One job of a ``JobTable``, with the attributes of ``fold.JobState`` (read and written)."""

    __slots__ = ("number", "table")

    details: JobDetails | None = None  # the detailed fold's only
    retries: None = None
    checks: tuple[ImageChecks, ...] = ()  # the detailed fold's only (export reads them there)

    def __init__(self, table: JobTable, number: int) -> None:
        self.table = table
        self.number = number

    def __repr__(self) -> str:
        return f"JobRef({self.job_id!r}, {self.status.value}, #{self.number})"

    @property
    def job_id(self) -> str:
        return self.table.job_id(self.number)

    @property
    def order(self) -> int:
        return self.number

    @property
    def status(self) -> Status:
        return STATUSES[self.table.status[self.number]]

    @status.setter
    def status(self, value: Status) -> None:
        self.table.status[self.number] = STATUS_CODE[value]

    @property
    def key(self) -> str:
        return self.table.key(self.number)

    @key.setter
    def key(self, value: str) -> None:
        self.table.set_key(self.number, value)

    def has_key(self, key: str) -> bool:
        return self.table.has_key(self.number, key)

    @property
    def submitted(self) -> Submitted | None:
        return self.table.pending.get(self.number)

    @submitted.setter
    def submitted(self, value: Submitted | None) -> None:
        if value is None:
            self.table.pending.pop(self.number, None)
        else:
            self.table.pending[self.number] = value

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.table.outputs(self.number)

    @outputs.setter
    def outputs(self, value: tuple[str, ...]) -> None:
        self.table.set_outputs(self.number, value)

    @property
    def error(self) -> ErrorInfo | None:
        return self.table.errors.get(self.number)

    @error.setter
    def error(self, value: ErrorInfo | None) -> None:
        if value is None:
            if self.table.errors:
                self.table.errors.pop(self.number, None)
        else:
            self.table.errors[self.number] = value

    @property
    def attempts(self) -> int | None:
        return self.table.attempts_of(self.number)

    @attempts.setter
    def attempts(self, value: int | None) -> None:
        self.table.set_attempts(self.number, value)

    @property
    def credits(self) -> int | None:
        return self.table.credits_of(self.number)

    @credits.setter
    def credits(self, value: int | None) -> None:
        self.table.set_credits(self.number, value)

    @property
    def uuid(self) -> str:
        return self.table.uuid(self.number)

    @uuid.setter
    def uuid(self, value: str) -> None:
        self.table.set_uuid(self.number, value)

    @property
    def updated(self) -> str:
        return self.table.updated_of(self.number)

    @updated.setter
    def updated(self, value: str) -> None:
        self.table.set_updated(self.number, value)

    @property
    def result_gone(self) -> bool:
        return bool(self.table.flags[self.number] & RESULT_GONE)

    @result_gone.setter
    def result_gone(self, value: bool) -> None:
        flags = self.table.flags[self.number]
        self.table.flags[self.number] = flags | RESULT_GONE if value else flags & ~RESULT_GONE


class JobsView(Mapping[str, JobRef]):
    """The table as a mapping of job id to ``JobRef``, in order of first appearance.

    ``jobs[id] = JobState(...)`` puts a job in (tests build small states that way)."""

    def __init__(self, table: JobTable) -> None:
        self.table = table

    def __getitem__(self, job_id: str) -> JobRef:
        number = self.table.find(job_id)
        if number < 0:
            raise KeyError(job_id)
        return JobRef(self.table, number)

    def get(self, job_id: str, default: Any = None) -> Any:
        number = self.table.find(job_id)
        return default if number < 0 else JobRef(self.table, number)

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.table.find(job_id) >= 0

    def __iter__(self) -> Iterator[str]:
        table = self.table
        return (table.job_id(number) for number in range(len(table)))

    def __len__(self) -> int:
        return len(self.table)

    def refs(self) -> Iterator[JobRef]:
        table = self.table
        return (JobRef(table, number) for number in range(len(table)))

    def __setitem__(self, job_id: str, state: JobState) -> None:
        number = self.table.find(job_id)
        if number < 0:
            number = self.table.add(job_id, state.status)
        job = JobRef(self.table, number)
        job.status, job.key, job.submitted = state.status, state.key, state.submitted
        job.outputs, job.error, job.attempts = state.outputs, state.error, state.attempts
        job.credits, job.uuid, job.updated = state.credits, state.uuid, state.updated
        job.result_gone = state.result_gone


class AssetTable(MutableMapping[str, str]):
    """Uploads by content digest (sha256 hex as 32 bytes) -> the API's path, compactly.

    A catalog of distinct photos uploads each once: a dict of two strings per upload would be
    about 250 bytes each. Digests that are not sha256 hex (tests) are kept in a plain dict."""

    def __init__(self) -> None:
        self.digests = ByteIndex()
        self.paths = bytearray()
        self.path_ends = array("I", [0])
        self.replaced: dict[int, str] = {}  # a digest uploaded again under another path
        self.forgotten: set[int] = set()
        self.text: dict[str, str] = {}

    def __getitem__(self, digest: str) -> str:
        raw = _hex32(digest)
        if raw is None:
            return self.text[digest]
        number = self.digests.find(raw)
        if number < 0 or number in self.forgotten:
            raise KeyError(digest)
        if number in self.replaced:
            return self.replaced[number]
        ends = self.path_ends
        return as_text(self.paths[ends[number] : ends[number + 1]])

    def __setitem__(self, digest: str, path: str) -> None:
        raw = _hex32(digest)
        if raw is None:
            self.text[digest] = path
            return
        number = self.digests.find(raw)
        if number >= 0:
            self.forgotten.discard(number)
            ends = self.path_ends
            if as_text(self.paths[ends[number] : ends[number + 1]]) == path:
                self.replaced.pop(number, None)
            else:
                self.replaced[number] = path
            return
        self.digests.add(raw)
        self.paths += as_bytes(path)
        end = len(self.paths)
        if end > WIDE_OFFSETS and self.path_ends.typecode == "I":
            self.path_ends = array("Q", self.path_ends)
        self.path_ends.append(end)

    def __delitem__(self, digest: str) -> None:
        raw = _hex32(digest)
        if raw is None:
            del self.text[digest]
            return
        number = self.digests.find(raw)
        if number < 0 or number in self.forgotten:
            raise KeyError(digest)
        self.forgotten.add(number)
        self.replaced.pop(number, None)

    def __iter__(self) -> Iterator[str]:
        digests = self.digests
        for number in range(len(digests)):
            if number not in self.forgotten:
                yield digests.raw(number).hex()
        yield from self.text

    def __len__(self) -> int:
        return len(self.digests) - len(self.forgotten) + len(self.text)

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, str):
            return False
        raw = _hex32(digest)
        if raw is None:
            return digest in self.text
        number = self.digests.find(raw)
        return number >= 0 and number not in self.forgotten
