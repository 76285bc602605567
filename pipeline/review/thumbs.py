"""Thumbnails of job sources in ``OUT/.thumbs/``, named by what they are made of.

A name is a hash of the source file's path, mtime and size (and the mask's): re-running only
makes what is missing, and a changed file gets a new name. Cost is kept per distinct input, not
per job: a source shared by many jobs is one task (same name), each task decodes its source once
(JPEG at a reduced scale through ``draft``, others through ``reduce``) and makes both the plain and
the mask-tinted thumbnail from it, and a mask shared by a catalog is decoded once and cached.
Outputs get no thumbnails at all: the page shows the output file itself, lazily loaded with its
size set, and the browser scales it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from PIL import Image, ImageOps

from pipeline.durability import atomic_file
from pipeline.events import Event, JobStarted
from pipeline.images.masks import MaskRecipe
from pipeline.inputs.cache import InputCache
from pipeline.layout import THUMBS_DIR
from pipeline.ledger.compact import ByteIndex
from pipeline.review.mask_view import effective_mask

THUMB_SIDE = 256
THUMB_QUALITY = 80
# Bump when the thumbnail recipe changes: the new names miss the cache and old files are pruned.
THUMB_RECIPE = 2
THUMB_NAME = re.compile(r"^[0-9a-f]{24}\.webp$")
THUMB_WORKERS = min(8, os.cpu_count() or 1)
# The inpainter's mask drawn over its source: white (edited) areas tinted red, half opaque.
MASK_TINT = (239, 68, 68)
MASK_OPACITY = 0.55
MASK_CACHE = 32  # decoded masks kept: a catalog shares a handful
STAT_CACHE = 4096  # input stats the prefetcher keeps: a catalog's shared files, not a million
_ALPHA = [round(v * MASK_OPACITY) for v in range(256)]


@dataclass(frozen=True, slots=True)
class Input:
    """Where one job input is and, for a local file, its stat (None: missing)."""

    kind: str  # "file" | "url" | "asset" | "none"
    label: str
    path: str | None = None  # absolute; plain strings, as pathlib costs add up at 100,000 jobs
    stat: os.stat_result | None = None

    @property
    def present(self) -> bool:
        return self.path is not None and self.stat is not None

    def identity(self) -> list[str]:
        """What a thumbnail of this file depends on: a changed file gets a new name."""
        assert self.stat is not None
        return [str(self.path), str(self.stat.st_mtime_ns), str(self.stat.st_size)]


def resolve_input(value: object, stat: Callable[[str], os.stat_result | None]) -> Input:
    """A ledger input reference ("/abs/path", "https://...", "asset:...") and where it is."""
    if not isinstance(value, str) or not value:
        return Input("none", "")
    if value.startswith(("http://", "https://", "s3://", "gs://", "az://")):
        cached = InputCache().lookup(value)  # fetched by preflight: shown from the cache
        if cached is None:
            return Input("url", value)
        return Input("file", value, str(cached.path), stat(str(cached.path)))
    if value.startswith("asset:"):
        return Input("asset", value.removeprefix("asset:"))
    path = os.path.abspath(value.removeprefix("file://"))
    return Input("file", os.path.basename(path), path, stat(path))


def stat_file(path: str) -> os.stat_result | None:
    """The stat of a regular file, or None if it is missing or no file."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in a hostile path
        return None
    return stat if S_ISREG(stat.st_mode) else None


def thumb_name(*inputs: Input, recipe: str | None = None) -> str:
    parts = [str(THUMB_RECIPE), str(THUMB_SIDE)]
    for index, item in enumerate(inputs):
        parts += (["mask"] if index else []) + item.identity()
    if recipe is not None:  # a generated mask: its recipe makes the tint (see mask_view)
        parts += ["recipe", recipe]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest() + ".webp"


@dataclass(frozen=True, slots=True)
class ThumbTask:
    """One source decoded once: its plain thumbnail and, with a mask, the tinted one."""

    plain: str
    source: str
    masked: str | None = None
    mask: str | None = None
    mask_id: str | None = None  # the mask's identity, the key of the decoded-mask cache
    recipe: MaskRecipe | None = None  # a generated mask: rendered, not read (mask_view)


class MaskCache:
    """Decoded masks (luminance) by identity and size, shared by all threads."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, tuple[int, int]], Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, identity: str, size: tuple[int, int]) -> Image.Image:
        key = (identity, size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with Image.open(path) as opened:
            opened.draft("L", (size[0] * 2, size[1] * 2))
            # Luminance is the edit weight (white edits, black keeps), as the API reads masks.
            weight = opened.convert("L").resize(size, Image.Resampling.BILINEAR)
        alpha = weight.point(_ALPHA)
        with self._lock:
            self._items[key] = alpha
            while len(self._items) > MASK_CACHE:
                self._items.popitem(last=False)
        return alpha


def load_small(source: str) -> tuple[Image.Image, bool]:
    """The source decoded once at thumbnail scale, upright; and whether it has transparency."""
    box = (THUMB_SIDE, THUMB_SIDE)
    with Image.open(source) as opened:
        opened.draft("RGB", box)  # JPEG decodes at 1/2..1/8 scale for free
        image = ImageOps.exif_transpose(opened)
        # reducing_gap: a cheap integer reduce() first, then a short bilinear pass.
        image.thumbnail(box, Image.Resampling.BILINEAR, reducing_gap=2.0)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB"), has_alpha


def tint(image: Image.Image, has_alpha: bool, alpha: Image.Image) -> Image.Image:
    if has_alpha:
        # Flatten onto a light backdrop; dropping alpha would bare whatever hides under it.
        backdrop = Image.new("RGB", image.size, (245, 245, 245))
        backdrop.paste(image, mask=image.getchannel("A"))
        image = backdrop
    return Image.composite(Image.new("RGB", image.size, MASK_TINT), image, alpha)


def make_thumbnail(
    source: str | Path, mask: str | Path | None = None, masks: MaskCache | None = None
) -> Image.Image:
    """The plain thumbnail, or with ``mask`` the tinted one (kept for callers and tests)."""
    image, has_alpha = load_small(str(source))
    if mask is None:
        return image  # transparency kept: the page shows it over a checkerboard
    alpha = (masks or MaskCache()).get(str(mask), str(mask), image.size)
    return tint(image, has_alpha, alpha)


class Thumbnailer:
    """Names thumbnails by what they are made of, and makes only the missing ones.

    Whether a thumbnail is there is a stat of its file (a few microseconds), not a listing
    held in memory: a folder of a million photos' thumbnails would be two million names. The
    names this build shows (``wanted``, for ``prune``) are kept as their 12 bytes each."""

    def __init__(
        self,
        out_dir: Path,
        create: bool = True,
        track: bool = True,
        budget: int | None = None,
    ) -> None:
        self.dir = out_dir / THUMBS_DIR
        if create:
            self.dir.mkdir(exist_ok=True)
        self.track = track  # keep the names asked for (a build prunes the others after)
        # At most this many made by this build; the rest are ``deferred`` (a later one makes
        # them): what bounds the time of the report a run writes by itself.
        self.budget = budget
        self.scheduled = 0
        self.deferred: set[str] = set()
        self.wanted = ByteIndex()
        self.tasks: dict[str, ThumbTask] = {}  # by plain name
        self.by_name: dict[str, ThumbTask] = {}  # every name a task makes -> the task
        self.failed: set[str] = set()
        self.masks = MaskCache()
        self.cancelled = threading.Event()

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.dir, name))

    def want(self, name: str) -> None:
        if not self.track:
            return
        raw = bytes.fromhex(name[:24])
        if self.wanted.find(raw) < 0:
            self.wanted.add(raw)

    def request(
        self, source: Input, mask: Input | None = None, recipe: MaskRecipe | None = None
    ) -> tuple[str, str | None]:
        """The plain and the tinted thumbnail's names; scheduled if either is missing.

        With ``recipe`` (a generated mask, ``mask`` its file if it has one) the tint is the
        effective mask, rendered once per distinct source, recipe and file."""
        plain = thumb_name(source)
        masked = None
        if recipe is not None:
            inputs = (source, mask) if mask is not None else (source,)
            masked = thumb_name(*inputs, recipe=recipe.canonical())
        elif mask is not None:
            masked = thumb_name(source, mask)
        self.want(plain)
        if masked:
            self.want(masked)
        if (masked or plain) in self.by_name:
            return plain, masked  # asked for already: its task is queued or made
        missing = not self.exists(plain) or (masked is not None and not self.exists(masked))
        if missing and self.budget is not None and self.scheduled >= self.budget:
            self.deferred.add(masked or plain)
            return plain, masked
        if missing:
            self.scheduled += 1
            assert source.path is not None
            task = ThumbTask(
                plain,
                source.path,
                masked,
                mask.path if mask else None,
                "\0".join(mask.identity()) if mask else None,
                recipe,
            )
            self.tasks[masked or plain] = task
            self.by_name.setdefault(plain, task)
            if masked:
                self.by_name[masked] = task
        return plain, masked

    def run(self, workers: int = THUMB_WORKERS) -> None:
        if not self.tasks:
            return
        tasks = list(self.tasks.values())
        # Pillow releases the GIL while it decodes, resizes and encodes, so threads do scale.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for task, ok in zip(tasks, pool.map(self.make, tasks), strict=True):
                if not ok:
                    self.failed.add(task.plain)
                    if task.masked:
                        self.failed.add(task.masked)
        self.tasks.clear()

    def url(self, name: str | None) -> str | None:
        return None if name is None or name in self.failed else name

    def prune(self) -> None:
        """Drop our thumbnails that no job shows any more (replaced outputs, changed sources)."""
        if not self.dir.is_dir():
            return
        with os.scandir(self.dir) as entries:
            stale = [
                entry.name
                for entry in entries
                if THUMB_NAME.match(entry.name)
                and self.wanted.find(bytes.fromhex(entry.name[:24])) < 0
            ]
        for name in stale:
            (self.dir / name).unlink(missing_ok=True)

    def make(self, task: ThumbTask) -> bool:
        if self.cancelled.is_set():
            return True  # dropped, not failed: whoever needs it later makes it
        try:
            image, has_alpha = load_small(task.source)
            made = [] if self.exists(task.plain) else [(task.plain, image)]
            if task.masked and task.recipe is not None:
                alpha = self._effective(task, image.size)
                if alpha is not None:
                    made.append((task.masked, tint(image, has_alpha, alpha)))
            elif task.masked and task.mask and task.mask_id:
                alpha = self.masks.get(task.mask, task.mask_id, image.size)
                made.append((task.masked, tint(image, has_alpha, alpha)))
            for name, picture in made:
                self._save(name, picture)
        except Exception:  # an unreadable or unwritable image is a placeholder, never a crash
            return False
        return True

    def _effective(self, task: ThumbTask, size: tuple[int, int]) -> Image.Image | None:
        """The generated mask's tint at ``size``; None (and no tinted thumbnail) if it cannot
        be drawn: the page then shows the plain source."""
        assert task.recipe is not None and task.masked is not None
        try:
            return effective_mask(task.source, task.recipe, size).point(_ALPHA)
        except Exception:  # a mask file gone, a recipe the image no longer fits
            self.failed.add(task.masked)
            return None

    def _save(self, name: str, image: Image.Image) -> None:
        with atomic_file(self.dir / name) as handle:
            image.save(handle, "WEBP", quality=THUMB_QUALITY, method=0)  # fastest; still small


class ThumbnailPrefetcher:
    """Makes each started job's source thumbnails while the run goes on, on one thread.

    An event listener, like the ledger. The report written at the end of the run then finds them
    made (the same names, the same recipe). ``close()`` drops whatever is still queued and only
    waits for the one thumbnail in progress, so an interrupted run ends at once.
    """

    def __init__(self, out_dir: Path) -> None:
        self._thumbs = Thumbnailer(out_dir, track=False)
        self._stats: dict[str, os.stat_result | None] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnails")

    def _stat(self, path: str) -> os.stat_result | None:
        if path not in self._stats:
            if len(self._stats) >= STAT_CACHE:
                self._stats.clear()  # a catalog of distinct photos: each is asked about once
            self._stats[path] = stat_file(path)
        return self._stats[path]

    def __call__(self, event: Event) -> None:
        if not isinstance(event, JobStarted):
            return
        job = event.planned.job
        source = resolve_input(str(job.image), self._stat)
        mask = resolve_input(str(job.mask), self._stat) if job.mask else None
        if source.kind != "file" or not source.present:
            return
        present = mask if mask and mask.present else None
        recipe = job.mask_recipe
        if recipe is not None and job.mask is not None and present is None:
            recipe = None  # a modified file mask that is gone: nothing to draw
        self._thumbs.request(source, present, recipe)
        tasks = list(self._thumbs.tasks.values())
        self._thumbs.tasks.clear()
        self._thumbs.by_name.clear()  # neither served nor pruned here: nothing to keep
        for task in tasks:
            self._pool.submit(self._thumbs.make, task)

    def close(self, finish: bool = False) -> None:
        """Stop. Unless ``finish``, queued work is dropped (the report makes what is missing)."""
        if not finish:
            self._thumbs.cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=not finish)
