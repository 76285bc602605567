"""``pipeline review OUT``: the review page served on 127.0.0.1, with decisions recorded.

The same static files as ``report.html``, linked instead of inlined, and the same paged data:
``/api/data`` is the page's index (with the decisions that stand now, read from
``reviews.jsonl`` at each request), ``/api/chunk/<build>/<n>`` a chunk of jobs, and
``/api/decisions`` records approvals, rejections and picks (a product's header sends its
jobs with ``product``: those with nothing delivered yet are left out) as ``pipeline review``
does from the command line. The chunks are
built into a temporary folder when the ledger changed since the last build (a run going on), in
one pass over the ledger's compact fold (``page.ReportBuilder``), so a million-job folder is
served in the memory of that fold; the previous build's chunks stay until the next one, for a
page loaded just before. Thumbnails are made on first request (the static report makes them all
up front). Files are served from OUT only: a path that leaves it, a dot-folder other than
``.thumbs``, or the ledger's neighbours that are not images answer 404.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from pipeline.layout import LEDGER_NAME, REVIEWS_NAME, THUMBS_DIR
from pipeline.ledger.decisions import (
    DECISIONS,
    PICKED,
    read_decisions,
    record_decisions,
    record_picks,
)
from pipeline.review.page import (
    FolderChunks,
    JobLocator,
    ManifestJob,
    ReportBuilder,
    ReportIndex,
    render_page,
    safe_parts,
    static_text,
)
from pipeline.review.thumbs import THUMB_NAME, Thumbnailer

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
STATIC_TYPES = {"report.css": "text/css", "report.js": "text/javascript"}
MAX_BODY = 32 * 1024 * 1024  # a bulk decision over 100,000 jobs fits
BUILD_NAME = re.compile(r"^[0-9a-f]{8}$")
# A job whose current content can be decided as part of its product: it has images to judge.
DECIDABLE = frozenset({"succeeded", "partial"})
Signature = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """One decision of a request: approve, reject, or pick image ``index``."""

    job_id: str
    decision: str  # "approved", "rejected" or "picked"
    note: str = ""
    index: int | None = None  # a pick's image


class ReviewApp:
    """The aiohttp application around one output folder."""

    def __init__(
        self, out_dir: Path, manifest_jobs: Callable[[], Iterable[ManifestJob]] | None = None
    ) -> None:
        self.out_dir = out_dir
        self.root = os.path.realpath(out_dir)
        self.manifest_jobs = manifest_jobs
        self.thumbs: Thumbnailer | None = None
        self.reviews = out_dir / REVIEWS_NAME
        self._chunks_root = Path(tempfile.mkdtemp(prefix="pipeline-review-"))
        self._lock = threading.Lock()  # one build at a time; requests wait for it
        # (ledger signature, build name, index): rebuilt only when the ledger changed
        self._built: tuple[Signature, str, ReportIndex] | None = None
        self._previous: str | None = None
        self._body_cache: tuple[tuple[Signature, Signature], bytes] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/data", self.data)
        app.router.add_get("/api/chunk/{build}/{number}", self.chunk)
        app.router.add_post("/api/decisions", self.decisions)
        app.router.add_get("/{path:.+}", self.file)
        return app

    async def index(self, request: web.Request) -> web.Response:
        page = render_page(f"{self.out_dir.resolve().name} — review", None)
        return web.Response(text=page, content_type="text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_TYPES:
            raise web.HTTPNotFound()
        return web.Response(text=static_text(name), content_type=STATIC_TYPES[name])

    async def data(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self._body)
        return web.Response(body=body, content_type="application/json")

    async def chunk(self, request: web.Request) -> web.Response:
        build, number = request.match_info["build"], request.match_info["number"]
        if not BUILD_NAME.match(build) or not number.isdigit():
            raise web.HTTPNotFound()
        path = self._chunks_root / build / f"{int(number)}.json"
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            raise web.HTTPNotFound() from None  # a build older than the previous one
        return web.Response(body=body, content_type="application/json")

    def _body(self) -> bytes:
        """The index's JSON, kept while neither the ledger nor the decisions change."""
        signature = (_signature(self.out_dir / LEDGER_NAME), _signature(self.reviews))
        if self._body_cache is None or self._body_cache[0] != signature:
            _, build, index = self._current()
            data = index.with_decisions(read_decisions(self.out_dir))
            data["chunk_url"] = f"api/chunk/{build}/{{n}}"
            self._body_cache = (signature, orjson.dumps(data))
        return self._body_cache[1]

    def _current(self) -> tuple[Signature, str, ReportIndex]:
        """The latest build, made again when the ledger changed (one build at a time)."""
        with self._lock:
            signature = _signature(self.out_dir / LEDGER_NAME)
            if self._built is not None and self._built[0] == signature:
                return self._built
            build = secrets.token_hex(4)
            sink = FolderChunks(self._chunks_root / build)
            builder = ReportBuilder(self.out_dir, sink, make_thumbs=False)
            jobs = self.manifest_jobs() if self.manifest_jobs else None
            index = builder.build(jobs, live=True)
            self.thumbs = builder.thumbs
            if self._previous is not None:  # two builds ago: no page loaded it any more
                shutil.rmtree(self._chunks_root / self._previous, ignore_errors=True)
            self._previous = self._built[1] if self._built is not None else None
            self._built = (signature, build, index)
            return self._built

    def warm(self) -> None:
        """Build the page's data before the URL is printed, so the first open is fast."""
        self._body()

    def close(self) -> None:
        shutil.rmtree(self._chunks_root, ignore_errors=True)

    async def decisions(self, request: web.Request) -> web.Response:
        """``{"decisions": [...], "product": NAME?}``: one line per decision, or a 400 naming
        what is wrong and nothing recorded. With ``product`` (a product's header), the jobs
        whose current content cannot be decided (nothing delivered yet) are left out."""
        try:
            body = await request.json(loads=orjson.loads)
            entries = parse_decisions(body)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.Response(status=400, text=str(exc))
        _, _, index = await asyncio.to_thread(self._current)  # cached unless the run moved
        locator = index.locator
        skipped: list[str] = []
        if isinstance(body, dict) and body.get("product") is not None:
            entries, skipped = _decidable(entries, locator)
        problem = _problem(entries, locator)
        if problem is not None:
            return web.Response(status=400, text=problem)
        # The key recorded is the job's current one, whatever the page had loaded.
        keys = {entry.job_id: locator.key_of(entry.job_id)[1] for entry in entries}
        count = 0
        for note in dict.fromkeys(entry.note for entry in entries):
            batch = [(e.job_id, keys[e.job_id], e.decision) for e in entries if e.note == note]
            decided = [item for item in batch if item[2] != PICKED]
            count += await asyncio.to_thread(record_decisions, self.out_dir, decided, note)
            picks = [(e.job_id, keys[e.job_id], e.index or 0) for e in entries
                     if e.note == note and e.decision == PICKED]  # fmt: skip
            count += await asyncio.to_thread(record_picks, self.out_dir, picks, note)
        return web.json_response({"recorded": count, "skipped": skipped})

    async def file(self, request: web.Request) -> web.StreamResponse:
        parts = safe_parts(request.match_info["path"])
        if parts is None:
            raise web.HTTPNotFound()
        if parts[0] == THUMBS_DIR and len(parts) == 2 and THUMB_NAME.match(parts[1]):
            return await self._thumb(parts[1])
        if any(part.startswith(".") for part in parts):
            raise web.HTTPNotFound()  # .raw, .superseded, temporaries: not part of the page
        return self._served(os.path.join(self.root, *parts))

    async def _thumb(self, name: str) -> web.StreamResponse:
        path = os.path.join(self.root, THUMBS_DIR, name)
        if not os.path.isfile(path):
            thumbs = self.thumbs
            task = thumbs.by_name.get(name) if thumbs else None
            if thumbs is None or task is None:
                raise web.HTTPNotFound()
            thumbs.dir.mkdir(exist_ok=True)
            await asyncio.to_thread(thumbs.make, task)
        return self._served(path)

    def _served(self, path: str) -> web.StreamResponse:
        real = os.path.realpath(path)
        kind = IMAGE_TYPES.get(os.path.splitext(real)[1].lower())
        if kind is None or not real.startswith(self.root + os.sep) or not os.path.isfile(real):
            raise web.HTTPNotFound()
        return web.FileResponse(real, headers={"Content-Type": kind})


def _signature(path: Path) -> Signature:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_size, stat.st_mtime_ns)


def parse_decisions(body: object) -> list[Entry]:
    """``{"decisions": [{job_id, decision, note?, index?}, ...]}``: ``decision`` approved,
    rejected, or picked (with the image's ``index``)."""
    items = body.get("decisions") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError('expected {"decisions": [{"job_id": ..., "decision": ...}, ...]}')
    entries: list[Entry] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("job_id"), str):
            raise ValueError("every decision needs a job_id")
        decision = item.get("decision")
        if decision not in (*DECISIONS, PICKED):
            raise ValueError(f"decision must be one of {', '.join((*DECISIONS, PICKED))}")
        index = item.get("index")
        if decision == PICKED and (
            isinstance(index, bool) or not isinstance(index, int) or index < 0
        ):
            raise ValueError(f"a pick needs the image's index (0, 1, ...): {index!r}")
        note = item.get("note") if isinstance(item.get("note"), str) else ""
        picked = index if decision == PICKED else None
        entries.append(Entry(str(item["job_id"]), str(decision), str(note), picked))
    return entries


def _decidable(entries: list[Entry], locator: JobLocator) -> tuple[list[Entry], list[str]]:
    """A product's decisions split: those on jobs with images of their current content, and
    the ids of the others (pending, running, failed: nothing to judge)."""
    kept, skipped = [], []
    for entry in entries:
        facts = locator.status_of(entry.job_id)
        if facts is not None and facts[0] in DECIDABLE:
            kept.append(entry)
        else:
            skipped.append(entry.job_id)
    return kept, skipped


def _problem(entries: list[Entry], locator: JobLocator) -> str | None:
    """Why these decisions cannot be recorded (None: they can): an unknown id, a job both
    picked and rejected, or a pick of an image the job did not deliver."""
    unknown = [entry.job_id for entry in entries if not locator.key_of(entry.job_id)[0]]
    if unknown:
        return "unknown job ids: " + ", ".join(unknown[:20])
    picked = {entry.job_id for entry in entries if entry.decision == PICKED}
    both = sorted(picked & {e.job_id for e in entries if e.decision == "rejected"})
    if both:
        return "both picked and rejected: " + ", ".join(both[:20])
    for entry in entries:
        if entry.decision == PICKED:
            problem = pick_problem(entry.job_id, entry.index or 0, locator.status_of(entry.job_id))
            if problem is not None:
                return problem
    return None


def pick_problem(job_id: str, index: int, facts: tuple[str, int] | None) -> str | None:
    """Why image ``index`` cannot be picked (None: it can): a pick chooses among the images
    a succeeded job delivered (the rule of ``pipeline review --pick``)."""
    status, count = facts if facts is not None else ("pending", 0)
    if status != "succeeded":
        return f"{job_id} has not succeeded ({status}): no image to pick"
    if count < 2:
        return f"{job_id} has {count} image: nothing to pick"
    if index >= count:
        return f"{job_id} has images 0 to {count - 1}: no image {index}"
    return None


async def serve(
    out_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    manifest_jobs: Callable[[], Iterable[ManifestJob]] | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; ``ready`` gets the page's URL once the socket listens."""
    review = ReviewApp(out_dir, manifest_jobs)
    runner = web.AppRunner(review.app(), access_log=None)
    try:
        await asyncio.to_thread(review.warm)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        if ready is not None:
            ready(f"http://{host}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        review.close()
