"""Output files: ``OUT/<id>/<index>.<ext>``, never outside OUT, never half-written.

A result is downloaded to a hidden temporary name in the job's folder, checked (an image of the
expected size, a PNG ending with its end chunk; headers only, never decoded or re-encoded) and
renamed into place, so a file at a final name is always whole. Earlier outputs of a job whose
content changed are moved aside into ``OUT/<id>/.superseded/<stamp>/``, never deleted, and the
ledger says which files are current.

``protect: true`` (docs/manifest.md#protect): the checked result is kept as the API made it, under a
temporary name beside the output's, and the delivered file is composited from it
(``protect.protect_file``: encoded once, provenance in the same write). ``publish`` renames the kept
one to ``OUT/<id>/.raw/<index>.<ext>`` with its output; ``.raw`` is moved aside with the outputs it
belongs to.

``publish`` is awaitable: ``pipeline.store.bucket.BucketStore`` keeps every step above but the last,
which puts the files in an object store off the event loop; here it is a few renames.
"""

from __future__ import annotations

import io
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageOps

from pipeline import __version__
from pipeline.durability import Syncer, atomic_write, fsync_dir
from pipeline.errors import BadResponse, ImageCheckError, InputUnreadable, StoreError
from pipeline.images.checks import ImageChecks, marketplace_checks
from pipeline.images.masks import as_edit_mask
from pipeline.images.protect import write_protected
from pipeline.images.provenance import provenance_pieces
from pipeline.layout import RAW_DIR, SUPERSEDED_DIR, TEMP_PREFIX
from pipeline.models import PlannedJob

CREATOR_TOOL = f"onemin-pipeline {__version__}"  # xmp:CreatorTool of every delivered image


class Store:
    def __init__(self, out_dir: Path, syncer: Syncer | None = None) -> None:
        self.root = out_dir.resolve()
        self._syncer = syncer  # folder fsyncs off the event loop, batched with the ledger's
        self._raw_of: dict[Path, Path] = {}  # protected output's temp -> the API's bytes' temp
        # A checked result's marketplace checks, kept from its check until it is published.
        self._checks_of: dict[Path, ImageChecks] = {}

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the output folder {self.root}: {exc.strerror}"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"the output folder {self.root} is not writable")

    def job_dir(self, job_id: str) -> Path:
        # Lexical, not resolve(): preflight refuses ids that are not plain folder names, and
        # nothing but this tool writes job folders, so a symlink there is not ours to follow.
        if (
            not job_id
            or job_id in (".", "..")
            or "/" in job_id
            or os.sep in job_id
            or "\0" in job_id
        ):
            raise StoreError(f"job id {job_id!r} would write outside {self.root}")
        return self.root / job_id

    def temp_path(self, job_id: str, label: int | str) -> Path:
        folder = self.job_dir(job_id)
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {folder}: {exc.strerror}") from exc
        return folder / f"{TEMP_PREFIX}{label}-{secrets.token_hex(4)}"

    @staticmethod
    def mark_provenance(temp: Path) -> int:
        """Add the AI-edit XMP packet (docs/ledger.md#provenance) to a checked result, without
        re-encoding it.

        The metadata chunk or segment is inserted between the file's own byte ranges; the file
        is rewritten under a temporary name of the same family (swept if a run dies here) and
        renamed over the original. Returns the file's new size.
        """
        data = temp.read_bytes()
        pieces = provenance_pieces(data, creator_tool=CREATOR_TOOL)
        if pieces is None:  # already marked exactly so
            return len(data)
        # The temporary keeps the ``.part-`` family's name, so a run killed here leaves
        # nothing the next run's sweep misses.
        return atomic_write(temp, pieces, temp_name=temp.name + "-xmp")

    def protect_result(self, temp: Path, extension: str, planned: PlannedJob) -> int:
        """Keep the checked result ``temp`` aside and write the protected image in its place.

        Returns the delivered file's size. CPU-bound (decode, composite, encode): run it in a
        thread.
        """
        job = planned.job
        try:
            source, mask = protect_inputs(planned)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InputUnreadable(f"protect: cannot read the source or mask again: {exc}") from exc
        raw = temp.with_name(temp.name + "-raw")
        os.replace(temp, raw)
        self._raw_of[temp] = raw
        try:
            written = write_protected(
                raw,
                source,
                mask,
                temp,
                extension,
                job.output_compression,
                creator_tool=CREATOR_TOOL,
            )
        except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # check_image reads headers only: a result whose pixels do not decode is the
            # API's broken answer, fetched again from the stored record.
            raise BadResponse(f"result does not decode as an image ({exc})") from exc
        # The composite's pixels are at hand: a PNG (lossless) is checked without a decode.
        pixels = written.pixels if extension == "png" else None
        self._keep_checks(temp, written.data, pixels)
        return len(written.data)

    def check_marketplace(self, temp: Path) -> None:
        """Judge a checked, marked result for the marketplaces and keep the verdicts until it is
        published (``checks_for``). CPU-bound (a PNG is decoded whole): run it in a thread. A
        protected result was judged when it was composited."""
        if temp not in self._checks_of:
            self._keep_checks(temp, temp, None)

    def _keep_checks(self, temp: Path, image: bytes | Path, pixels: Image.Image | None) -> None:
        try:
            self._checks_of[temp] = marketplace_checks(image, pixels=pixels)
        except ImageCheckError as exc:
            # Its header was whole but its pixels are not: the API's broken answer, fetched
            # again from the stored record like any other.
            raise BadResponse(f"result does not decode as an image ({exc})") from exc

    def checks_for(self, temps: list[tuple[Path, str]]) -> tuple[ImageChecks, ...]:
        """The kept checks of a job's results, in index order; () unless every one was judged
        (a ledger line carries one per output, or none)."""
        found = [self._checks_of.pop(temp, None) for temp, _ in temps]
        return () if None in found else tuple(c for c in found if c is not None)

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)
        self._checks_of.pop(temp, None)
        raw = self._raw_of.pop(temp, None)
        if raw is not None:
            raw.unlink(missing_ok=True)

    async def publish(
        self,
        job_id: str,
        temps: list[tuple[Path, str]],
        indexes: list[int] | None = None,
        keep: tuple[str, ...] = (),
    ) -> tuple[list[str], list[str]]:
        """Put checked temps (``(path, ext)``) in place: the new outputs and the earlier files
        moved aside, both relative to OUT. ``indexes``: each temp's image index (default: their
        order); ``keep``: outputs (relative to OUT) that stay in place (a partial job's images
        already delivered, beside the missing ones now fetched).

        Awaitable so that a bucket store (``store.bucket``) can put off the event loop; on a
        local disk it is a few renames, done right here.
        """
        return self.publish_now(job_id, temps, indexes, keep)

    def publish_now(
        self,
        job_id: str,
        temps: list[tuple[Path, str]],
        indexes: list[int] | None = None,
        keep: tuple[str, ...] = (),
    ) -> tuple[list[str], list[str]]:
        """``publish`` on a local disk: rename the temps into place (synchronous)."""
        folder = self.job_dir(job_id)
        try:
            superseded = self._move_aside(folder, keep)
            outputs = []
            for index, (temp, ext) in zip(_indexes(indexes, temps), temps, strict=True):
                final = folder / f"{index}.{ext}"
                self._publish_raw(folder, temp, f"{index}.{ext}")
                os.replace(temp, final)
                outputs.append(final.relative_to(self.root).as_posix())
            if self._syncer is not None:
                self._syncer.dirty(folder)
            else:
                fsync_dir(folder)
        except OSError as exc:
            raise StoreError(f"cannot write outputs in {folder}: {exc.strerror}") from exc
        return outputs, superseded

    def _publish_raw(self, folder: Path, temp: Path, name: str) -> None:
        raw = self._raw_of.pop(temp, None)
        if raw is None:
            return
        raw_dir = folder / RAW_DIR
        raw_dir.mkdir(exist_ok=True)
        os.replace(raw, raw_dir / name)  # same folder tree: a rename, whole or not at all

    def _move_aside(self, folder: Path, keep: tuple[str, ...] = ()) -> list[str]:
        """Earlier outputs of this job (any visible file but those to ``keep``) go to
        .superseded/<stamp>/, and the API's own images of a protected job (``.raw``) with them
        (all of them unless outputs are kept: then a kept output keeps its raw too)."""
        kept = {Path(output).name for output in keep}
        earlier = [
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name not in kept
        ]
        raw_dir = folder / RAW_DIR
        move_raw = not keep and raw_dir.is_dir()  # kept outputs keep their raws with them
        if not earlier and not move_raw:
            return []
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = folder / SUPERSEDED_DIR / stamp
        aside.mkdir(parents=True, exist_ok=True)
        if move_raw:
            os.replace(raw_dir, aside / RAW_DIR)
        moved = []
        for path in sorted(earlier):
            target = aside / path.name
            os.replace(path, target)
            moved.append(target.relative_to(self.root).as_posix())
        return moved

    def sweep_temps(self, job_id: str) -> None:
        """Remove temporaries a killed run left in a job's folder."""
        folder = self.job_dir(job_id)
        if folder.is_dir():
            for path in folder.glob(f"{TEMP_PREFIX}*"):
                path.unlink(missing_ok=True)


def _indexes(indexes: list[int] | None, temps: list[tuple[Path, str]]) -> list[int]:
    return list(range(len(temps))) if indexes is None else indexes


def protect_inputs(planned: PlannedJob) -> tuple[Image.Image, Image.Image]:
    """The source as uploaded (upright; at the generated mask's size, which is the upload
    size) and the effective mask (white = edit), for ``protect``."""
    job = planned.job
    with Image.open(job.image.value) as image:
        image.load()
        source = ImageOps.exif_transpose(image)
    if planned.mask_png is not None:
        with Image.open(io.BytesIO(planned.mask_png)) as generated:
            mask = generated.convert("L")
    else:
        if job.mask is None:
            raise StoreError(f"job {job.id!r} has protect but no mask")
        with Image.open(job.mask.value) as file_mask:
            file_mask.load()
            mask = as_edit_mask(ImageOps.exif_transpose(file_mask))
    if source.size != mask.size:
        source = source.resize(mask.size, Image.Resampling.LANCZOS)  # as the upload scales it
    return source, mask
