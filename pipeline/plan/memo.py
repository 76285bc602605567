"""The plan memo: what a clean pass learnt, kept so that the next night's pass need not check
every row again.

A nightly catalog of a million rows mostly did not change since the last run: the same
manifest, the same items file, the same photos. After a pass that found no problem and gave no
warning, ``MemoWriter`` keeps in the state folder (``plan.memo``, beside the stat cache; written
under a temporary name, then renamed) every valid job as the pass handed it to the plan: each
shape's first PlannedJob once, then per row its id, row number, prompt and content key (and its
own photo's path, digest and signature), with the signature (device, inode, size, mtime, ctime)
of every local file a job reads. The memo is keyed by a digest of everything the pass read that
is not an input file (``memo_digest``): the manifest's bytes, each items file's bytes, the
checks' limits, and the versions of the keys, the facts and this format.

The next pass (``MemoRows``), when that digest matches, checks no row: each file is only
``stat``-ed against its signature, and the rows are handed to the plan as the pass would have
handed them, so the skip rule, ``--only``, ``--limit``, the reviews and the summary are the
plan's own, unchanged. A row's own photo whose signature moved (new bytes, a touch) is checked
again alone, as the full pass checks it (``PhotoRecheck``: the stat cache, or one read), and
its record patched in the memo. Anything else in doubt raises ``MemoStale`` and the plan takes
the full pass (which writes a new memo): no memo, another digest (an edited, added or removed
row), a photo that is gone, broken, now of another size or with a notice, a shared file whose
signature moved, a damaged or truncated memo (each batch carries its CRC-32, the end its record
count). Catalogs the memo cannot describe (``glob:``
entries, whose matches change with the folder; remote inputs, whose bytes change behind their
URL) are never memoised.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipeline import __version__
from pipeline.manifest import Manifest
from pipeline.models import InputRef, PlannedJob
from pipeline.plan.keys import KEY_VERSION, key_of
from pipeline.plan.onepass import Hit, Shape
from pipeline.preflight import Preflight
from pipeline.preflight.files import ImageFacts, closest_size
from pipeline.preflight.reader import FACTS_VERSION

MEMO_NAME = "plan.memo"
MEMO_VERSION = 2  # bump when what a record holds changes: older memos are then not read
MAGIC = b"onemin-plan-memo"
BATCH = 4096  # records per pickled batch: all C, small in memory
_FRAME = struct.Struct("<II")  # a batch's length and CRC-32
_SHAPE, _JOB, _END = "S", "J", "E"

# A file a job reads and its signature, (path as the job names it, (dev, ino, size, mtime_ns,
# ctime_ns)).
FileMark = tuple[str, tuple[int, ...]]


@dataclass(frozen=True)
class MemoPlace:
    """Where a pass keeps its memo (the state folder); ``read`` False (``--rehash``): the
    memo is written, never read."""

    folder: Path
    read: bool = True


# A row's own photo checked again: its hit, and its record for the memo.
Recheck = Callable[[Shape, tuple[Any, ...]], tuple[Hit, tuple[Any, ...]]]
_NEVER = (-1, -1, -1, -1, -1)  # a signature no file has: checked again next time too


class MemoStale(Exception):
    """The memo cannot stand for this pass: the plan takes the full pass instead."""


def memo_digest(manifest: Manifest, preflight: Preflight) -> str | None:
    """The digest of everything the pass reads that is not an input file; None when the
    manifest is one the memo cannot describe (``glob:`` entries; rows told to ``on_row``)."""
    if manifest.globs or manifest.on_row is not None:
        return None
    digest = hashlib.sha256()
    settings = (
        MEMO_VERSION,
        __version__,
        KEY_VERSION,
        FACTS_VERSION,
        preflight.max_pixels,
        preflight.max_input_side,
        str(manifest.path),
        str(manifest.base_dir),
        [str(source.path) for source in manifest.items],
    )
    digest.update(repr(settings).encode())
    try:
        for path in (manifest.path, *(source.path for source in manifest.items)):
            with open(path, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    except OSError:
        return None  # the pass will say what is wrong with the file
    return digest.hexdigest()


def job_files(planned: PlannedJob) -> list[tuple[str, str | None]]:
    """The local files a planned job reads, with the digests its key holds (None for a mask
    file drawn into a mask made here: ``mask_digest`` is then the drawn PNG's)."""
    job = planned.job
    found: list[tuple[str, str | None]] = []
    if job.image.kind == "file" and planned.image_digest is not None:
        found.append((job.image.value, planned.image_digest))
    mask = job.mask
    if mask is not None and mask.kind == "file":
        found.append((mask.value, None if planned.mask_png is not None else planned.mask_digest))
    return found


class MemoWriter:
    """Records what the full pass hands the plan, to a temporary file in ``folder``; ``commit``
    renames it to ``plan.memo`` (``discard`` removes it, and any older memo)."""

    def __init__(self, folder: Path, digest: str, preflight: Preflight) -> None:
        self.path = folder / MEMO_NAME
        self._preflight = preflight
        self._numbers: dict[Shape, int] = {}
        self._records = 0
        self.spoiled = False  # something the memo cannot vouch for: it will not be kept
        self._temp = _temporary(self.path)
        self._handle: BinaryIO | None = self._temp.open("xb")
        self._batch: list[Any] = [(MAGIC, MEMO_VERSION, digest)]
        self._flush()  # a frame of its own: a reader tells a stale memo from it alone

    @classmethod
    def open(cls, folder: Path, digest: str, preflight: Preflight) -> MemoWriter | None:
        """A writer, or None when the folder cannot take one (the run goes on without)."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return cls(folder, digest, preflight)
        except OSError:
            return None

    def hit(self, hit: Hit, photo: tuple[int, ...] | None) -> None:
        """A row of a shared shape; ``photo``: its own photo's signature (a row of distinct
        photos; None there: the pass cannot vouch for it)."""
        if self.spoiled:
            return
        shape = hit[0]
        number = self._numbers.get(shape)
        if number is None:
            number = self._shape(shape, len(hit) > 5)
            if number is None:
                return
        if len(hit) > 5:
            if photo is None:
                self.spoiled = True
                return
            self._add((number, *hit[1:], *photo))
        else:
            self._add((number, *hit[1:]))

    def job(self, planned: PlannedJob) -> None:
        """A job checked on its own."""
        if not self.spoiled:
            files = self._marks(planned)
            if files is not None:
                self._add((_JOB, planned, files))

    def cleared(self) -> None:
        """The pass forgot its shapes (``RowPass.on_clear``): so does the memo's reader."""
        self._numbers.clear()
        self._add(None)

    def spoil(self) -> None:
        self.spoiled = True

    def commit(self) -> bool:
        """Keep the memo (unless spoiled); whether it was kept."""
        if self.spoiled or self._handle is None:
            self.discard()
            return False
        try:
            self._add((_END, self._records))
            self._flush()
            self._handle.close()
            self._handle = None
            os.replace(self._temp, self.path)
        except OSError:
            self.discard()
            return False
        return True

    def discard(self) -> None:
        """Keep nothing: a memo of an earlier pass would not stand for this one either."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        for path in (self._temp, self.path):
            with contextlib.suppress(OSError):
                path.unlink()

    def _shape(self, shape: Shape, own_photos: bool) -> int | None:
        """Number a shape and record it, with the files its rows share (none when each row
        has its own photo: the first row's is that row's alone)."""
        assert shape.planned is not None
        files = () if own_photos else self._marks(shape.planned)
        if files is None:
            return None
        number = self._numbers[shape] = len(self._numbers)
        record = (_SHAPE, shape.prefix, shape.planned, files, shape.document, shape.sized_by_image)
        self._add(record)
        return number

    def _marks(self, planned: PlannedJob) -> tuple[FileMark, ...] | None:
        marks = []
        for path, digest in job_files(planned):
            signature = self._preflight.settled_signature(path, digest)
            if signature is None:
                self.spoiled = True
                return None
            marks.append((path, signature))
        return tuple(marks)

    def _add(self, record: Any) -> None:
        self._records += 1
        self._batch.append(record)
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch or self._handle is None:
            return
        try:
            data = pickle.dumps(self._batch, protocol=pickle.HIGHEST_PROTOCOL)
            self._handle.write(_FRAME.pack(len(data), zlib.crc32(data)))
            self._handle.write(data)
        except (OSError, pickle.PicklingError):
            self.spoiled = True
        self._batch = []


class MemoRows:
    """The rows a memo holds, handed to the plan as ``RowPass`` hands out a pass's (hits,
    PlannedJobs, ``on_clear`` when the shapes are forgotten); raises ``MemoStale`` (see the
    module).
    ``open`` reads the header alone: a memo of another digest is refused before any row."""

    def __init__(
        self,
        handle: BinaryIO,
        on_clear: Callable[[list[Shape]], None],
        recheck: Recheck | None = None,
    ) -> None:
        self._handle = handle
        self.path = Path(handle.name)
        self.on_clear = on_clear
        self.recheck = recheck
        self._shapes: list[Shape] = []
        self._count = 0  # records read, the header's excepted
        self._frame = 0  # the batch being read (the header's is 0)
        # The records of photos checked again, by batch and by their place in it.
        self.patches: dict[int, dict[int, tuple[Any, ...]]] = {}

    @classmethod
    def open(
        cls,
        path: Path,
        digest: str,
        on_clear: Callable[[list[Shape]], None],
        recheck: Recheck | None = None,
    ) -> MemoRows | None:
        """The memo at ``path`` if it is one of this ``digest``; else None."""
        try:
            handle = path.open("rb")
        except OSError:
            return None
        try:
            header = next(_batches(handle), None)
        except MemoStale:
            header = None
        if header != [(MAGIC, MEMO_VERSION, digest)]:
            handle.close()
            return None
        return cls(handle, on_clear, recheck)

    def shapes(self) -> list[Shape]:
        return list(self._shapes)

    def feed(self, row: Callable[[Hit], None], job: Callable[[PlannedJob], None]) -> None:
        """Hand every row to ``row`` (a ``Hit``) or ``job`` (a job checked on its own), in
        the pass's order; raises ``MemoStale``. (Called, not iterated: a row costs no
        generator's resumption.)"""
        with self._handle:
            for batch in _batches(self._handle):
                self._frame += 1
                if self._feed(batch, row, job):
                    return
        raise MemoStale("the memo ends before its last record")

    def rewrite(self) -> None:
        """Write the memo again with the records of the photos checked again (after a pass
        that read it to its end): batches without one are copied as they are."""
        if not self.patches:
            return
        temp = _temporary(self.path)
        try:
            with self.path.open("rb") as source, temp.open("xb") as sink:
                for number, (frame, data) in enumerate(_frames(source)):
                    changes = self.patches.get(number)
                    if changes:
                        batch = pickle.loads(data)
                        for place, record in changes.items():
                            batch[place] = record
                        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
                        frame = _FRAME.pack(len(data), zlib.crc32(data))
                    sink.write(frame)
                    sink.write(data)
            os.replace(temp, self.path)
        except (OSError, MemoStale, pickle.PickleError):
            for path in (temp, self.path):  # the old memo no longer holds: the full pass
                with contextlib.suppress(OSError):
                    path.unlink()

    def _feed(
        self, batch: list[Any], row: Callable[[Hit], None], job: Callable[[PlannedJob], None]
    ) -> bool:
        """A batch's rows; True at the end record."""
        stat = os.stat
        shapes = self._shapes
        count = self._count
        for record in batch:
            count += 1
            if record is None:
                self.on_clear(shapes)
                shapes = self._shapes = []
                continue
            first = record[0]
            if type(first) is int:
                if len(record) == 5:
                    row((shapes[first], *record[1:]))
                    continue
                try:
                    info = stat(record[5])
                except (OSError, ValueError):
                    info = None
                if (
                    info is None
                    or info.st_mtime_ns != record[10]
                    or info.st_ctime_ns != record[11]
                    or info.st_ino != record[8]
                    or info.st_size != record[9]
                    or info.st_dev != record[7]
                ):
                    row(self._checked_again(shapes[first], record, batch))
                    continue
                row((shapes[first], *record[1:7]))
            elif first == _SHAPE:
                _check_marks(record[3])
                shape = Shape(record[1], record[2], clean=True, built=True, document=record[4])
                shape.sized_by_image = record[5]
                shapes.append(shape)
            elif first == _JOB:
                _check_marks(record[2])
                job(record[1])
            elif first == _END:
                if record[1] != count - 1:
                    raise MemoStale("the memo's record count does not match")
                return True
            else:
                raise MemoStale("an unknown record")
        self._count = count
        return False

    def _checked_again(self, shape: Shape, record: tuple[Any, ...], batch: list[Any]) -> Hit:
        """The row of a photo whose signature moved (new bytes, a touch, gone), from a check of
        the photo alone (``recheck``); its record is patched for the next night."""
        if self.recheck is None:
            raise MemoStale(f"{record[5]} changed")
        hit, patched = self.recheck(shape, record)
        self.patches.setdefault(self._frame, {})[batch.index(record)] = patched
        return hit


class PhotoRecheck:
    """A row's own photo checked again (``Preflight.check_local_image``: the stat cache, or
    one read), its content key made anew from its variant's key document: what the full pass
    makes of that row, when the photo is still a clean one of the same variant (size and
    upload recipe). Anything else (a problem, a notice, another variant) raises
    ``MemoStale``: the full pass then says what is what."""

    def __init__(self, preflight: Preflight, base: str) -> None:
        self.preflight = preflight
        self.base = base

    def __call__(self, shape: Shape, record: tuple[Any, ...]) -> tuple[Hit, tuple[Any, ...]]:
        path, prompt, planned = record[5], record[3], shape.planned
        if shape.document is None or planned is None:
            raise MemoStale(f"{path} changed")
        facts, notes, digest = self.preflight.check_local_image(InputRef("file", path), self.base)
        if not isinstance(facts, ImageFacts) or notes or digest is None:
            raise MemoStale(f"{path} needs the full pass")
        size = closest_size(facts.width, facts.height) if shape.sized_by_image else None
        recipe = self.preflight.image_recipe(facts)
        if (size is not None and size != planned.job.size) or recipe != planned.image_recipe:
            raise MemoStale(f"{path} is now of another shape")
        document = {**shape.document, "image": f"sha256:{digest}"}
        if prompt is not None:
            document["parameters"] = {**document["parameters"], "prompt": prompt}
        key = key_of(document)
        signature = self.preflight.settled_signature(path, digest) or _NEVER
        hit: Hit = (shape, record[1], record[2], prompt, key, path, digest)
        return hit, (*record[:4], key, path, digest, *signature)


def _temporary(path: Path) -> Path:
    """The memo's temporary name, a killed run's removed first: one fixed name, replaced rather
    than hunted for (as the checkpoint's); a second writer at once cannot create it and keeps
    no memo this time."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    return temp


def _check_marks(marks: tuple[FileMark, ...]) -> None:
    for path, signature in marks:
        try:
            info = os.stat(path)
        except (OSError, ValueError) as exc:
            raise MemoStale(f"{path} cannot be looked at") from exc
        now = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if now != signature:
            raise MemoStale(f"{path} changed")


def _frames(handle: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """Each batch's frame header and its bytes, their CRC checked."""
    while True:
        frame = handle.read(_FRAME.size)
        if not frame:
            return
        if len(frame) < _FRAME.size:
            raise MemoStale("the memo is truncated")
        size, crc = _FRAME.unpack(frame)
        data = handle.read(size)
        if len(data) != size or zlib.crc32(data) != crc:
            raise MemoStale("the memo is damaged")
        yield frame, data


def _batches(handle: BinaryIO) -> Iterator[list[Any]]:
    for _frame, data in _frames(handle):
        try:
            batch = pickle.loads(data)
        except Exception as exc:  # written by another version, or damaged past its CRC
            raise MemoStale("the memo cannot be read") from exc
        if type(batch) is not list:
            raise MemoStale("the memo is damaged")
        yield batch
