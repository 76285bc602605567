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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from pipeline.inputs import objectstore
from pipeline.inputs.cache import CachedInput, InputCache

FETCH_CONCURRENCY = 16
MAX_INPUT_BYTES = 50 * 1024 * 1024  # OpenAI's cap per image file
FETCH_RETRIES = 3
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
TRANSIENT = frozenset({408, 409, 425, 429})
_Sleep = Callable[[float], Awaitable[None]]


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


async def _fetch_one(
    session: aiohttp.ClientSession,
    url: str,
    cache: InputCache,
    options: FetchOptions,
    sleep: _Sleep,
) -> CachedInput | str:
    last = "could not be fetched"
    for attempt in range(options.retries + 1):
        if attempt:
            await sleep(options.backoff * 2 ** (attempt - 1))
        try:
            if objectstore.is_object_store(url):
                data = await asyncio.to_thread(objectstore.fetch_bytes, url)
                if len(data) > options.max_bytes:
                    return _too_large(options.max_bytes)
                return cache.store(url, data)
            return await _http(session, url, cache, options)
        except _Transient as exc:
            last = str(exc)
        except _Refused as exc:
            return str(exc)
        except FileNotFoundError:
            return "does not exist (404)"
        except objectstore.ObjectStoreError as exc:
            return str(exc)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            last = f"could not be fetched: {type(exc).__name__} {exc}".strip()
    return f"{last} (after {options.retries + 1} tries)"


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
