"""``Uploads``: each distinct input is uploaded once per run (and reused from the ledger across
runs), shared by every job with the same bytes while it is in flight.

At most ``UPLOADS_IN_FLIGHT`` uploads are open at once (the live API's reported limit); each
still passes the one rate budget first, so the limit only ever holds uploads back.

A first run's new photo (``PlannedJob.unread``) is read at its job's start (``read_photo``),
once: its digest completes the content key before anything is sent or written, and the same
bytes are uploaded (docs/ledger.md#stat-cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import UPLOADS_IN_FLIGHT
from pipeline.errors import InputUnreadable, Stopped
from pipeline.events import AssetsUploaded, EventBus
from pipeline.images.upload import Recipe, prepare_upload
from pipeline.models import Asset, InputRef
from pipeline.scheduler.job import Client, JobRun, MaskConverter, PhotoReader, ResumeState
from pipeline.scheduler.steps import StepRunner
from pipeline.store.local import Store


class Uploads:
    def __init__(
        self,
        client: Client,
        steps: StepRunner,
        resume: ResumeState,
        bus: EventBus,
        store: Store,
        mask_converter: MaskConverter | None = None,
        in_flight: int = UPLOADS_IN_FLIGHT,
        photos: PhotoReader | None = None,
    ) -> None:
        self._client = client
        self._photos = photos
        self._slots = asyncio.Semaphore(in_flight)
        self._steps = steps
        self._resume = resume
        self._bus = bus
        self._store = store
        self._mask_converter = mask_converter
        self._in_flight: dict[str, asyncio.Future[Asset]] = {}

    async def read_photo(self, run: JobRun) -> None:
        """Read the photo of a job planned with ``unread``: its key and digest completed in
        ``run.planned``, its bytes kept in ``run.photo`` for the upload. Raises InputUnreadable
        (nothing sent) when the bytes do not decode or are not what the plan was made from."""
        planned = run.planned
        unread = planned.unread
        assert unread is not None
        path = planned.job.image.value
        if self._photos is None:
            raise InputUnreadable(f"{path} was not read before its upload; run again")
        read = await self._photos.read(path)
        if isinstance(read, str):
            raise InputUnreadable(f"{path} {read}")
        if read.facts != unread.expected:
            raise InputUnreadable(f"{path} changed since it was checked; run again")
        key = unread.key(read.digest)
        run.planned = replace(planned, key=key, image_digest=read.digest, unread=None)
        run.photo = read.data

    async def assets_for(self, run: JobRun) -> dict[str, Asset]:
        """The job's inputs as uploaded assets, by role ("image", "mask")."""
        planned = run.planned
        image = _Prepared(planned.image_recipe, data=run.photo)
        run.photo = None  # held by this call only: a re-upload reads the file again
        roles = [("image", planned.job.image, planned.image_digest, image)]
        if planned.mask_png is not None:  # made here: keyed by the PNG's digest
            made = InputRef("file", f"{planned.job.id}.mask.png")
            roles.append(("mask", made, planned.mask_digest, _Prepared(made=planned.mask_png)))
        elif planned.job.mask is not None:
            mask = _Prepared(planned.mask_recipe, planned.mask_convert)
            roles.append(("mask", planned.job.mask, planned.mask_digest, mask))
        assets: dict[str, Asset] = {}
        sent = 0
        for role, ref, digest, prepared in roles:
            asset, fresh = await self._asset(run, ref, digest, prepared)
            assets[role] = asset
            sent += fresh
        if sent:  # the line that lets a resumed run reuse the upload
            self._bus.emit(AssetsUploaded(planned.job.id, planned.key, assets, sent))
        return assets

    async def _asset(
        self, run: JobRun, ref: InputRef, digest: str | None, prepared: _Prepared
    ) -> tuple[Asset, bool]:
        """The uploaded asset for an input, uploading it only if nobody has yet."""
        if ref.kind == "asset":
            return Asset(path=ref.value), False
        cache_key = _upload_key(ref, digest, prepared)
        known = self._resume.asset_for(cache_key)
        if known is not None:
            return known, False
        shared = self._in_flight.get(cache_key)
        if shared is not None:
            return await asyncio.shield(shared), False
        future: asyncio.Future[Asset] = asyncio.get_running_loop().create_future()
        self._in_flight[cache_key] = future
        try:
            asset = await self._upload(run, ref, cache_key, prepared)
        except BaseException as exc:
            self._in_flight.pop(cache_key, None)  # a later job may try again
            future.set_exception(exc if isinstance(exc, Exception) else Stopped())
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        future.set_result(asset)
        # Waiters hold the future; later jobs find the path in the resume state (a string, not
        # a future per distinct input: a catalog of a million photos keeps memory flat).
        self._resume.remember_asset(cache_key, asset.path)
        self._in_flight.pop(cache_key, None)  # (a forgotten asset may have dropped it already)
        return asset, True

    def forget(self, digest: str | None) -> None:
        """The API forgot this upload: the next job needing it uploads it again."""
        if digest is None:
            return
        self._in_flight.pop(digest, None)
        self._resume.forget_asset(digest)

    async def _upload(
        self, run: JobRun, ref: InputRef, cache_key: str, prepared: _Prepared
    ) -> Asset:
        if prepared.made is not None:  # a mask made by preflight: its PNG, named after the job
            data, filename, content_type = prepared.made, Path(ref.value).name, "image/png"
        else:
            data, filename, content_type = await self._input_bytes(run, ref, prepared)

        async def attempt() -> Asset:
            async with self._slots:  # taken after the rate gate: a slot is never held waiting
                return await self._client.upload_asset(data, filename, content_type)

        asset = await self._steps.run(run, "upload", attempt)
        return Asset(path=asset.path, digest=cache_key)

    async def _input_bytes(
        self, run: JobRun, ref: InputRef, prepared: _Prepared
    ) -> tuple[bytes, str, str]:
        """The bytes to upload, their file name and their content type (from the bytes)."""
        if ref.kind == "url":
            data, name = await self._fetch_input(run, ref.value)
            return data, name, _content_type(name)
        path = Path(ref.value)
        try:
            if prepared.recipe is not None:  # upright, at most max_input_side, 8-bit, gray
                upload = prepare_upload(path, prepared.recipe, prepared.data)
                return upload.data, upload.filename, upload.content_type
            if prepared.convert and self._mask_converter is not None:
                return self._mask_converter(path), f"{path.stem}.png", "image/png"
            data = prepared.data if prepared.data is not None else path.read_bytes()
            return data, path.name, _content_type(path.name)
        except OSError as exc:
            raise InputUnreadable(f"cannot read {path}: {exc.strerror}") from exc

    async def _fetch_input(self, run: JobRun, url: str) -> tuple[bytes, str]:
        temp = self._store.temp_path(run.job.id, "input")
        try:
            await self._steps.run(run, "input", lambda: self._client.download(url, temp, "input"))
            return temp.read_bytes(), Path(url.split("?")[0]).name or "input"
        finally:
            self._store.discard(temp)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """How an input is turned into the bytes uploaded: a preflight recipe (EXIF, size, depth,
    grayscale), or, for jobs planned without one, only the mask conversion."""

    recipe: Recipe | None = None
    convert: bool = False
    made: bytes | None = None  # a mask preflight made: these PNG bytes are uploaded as they are
    data: bytes | None = None  # the file's bytes, read already (``Uploads.read_photo``)

    @property
    def token(self) -> str:
        if self.recipe is not None:
            return self.recipe.token
        return "gray" if self.convert else ""


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _upload_key(ref: InputRef, digest: str | None, prepared: _Prepared) -> str:
    """One upload per distinct bytes sent: the file's digest and what is done to it."""
    base = digest or "url:" + hashlib.sha256(ref.value.encode()).hexdigest()
    return f"{base}:{prepared.token}" if prepared.token else base
