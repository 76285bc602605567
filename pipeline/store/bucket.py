"""Where a run's outputs and its state go: a local folder, or an object-store bucket
(docs/ledger.md#outputs-in-a-bucket).

A local ``OUT`` holds everything: outputs, ledger, lock, summaries, history, report. With
``--out s3://bucket/prefix`` the outputs go to the bucket and the rest stays in a local state
folder (``--state DIR``, default ``.pipeline/<name>`` beside the manifest), since a lock and an
append-only ledger need a local disk; the ledger and the summary are copied to ``OUT`` when the
run ends, so the bucket says which of its files are current.

``BucketStore`` is the local ``Store`` with another last step: results are downloaded, checked
and marked under ``STATE/staging/<id>/`` exactly as on a local disk, then each is put whole in
the bucket and verified by its size; earlier outputs of a redone job (and a protected job's
``.raw/``) are moved to ``OUT/<id>/.superseded/<stamp>/`` by copy and delete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

import pipeline.store.objects as objects
from pipeline.durability import Syncer
from pipeline.errors import ObjectStoreError, StoreError
from pipeline.inputs.objectstore import is_object_store, join
from pipeline.layout import (
    COPIED_TO_BUCKET,
    RAW_DIR,
    STAGING_DIR,
    SUMMARY_NAME,
    SUPERSEDED_DIR,
)
from pipeline.store.local import Store
from pipeline.store.missing import OutputLook, files_under

BUCKET_STATUS_HINT = (
    "a bucket OUT keeps its ledger in the run's local state folder: "
    "pipeline status .pipeline/<name> (beside the manifest), or the --state DIR of the run"
)


@dataclass(frozen=True, slots=True)
class OutputTarget:
    """``out``: the folder or bucket URL as the user gave it (absolute for a folder);
    ``state_dir``: the local folder of the ledger, lock, summaries, history and report."""

    out: str
    state_dir: Path
    bucket: bool

    def open_store(self, syncer: Syncer | None = None) -> Store:
        if self.bucket:
            return BucketStore(self.out, self.state_dir / STAGING_DIR, syncer)
        return Store(self.state_dir, syncer)

    def open_shard_store(self, staging: Path) -> Store:
        """The store of a Ray shard, on whatever node it runs: a bucket ``OUT`` is written
        straight from the shard (results staged under ``staging``, a folder of that node);
        a shared-path ``OUT`` is the same folder on every node."""
        if self.bucket:
            return BucketStore(self.out, staging)
        return Store(Path(self.out))

    def outputs_look(self) -> OutputLook:
        """Whether a done job's outputs are missing: the bucket's listing or the local files
        (the one rule of ``status``, ``--redo-missing`` and the re-fetch)."""
        if self.bucket:
            return OutputLook(BucketListing(self.out).missing)
        return files_under(self.state_dir)

    def copy_state(self) -> list[str]:
        """Copy the ledger and the summary to a bucket ``OUT``; a warning per file that could
        not be copied (the local state folder still holds it)."""
        if not self.bucket:
            return []
        warnings = []
        for name in COPIED_TO_BUCKET:
            local = self.state_dir / name
            if not local.is_file():
                continue
            try:
                objects.copy_ledger(local, self.out)
            except ObjectStoreError as exc:
                warnings.append(f"could not copy {name} to {self.out} ({exc}); it is in {local}")
        return warnings


class TargetError(ValueError):
    """``--out`` / ``--state`` do not make a target; ``str()`` is the one-line reason."""


def output_target(
    out: str | None, state: Path | None, manifest_dir: Path, name: str
) -> OutputTarget:
    """The target of ``pipeline run``: ``out`` defaults to ``out/<name>`` beside the manifest;
    ``state`` (only with a bucket ``out``) to ``.pipeline/<name>`` beside it."""
    if out is not None and is_object_store(out):
        if not out.split("://", 1)[1].strip("/"):
            raise TargetError(f"--out {out!r} names no bucket")
        state_dir = state if state is not None else manifest_dir / ".pipeline" / name
        return OutputTarget(out.rstrip("/"), state_dir.resolve(), True)
    folder = Path(out.removeprefix("file://")) if out is not None else manifest_dir / "out" / name
    if state is not None and state.resolve() != folder.resolve():
        raise TargetError(
            "--state is for an object-store --out (s3://, gs://, az://); "
            "a local output folder keeps its ledger inside it"
        )
    return OutputTarget(str(folder.resolve()), folder.resolve(), False)


class BucketStore(Store):
    """Outputs in an object store; temporaries (``root``) in the local state folder."""

    def __init__(self, out: str, staging: Path, syncer: Syncer | None = None) -> None:
        super().__init__(staging, syncer)
        self.out = out.rstrip("/")

    def prepare(self) -> None:
        """The staging folder, and a write probe: a bad bucket, missing credentials or an
        unreachable endpoint stops the run here, before anything is fetched or bought."""
        try:
            objects.probe_writable(self.out)  # first: a bad bucket leaves nothing behind
        except ObjectStoreError as exc:
            raise StoreError(str(exc)) from exc
        super().prepare()

    async def publish(
        self,
        job_id: str,
        temps: list[tuple[Path, str]],
        indexes: list[int] | None = None,
        keep: tuple[str, ...] = (),
    ) -> tuple[list[str], list[str]]:
        return await asyncio.to_thread(self.publish_now, job_id, temps, indexes, keep)

    def publish_now(
        self,
        job_id: str,
        temps: list[tuple[Path, str]],
        indexes: list[int] | None = None,
        keep: tuple[str, ...] = (),
    ) -> tuple[list[str], list[str]]:
        """Move earlier outputs aside (but those to ``keep``), then put each temp (and its
        ``.raw``) whole, at its index."""
        folder = self.job_dir(job_id)  # refuses an id that is no plain name, as locally
        prefix = join(self.out, job_id)
        order = list(range(len(temps))) if indexes is None else indexes
        try:
            superseded = self._move_aside_remote(job_id, prefix, keep)
            outputs = []
            for index, (temp, ext) in zip(order, temps, strict=True):
                name = f"{index}.{ext}"
                raw = self._raw_of.pop(temp, None)
                if raw is not None:  # before its output: a delivered file always has its raw
                    objects.put_file(raw, f"{prefix}/{RAW_DIR}/{name}", skip_same=False)
                    raw.unlink(missing_ok=True)
                objects.put_file(temp, f"{prefix}/{name}", skip_same=False)
                temp.unlink(missing_ok=True)
                outputs.append(f"{job_id}/{name}")
        except ObjectStoreError as exc:
            raise StoreError(str(exc)) from exc  # stops the run, resumable: nothing was lost
        with contextlib.suppress(OSError):
            folder.rmdir()  # the staging folder of this job, empty now
        return outputs, superseded

    def _move_aside_remote(self, job_id: str, prefix: str, keep: tuple[str, ...] = ()) -> list[str]:
        kept = {output.rsplit("/", 1)[-1] for output in keep}
        earlier = [
            (url, url.rsplit("/", 1)[1])
            for url, _size in objects.list_files(prefix)
            if not url.rsplit("/", 1)[1].startswith(".") and url.rsplit("/", 1)[1] not in kept
        ]
        raws = [] if keep else objects.list_files(f"{prefix}/{RAW_DIR}")
        if not earlier and not raws:
            return []
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = f"{SUPERSEDED_DIR}/{stamp}"
        for url, _size in raws:
            objects.move(url, f"{prefix}/{aside}/{RAW_DIR}/{url.rsplit('/', 1)[1]}")
        moved = []
        for url, name in sorted(earlier):
            objects.move(url, f"{prefix}/{aside}/{name}")
            moved.append(f"{job_id}/{aside}/{name}")
        return moved


class BucketListing:
    """Which outputs of a bucket ``OUT`` are there: the whole of OUT listed once, when first
    asked (a listing per job folder would be a request per done job, on every run).

    ``status`` (and the re-fetch of lost outputs) ask it instead of the local disk when the
    state folder belongs to a bucket run (``recorded_bucket``).
    """

    def __init__(self, out: str) -> None:
        self.out = out.rstrip("/")
        self._names: set[str] | None = None

    def missing(self, outputs: Iterable[str]) -> bool:
        """Whether any of these outputs (relative to OUT) is not in the bucket."""
        names = self._names if self._names is not None else self._list()
        return not all(output in names for output in outputs)

    def _list(self) -> set[str]:
        try:
            self._names = objects.names_under(self.out)
        except ObjectStoreError as exc:  # the CLI says it in one line, exit 3
            raise StoreError(str(exc)) from exc
        return self._names


def recorded_bucket(state_dir: Path) -> str | None:
    """The bucket ``OUT`` a state folder's last run wrote to (its ``summary.json``), if any."""
    try:
        summary = orjson.loads((state_dir / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    run = summary.get("last_run") if isinstance(summary, dict) else None
    out = run.get("out_dir") if isinstance(run, dict) else None
    return out if isinstance(out, str) and is_object_store(out) else None
