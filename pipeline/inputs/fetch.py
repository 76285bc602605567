"""One fetcher for remote inputs: http(s) with aiohttp, object stores through fsspec.

Every URL is fetched once per run into the content-addressed cache (``cache.InputCache``),
concurrently (``concurrency``, default 16), with retries and backoff on transient errors
(408, 425, 429, 5xx, dropped connections, timeouts), a size cap, redirects followed by hand and
only to http(s). A failure is a sentence naming the URL's trouble (the caller adds the row).
A run always fetches again (the bytes may have changed: that is what keys a job), sending the
cached ETag / Last-Modified so an unchanged image answers 304 and is not downloaded twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp

from pipeline.api.retry import backoff, retry_loop
from pipeline.inputs import objectstore
from pipeline.inputs.cache import CachedInput, InputCache

FETCH_CONCURRENCY = 16
MAX_INPUT_BYTES = 50 * 1024 * 1024  # OpenAI's cap per image file
FETCH_RETRIES = 3
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
TRANSIENT = frozenset({408, 409, 425, 429})
LOOKAHEAD = 4  # prefetched() reads this many times ``concurrency`` jobs ahead of the checks
_Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")


class _Transient(Exception):
    pass


class _Refused(Exception):
    pass


@dataclass(frozen=True)
class FetchOptions:
    concurrency: int = FETCH_CONCURRENCY
    max_bytes: int = MAX_INPUT_BYTES
    retries: int = FETCH_RETRIES
    timeout: float = FETCH_TIMEOUT
    backoff: float = 0.5  # seconds, doubled per retry


def fetch_all(
    urls: Iterable[str],
    cache: InputCache,
    options: FetchOptions = FetchOptions(),
    sleep: _Sleep = asyncio.sleep,
) -> dict[str, CachedInput | str]:
    """Fetch every distinct URL (synchronously, for preflight): URL → cached input or reason."""
    return asyncio.run(fetch_all_async(urls, cache, options, sleep))


async def fetch_all_async(
    urls: Iterable[str],
    cache: InputCache,
    options: FetchOptions = FetchOptions(),
    sleep: _Sleep = asyncio.sleep,
) -> dict[str, CachedInput | str]:
    distinct = list(dict.fromkeys(urls))
    gate = asyncio.Semaphore(options.concurrency)
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(url: str) -> tuple[str, CachedInput | str]:
            async with gate:
                return url, await _fetch_one(session, url, cache, options, sleep)

        return dict(await asyncio.gather(*(one(url) for url in distinct)))


class Prefetcher:
    """Fetches URLs on an event loop of its own thread while the caller goes on checking.

    For a streaming pass (preflight reads each row once): ``submit`` the URLs of the rows
    coming next, ``result`` blocks only for the one needed now. At most ``concurrency``
    fetches run at once; each distinct URL is fetched once per Prefetcher. Use it as a
    context manager (``close`` stops the thread and drops what was not asked for).
    """

    def __init__(
        self,
        cache: InputCache,
        options: FetchOptions = FetchOptions(),
        sleep: _Sleep = asyncio.sleep,
    ) -> None:
        self._cache, self._options, self._sleep = cache, options, sleep
        self._futures: dict[str, Future[CachedInput | str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # started by the first URL
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gate = asyncio.Semaphore(options.concurrency)  # bound to the loop at first use

    def _start(self) -> asyncio.AbstractEventLoop:
        """The thread and its loop, on first use: a catalog of local files pays nothing."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="input-prefetch", daemon=True
            )
            self._thread.start()
            opened = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
            self._session = opened.result()
        return self._loop

    async def _open(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._options.timeout))

    @property
    def concurrency(self) -> int:
        return self._options.concurrency

    @property
    def submitted(self) -> int:
        """Distinct URLs started so far."""
        return len(self._futures)

    def submit(self, urls: Iterable[str]) -> None:
        """Start fetching these URLs (those not yet started); returns at once."""
        for url in urls:
            if url not in self._futures:
                loop = self._start()
                self._futures[url] = asyncio.run_coroutine_threadsafe(self._one(url), loop)

    def result(self, url: str) -> CachedInput | str:
        """The cached input or the reason it failed; fetched now if it was not submitted."""
        self.submit((url,))
        return self._futures[url].result()

    async def _one(self, url: str) -> CachedInput | str:
        assert self._session is not None
        async with self._gate:
            return await _fetch_one(self._session, url, self._cache, self._options, self._sleep)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for future in self._futures.values():
            future.cancel()  # a fetch nobody will ask for
        if self._session is not None:
            asyncio.run_coroutine_threadsafe(self._session.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def prefetched(
    items: Iterable[_T],
    urls_of: Callable[[_T], Iterable[str]],
    prefetcher: Prefetcher,
    window: int | None = None,
) -> Iterator[_T]:
    """``items`` in their order, each handed out only after the URLs of up to ``window``
    items after it were submitted: the fetches overlap the caller's work on earlier items,
    and at most ``window`` items are held (default ``LOOKAHEAD`` times the concurrency)."""
    ahead = window if window is not None else LOOKAHEAD * prefetcher.concurrency
    held: deque[_T] = deque()
    submit = prefetcher.submit
    for item in items:
        urls = urls_of(item)
        if urls:
            submit(urls)
        held.append(item)
        if len(held) > ahead:
            yield held.popleft()
    while held:
        yield held.popleft()


async def _fetch_one(
    session: aiohttp.ClientSession,
    url: str,
    cache: InputCache,
    options: FetchOptions,
    sleep: _Sleep,
) -> CachedInput | str:
    """The cached input, or why it cannot be had (a sentence); transient troubles are retried."""

    async def attempt(_n: int) -> CachedInput | str:
        try:
            if objectstore.is_object_store(url):
                data = await asyncio.to_thread(objectstore.fetch_bytes, url)
                if len(data) > options.max_bytes:
                    return _too_large(options.max_bytes)
                return cache.store(url, data)
            return await _http(session, url, cache, options)
        except _Refused as exc:
            return str(exc)
        except FileNotFoundError:
            return "does not exist (404)"
        except objectstore.ObjectStoreError as exc:
            return str(exc)
        except _Transient:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Transient(f"could not be fetched: {type(exc).__name__} {exc}".strip()) from exc

    tries = options.retries + 1
    try:
        return await retry_loop(
            attempt,
            tries=tries,
            delay=lambda n: backoff(n, options.backoff, options.backoff * 2.0**options.retries),
            retry_on=(_Transient,),
            sleep=sleep,
        )
    except _Transient as exc:
        return f"{exc} (after {tries} tries)"


async def _http(
    session: aiohttp.ClientSession, url: str, cache: InputCache, options: FetchOptions
) -> CachedInput:
    known = cache.lookup(url)
    headers = {}
    if known is not None and known.etag:
        headers["If-None-Match"] = known.etag
    if known is not None and known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    target = url
    for _hop in range(MAX_REDIRECTS + 1):
        async with session.get(target, headers=headers, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location", "")
                target = urljoin(target, location)
                if urlsplit(target).scheme.lower() not in ("http", "https"):
                    raise _Refused(f"redirects to {target!r}; only http(s) redirects are followed")
                continue
            if response.status == 304 and known is not None:
                return known
            if response.status == 404 or response.status == 410:
                raise _Refused(f"does not exist (HTTP {response.status})")
            if response.status in TRANSIENT or response.status >= 500:
                raise _Transient(f"answered HTTP {response.status}")
            if response.status >= 400:
                raise _Refused(f"was refused (HTTP {response.status})")
            if (response.content_length or 0) > options.max_bytes:
                raise _Refused(_too_large(options.max_bytes))
            data = await _read_capped(response, options.max_bytes)
            etag = response.headers.get("ETag")
            return cache.store(url, data, etag, response.headers.get("Last-Modified"))
    raise _Refused(f"redirects more than {MAX_REDIRECTS} times")


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > cap:
            raise _Refused(_too_large(cap))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(cap: int) -> str:
    return f"is larger than {cap // (1024 * 1024)} MB"
