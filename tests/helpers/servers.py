"""Fixtures for the inputs tests: an S3-compatible server (moto's server mode) on 127.0.0.1.

Imported by the test modules that use them (``from tests.helpers.servers import s3_server``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto S3 server for the session (each test makes its own bucket): starting one per
    test cost ~1 s a test."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_server(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The moto S3 server's endpoint URL, exported as AWS_ENDPOINT_URL for this test."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    import fsspec
    import s3fs

    fsspec.config.conf.pop("s3", None)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield moto_endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


class ImageHost:
    """An aiohttp.web server on 127.0.0.1 in a thread: images, 404s, HTML, redirects."""

    def __init__(self) -> None:
        import asyncio
        import io
        import threading

        from aiohttp import web
        from PIL import Image

        def png(color: tuple[int, int, int], size: tuple[int, int] = (60, 40)) -> bytes:
            buffer = io.BytesIO()
            Image.new("RGB", size, color).save(buffer, format="PNG")
            return buffer.getvalue()

        self.images: dict[str, bytes] = {
            "a.png": png((200, 0, 0)),
            "tall.png": png((0, 0, 200), (40, 80)),
        }
        self.hits: dict[str, int] = {}
        self.png = png

        async def image(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits[name] = self.hits.get(name, 0) + 1
            if name not in self.images:
                return web.Response(status=404, text="not found")
            return web.Response(body=self.images[name], content_type="image/png")

        # /held/<name>: each request waits until ``hold_until`` requests are in flight (or a
        # few seconds), so a test sees how many fetches a client really keeps open at once.
        self.hold_until = 0
        self.in_flight = 0
        self.max_in_flight = 0
        arrived = asyncio.Event()

        async def held(request: web.Request) -> web.Response:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.in_flight >= self.hold_until:
                arrived.set()
            try:
                await asyncio.wait_for(arrived.wait(), 5)
            except TimeoutError:
                pass  # fewer came: the assertion on max_in_flight says so
            finally:
                self.in_flight -= 1
            return await image(request)

        async def html(_request: web.Request) -> web.Response:
            return web.Response(text="<html><body>Sign in</body></html>", content_type="text/html")

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(request.query["to"])

        app = web.Application()
        app.router.add_get("/img/{name}", image)
        app.router.add_get("/held/{name}", held)
        app.router.add_get("/page.jpg", html)
        app.router.add_get("/go", redirect)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        port = free_port()
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", port).start())
        self.base = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def stop(self) -> None:
        import asyncio

        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()
    try:
        yield host
    finally:
        host.stop()
