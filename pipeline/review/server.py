"""``pipeline review OUT``: the review page served on 127.0.0.1, with decisions recorded.

The same static files as ``report.html``, linked instead of inlined; the payload is built from the
ledger and ``reviews.jsonl`` at each request, so a reload shows decisions and a run's progress.
Thumbnails are made on first request (the static report makes them all up front). Files are served
from OUT only: a path that leaves it, a dot-folder other than ``.thumbs``, or the ledger's
neighbours that are not images answer 404.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pipeline.layout import LEDGER_NAME, REVIEWS_NAME, THUMBS_DIR
from pipeline.ledger.decisions import DECISIONS, read_decisions, record_decisions
from pipeline.review.page import (
    ManifestJob,
    apply_decisions,
    build_payload,
    render_page,
    safe_parts,
    static_text,
    wire_payload,
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


class ReviewApp:
    """The aiohttp application around one output folder."""

    def __init__(
        self, out_dir: Path, manifest_jobs: Callable[[], Iterable[ManifestJob]] | None = None
    ) -> None:
        self.out_dir = out_dir
        self.root = os.path.realpath(out_dir)
        self.manifest_jobs = manifest_jobs
        self.thumbs: Thumbnailer | None = None
        self.keys: dict[str, str | None] = {}  # job id -> current content key
        # (ledger signature, payload, its wire form): rebuilt only when the ledger changed (a
        # run going on); the JSON sent, only when the ledger or reviews.jsonl changed.
        self._cached: tuple[tuple[int, int], dict[str, Any], dict[str, Any]] | None = None
        self._body_cache: tuple[tuple[tuple[int, int], ...], bytes] | None = None
        self.reviews = out_dir / REVIEWS_NAME

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/data", self.data)
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

    def _body(self) -> bytes:
        """The wire payload's JSON, kept while neither the ledger nor the decisions change."""
        signature = (_signature(self.out_dir / LEDGER_NAME), _signature(self.reviews))
        if self._body_cache is None or self._body_cache[0] != signature:
            self._body_cache = (signature, orjson.dumps(self._wire()))
        return self._body_cache[1]

    def _payload(self) -> dict[str, Any]:
        return self._current()[0]

    def _wire(self) -> dict[str, Any]:
        payload, wire = self._current()
        # Decisions change without the ledger: copy them into the cached wire rows (the
        # header's counts are the same dict in both).
        mine, theirs = payload["fields"].index("decision"), wire["fields"].index("decision")
        for row, sent in zip(payload["jobs"], wire["jobs"], strict=True):
            sent[theirs] = row[mine]
        return wire

    def _current(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The page's payload and wire form, decisions applied as they stand now."""
        signature = _signature(self.out_dir / LEDGER_NAME)
        if self._cached is not None and self._cached[0] == signature:
            _, payload, wire = self._cached
            apply_decisions(payload, read_decisions(self.out_dir))
            return payload, wire
        jobs = self.manifest_jobs() if self.manifest_jobs else None
        payload, thumbs = build_payload(self.out_dir, jobs, make_thumbs=False, live=True)
        self.thumbs = thumbs
        self.keys = {row[0]: row[13] for row in payload["jobs"]}
        wire = wire_payload(payload)
        self._cached = (signature, payload, wire)
        return payload, wire

    def warm(self) -> None:
        """Build the page's data before the URL is printed, so the first open is fast."""
        self._body()

    async def decisions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=orjson.loads)
            entries = parse_decisions(body)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.Response(status=400, text=str(exc))
        await asyncio.to_thread(self._payload)  # the current keys (cached unless the run moved)
        unknown = [job_id for job_id, _, _, _ in entries if job_id not in self.keys]
        if unknown:
            return web.Response(status=400, text="unknown job ids: " + ", ".join(unknown[:20]))
        count = 0
        for note in {entry[3] for entry in entries}:
            # The key recorded is the job's current one, whatever the page had loaded.
            batch = [(j, self.keys[j], d) for j, _, d, n in entries if n == note]
            count += await asyncio.to_thread(record_decisions, self.out_dir, batch, note)
        return web.json_response({"recorded": count})

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


def _signature(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_size, stat.st_mtime_ns)


def parse_decisions(body: object) -> list[tuple[str, str | None, str, str]]:
    """``{"decisions": [{job_id, decision, note?}, ...]}`` -> (job_id, key, decision, note)."""
    items = body.get("decisions") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError('expected {"decisions": [{"job_id": ..., "decision": ...}, ...]}')
    entries: list[tuple[str, str | None, str, str]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("job_id"), str):
            raise ValueError("every decision needs a job_id")
        if item.get("decision") not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
        note = item.get("note") if isinstance(item.get("note"), str) else ""
        entries.append((str(item["job_id"]), None, str(item["decision"]), str(note)))
    return entries


async def serve(
    out_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    manifest_jobs: Callable[[], Iterable[ManifestJob]] | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; ``ready`` gets the page's URL once the socket listens."""
    review = ReviewApp(out_dir, manifest_jobs)
    await asyncio.to_thread(review.warm)
    runner = web.AppRunner(review.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        if ready is not None:
            ready(f"http://{host}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
