"""The 1min.ai API client: one attempt per call, no sleeping, no retrying.

Retries live in the scheduler so that every attempt passes the rate gate again and is recorded.
The session and base URLs are injected (the httpx / openai-python seam), so tests and the demo
point the same code at the emulator. Every HTTP outcome becomes an exception of ``errors`` in
exactly one function, ``error_for_status``; transport failures in ``_transport_error``. A
feature POST whose answer is lost after its body was sent becomes ``AnswerLost`` there: it
may have been charged (docs/api.md#unknown-outcomes).

The key is sent only to the API host, never to a result URL, and never appears in a message.
Every request names the product in its ``User-Agent``: a CDN challenge wave once blocked plain
HTTP clients' defaults for days.
"""

from __future__ import annotations

import email.utils
import html
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import orjson

from pipeline import __version__
from pipeline.config import Endpoints, Timeouts
from pipeline.errors import (
    AnswerLost,
    ApiError,
    ApiTimeout,
    AssetNotFound,
    BadRequest,
    BadResponse,
    ConnectionLost,
    DownloadFailed,
    KeyRejected,
    OutOfCredits,
    RateLimited,
    RecordFailed,
    RecordUnknown,
    ServerError,
)
from pipeline.models import MODEL, Asset, FeatureResult, Job

USER_AGENT = f"onemin-pipeline/{__version__}"
TRANSIENT_STATUSES = frozenset({408, 409, 425})
# The CDN's own answers when the origin is slow or unreachable: the origin may still have made
# (and charged) the edit, so on a feature POST they are unknown outcomes whatever the body.
CDN_STATUSES = range(520, 525)
CREDIT_WORDS = ("credit", "balance", "quota exceeded", "insufficient funds")
# Hosts a temporaryUrl may point at besides the configured API and asset hosts: the provider
# signs S3 URLs. Anything else is never contacted; the asset host path is used instead.
TRUSTED_RESULT_SUFFIXES = (".amazonaws.com",)
CHUNK = 256 * 1024
REDACTED = "[API key]"
MESSAGE_MAX = 200  # an error message is cut to this many characters
# A 403 whose JSON message speaks of these is the key; any other 403 is not
# (docs/api.md#cdn-in-front-of-the-api).
KEY_WORDS = ("key", "auth", "permission", "token", "credential")
# The status words of records (docs/api.md#status-words), any letter case.
SUCCESS_STATUSES = frozenset({"SUCCESS", "SUCCEEDED", "COMPLETED", "DONE"})
FAILED_STATUSES = frozenset({"FAILURE", "FAILED", "ERROR", "CANCELLED", "CANCELED"})
UNFINISHED_STATUSES = frozenset({"PROCESSING", "PENDING", "QUEUED", "IN_PROGRESS", "RUNNING"})
# Any other word with a uuid is unfinished too: polled, never bought again (the scheduler logs
# it once). Treating an unknown word as unfinished costs at worst a processing timeout;
# treating it as a failure would pay for the edit twice.
DETAILS_DEPTH = 4  # JSON strings inside JSON strings in `details`: unwrapped this deep at most


class BodySink(Protocol):
    """Where a download's body goes instead of straight into the file (``store.verify``)."""

    def write(self, data: bytes) -> object: ...
    def finish(self) -> None: ...


SinkFactory = Callable[[BinaryIO], BodySink]  # given the open file, returns what to write to
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def error_for_status(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    json_body: bool = True,
    context: str = "",
    body_sent: bool = False,
) -> ApiError:
    """Map one non-2xx API answer to the error tree (docs/api.md#error-classification). The
    only such mapping.

    ``json_body``: the body was a JSON object (an HTML page or an empty body is not): a 403
    without one comes from a CDN challenge in front of the API, not from the API, so it is
    transient rather than a rejected key; a 5xx without one is the CDN's, not the origin's.
    ``body_sent``: the answer is a feature POST's: a 520-524 or an HTML 5xx then says nothing
    of whether the origin made the edit (an unknown outcome). ``context`` (what was asked, e.g.
    the URL) goes into the message but never into the classification. No word of a 4xx body
    makes it transient: only its status does.
    """
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    text = f"{context} {text}" if context else text
    lowered = message.lower()
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("Retry-After"))
        return RateLimited(text, status, retry_after=retry_after)
    if body_sent and (status in CDN_STATUSES or (status >= 500 and not json_body)):
        return AnswerLost(
            f"{text} (the edit may have been made and charged)", status, seen="server_error"
        )
    if status in TRANSIENT_STATUSES or status >= 500:
        return ServerError(text, status)
    if status == 403 and not json_body:
        return ServerError(f"{text} (not from the API: retried)", status)
    if status == 401 or (status == 403 and any(word in lowered for word in KEY_WORDS)):
        return KeyRejected(f"the API rejected the key ({text})", status)
    if status == 402 or any(word in lowered for word in CREDIT_WORDS):
        return OutOfCredits(f"out of credits ({text})", status)
    if "asset" in lowered and ("not found" in lowered or "unknown" in lowered):
        return AssetNotFound(text, status)
    return BadRequest(text, status)


def _transport_error(exc: BaseException, what: str, body_sent: bool = False) -> ApiError:
    """A failure with no HTTP answer. ``body_sent``: a feature POST whose connection was made:
    from then on the request may have reached the origin, so a timeout or a dropped connection
    is an unknown outcome; a connection never made sent nothing and is plainly transient."""
    never_connected = isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    lost = body_sent and not never_connected
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        if lost:
            return AnswerLost(
                f"{what}: no answer in time (the edit may have been made)", seen="timeout"
            )
        return ApiTimeout(f"{what}: no answer in time")
    if lost:
        name = type(exc).__name__
        return AnswerLost(f"{what}: connection lost after sending ({name})", seen="connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return BadResponse(f"{what}: incomplete body ({type(exc).__name__})")
    return ConnectionLost(f"{what}: connection failed ({type(exc).__name__})")


def _short(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1].rstrip() + "…"


def html_text(text: str) -> str:
    """The readable text of an HTML page (scripts and styles dropped), whitespace collapsed."""
    return html.unescape(_TAG.sub(" ", text))


def error_text(body: bytes) -> tuple[str, bool]:
    """The server's own words from an error body, short and printable, and whether the body
    was a JSON object. The message is at ``message``, ``error.message`` or ``error``; a live
    body with an ``errorCode`` reads ``errorCode: <the innermost message in details, else
    message>``, because its canned message ("busy, try again shortly") hides the cause."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[: 64 * 1024].decode("utf-8", "replace")
        return _short(html_text(text) if "<" in text else text), False
    if not isinstance(data, dict):
        return _short(str(data)), False
    code = data.get("errorCode")
    message = _message_of(data)
    if isinstance(code, str) and code.strip():
        cause = _innermost(data.get("details"), DETAILS_DEPTH) or message
        return _short(f"{code.strip()}: {cause}" if cause else code.strip()), True
    return _short(message if message is not None else str(data)), True


def _message_of(data: dict[str, Any]) -> str | None:
    """The message of one error object: ``message``, ``error.message``, ``error``, ``detail``."""
    for name in ("message", "error", "detail"):
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return str(value["message"])
    return None


def _innermost(details: Any, depth: int) -> str | None:
    """The deepest message in ``details``: often a JSON string holding the provider's own error
    body, whose message may itself be JSON. None when it holds no message."""
    if depth <= 0 or details is None:
        return None
    if isinstance(details, str):
        text = details.strip()
        if not text.startswith(("{", "[", '"')):
            return text or None
        try:
            details = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(details, str):
            return _innermost(details, depth - 1) or details
    if isinstance(details, list):
        found = (_innermost(item, depth - 1) for item in details)
        return next((message for message in found if message), None)
    if not isinstance(details, dict):
        return None
    message = _message_of(details)
    nested = details.get("details")
    deeper = _innermost(message, depth - 1) if message else None
    return _innermost(nested, depth - 1) or deeper or message


def _error_message(body: bytes) -> str:
    return error_text(body)[0]


def public_url(url: str) -> str:
    """A URL fit for a message: no query or fragment (signatures, tokens), no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _dig(data: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def parse_upload(data: Any) -> str:
    path = _dig(data, "fileContent", "path") or _dig(data, "asset", "key")
    if not isinstance(path, str) or not path:
        raise BadResponse("upload answer has no fileContent.path nor asset.key")
    return path


def _credit(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def parse_feature(data: Any, what: str = "feature answer") -> FeatureResult:
    """A feature answer (or a poll answer) as a FeatureResult; ``finished`` False while the
    record is still processing. FAILURE/FAILED raise RecordFailed (retry buys again: right,
    the failed record produced nothing)."""
    record = _dig(data, "aiRecord")
    if not isinstance(record, dict):
        raise BadResponse(f"{what} has no aiRecord")
    status = record.get("status")
    status = status.upper() if isinstance(status, str) else ""
    raw_uuid = record.get("uuid")
    uuid = raw_uuid if isinstance(raw_uuid, str) else ""
    if status in FAILED_STATUSES:
        raise RecordFailed(f"aiRecord.status is {status!r} (record {uuid or 'unknown'})")
    temporary_url = record.get("temporaryUrl")
    used = _credit(_dig(record, "teamUser", "usedCredit"))
    limit = _credit(_dig(record, "teamUser", "creditLimit"))
    if status not in SUCCESS_STATUSES:
        if not uuid:
            raise BadResponse(f"{what}: record {status or 'without status'} has no uuid to poll")
        return FeatureResult(uuid, (), None, used, limit, finished=False, status=status)
    paths = _dig(record, "aiRecordDetail", "resultObject")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise BadResponse("aiRecord.aiRecordDetail.resultObject lists no result paths")
    return FeatureResult(
        uuid=uuid,
        result_paths=tuple(paths),
        temporary_url=temporary_url if isinstance(temporary_url, str) else None,
        used_credit=used,
        credit_limit=limit,
        status=status,
    )


def known_status(word: str) -> bool:
    """Whether a record's status word is one the API is known to use (any other is treated as
    unfinished, and worth a line in the log)."""
    upper = word.upper()
    return upper in SUCCESS_STATUSES or upper in FAILED_STATUSES or upper in UNFINISHED_STATUSES


def parse_poll(data: Any, uuid: str) -> FeatureResult:
    if isinstance(data, dict) and "aiRecord" in data and data["aiRecord"] is None:
        raise RecordUnknown(f"the API does not know record {uuid} (results endpoint: null)")
    result = parse_feature(data, f"poll of record {uuid}")
    return result if result.uuid else replace(result, uuid=uuid)


class OneMinClient:
    """Upload, edit and fetch against the 1min.ai API (or the emulator), one attempt each."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Endpoints,
        api_key: str,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._session = session
        self._endpoints = endpoints
        self._key = api_key
        self._timeouts = timeouts or Timeouts()
        self._trusted_hosts = {
            urlsplit(endpoints.api_base).hostname,
            urlsplit(endpoints.asset_base).hostname,
        }
        # The live result bucket is private: only a record's temporaryUrl (its first result)
        # is known to work. The asset host is used once it was seen to serve an unsigned read
        # of one of our uploads (``serves_unsigned``); until then it is not even tried.
        self.unsigned_reads = False

    def __repr__(self) -> str:  # the default repr would be harmless, but be explicit: no key
        return f"OneMinClient(api_base={self._endpoints.api_base!r})"

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=self._timeouts.connect)

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: str,
        what: str,
        total: float,
        *,
        body_sent: bool = False,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        headers = {"User-Agent": USER_AGENT, **(headers or {})}
        try:
            async with self._session.request(
                method,
                url,
                timeout=self._timeout(total),
                allow_redirects=False,
                headers=headers,
                **kwargs,
            ) as response:
                yield response
        except ApiError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc, what, body_sent) from exc

    async def _read_limited(self, response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        if response.content_length is not None and response.content_length > limit:
            raise BadResponse(f"{what}: answer of {response.content_length} bytes is too large")
        body = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                raise BadResponse(f"{what}: answer larger than {limit} bytes")
        return bytes(body)

    async def _api_json(
        self, method: str, route: str, what: str, total: float, body_sent: bool = False, **kw: Any
    ) -> Any:
        """One API-host request. ``body_sent``: a feature POST, whose lost answer may have
        been charged (see ``error_for_status``)."""
        headers = {"API-KEY": self._key}
        url = f"{self._endpoints.api_base}{route}"
        async with self._request(
            method, url, what, total, body_sent=body_sent, headers=headers, **kw
        ) as response:
            body = await self._read_limited(response, self._timeouts.max_json_bytes, what)
            if response.status >= 300:
                message, json_body = self._redacted(body)
                raise error_for_status(
                    response.status,
                    message,
                    response.headers,
                    json_body=json_body,
                    body_sent=body_sent,
                )
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadResponse(f"{what}: malformed JSON in a {response.status} answer") from exc

    def _redacted(self, body: bytes) -> tuple[str, bool]:
        """The server's error message without our key: servers and proxies quote requests back
        ("invalid key sk-...", a 400 echoing every header), and the message goes to the ledger,
        the summary and the terminal. Replaced in the raw bytes, before the message is cut to
        length (a cut could leave part of the key), and again after JSON decoding (escapes)."""
        if not self._key:  # replacing "" would insert the marker between every character
            return error_text(body)
        message, json_body = error_text(body.replace(self._key.encode(), REDACTED.encode()))
        return message.replace(self._key, REDACTED), json_body

    async def upload_asset(self, data: bytes, filename: str, content_type: str) -> Asset:
        form = aiohttp.FormData()
        form.add_field("asset", data, filename=filename, content_type=content_type)
        answer = await self._api_json(
            "POST", "/api/assets", "upload", self._timeouts.upload, data=form
        )
        return Asset(path=parse_upload(answer))

    def feature_body(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> dict[str, Any]:
        prompt_object: dict[str, Any] = {"imageUrl": image_path}
        if mask_path is not None:
            prompt_object["maskUrl"] = mask_path
        prompt_object.update(job.parameters())
        body: dict[str, Any] = {"type": job.feature.value, "model": MODEL}
        if asynchronous:
            # Top level, beside type (docs/api.md#unfinished-records): the answer is PROCESSING.
            body["async"] = True
        body["promptObject"] = prompt_object
        return body

    async def run_feature(
        self, job: Job, image_path: str, mask_path: str | None, *, asynchronous: bool = False
    ) -> FeatureResult:
        """One feature call. The answer may be unfinished (``finished`` False): poll it."""
        body = self.feature_body(job, image_path, mask_path, asynchronous=asynchronous)
        answer = await self._api_json(
            "POST", "/api/features", "feature call", self._timeouts.feature, True, json=body
        )
        return parse_feature(answer)

    async def poll_result(self, uuid: str) -> FeatureResult:
        """One look at a record: ``GET /api/results/{uuid}``. Unfinished, finished, or raises
        RecordFailed (FAILURE) / RecordUnknown (``{"aiRecord": null}``)."""
        route = f"/api/results/{quote(uuid, safe='')}"
        answer = await self._api_json("GET", route, "poll", self._timeouts.poll)
        return parse_poll(answer, uuid)

    def asset_url(self, path: str) -> str:
        return f"{self._endpoints.asset_base}/{path.lstrip('/')}"

    def result_urls(self, result: FeatureResult, index: int) -> list[str]:
        """Where result ``index`` can be fetched, best first: the signed URL (the first result
        only), then the asset host if it serves unsigned reads."""
        urls = []
        if index == 0 and result.temporary_url and self._trusted(result.temporary_url):
            urls.append(result.temporary_url)
        if self.unsigned_reads:
            urls.append(self.asset_url(result.result_paths[index]))
        return urls

    async def serves_unsigned(self, path: str) -> bool:
        """Whether the asset host serves an unsigned read of ``path`` (one of our uploads): one
        GET, no key, not an API-host request; its answer's status and type say it, the body is
        not read. An image is a yes; a refusal (any 4xx) or anything else is a no; a transient
        failure (an outage) raises, for the caller to try again or to take as a no (the cost of
        a wrong no is more calls for the same credits; of a wrong yes, images paid and never
        fetched). A yes is remembered: ``result_urls`` uses the asset host from then on."""
        url = self.asset_url(path)
        what = f"asset host check {public_url(url)}"
        async with self._request("GET", url, what, self._timeouts.download) as response:
            if response.status >= 500 or response.status in TRANSIENT_STATUSES:
                raise error_for_status(response.status, "", response.headers, json_body=False)
            served = response.status == 200 and response.content_type.startswith("image/")
        self.unsigned_reads = served
        return served

    def _trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https"):
            return False
        return host in self._trusted_hosts or host.endswith(TRUSTED_RESULT_SUFFIXES)

    async def fetch_result(
        self, result: FeatureResult, index: int, dest: Path, *, sink: SinkFactory | None = None
    ) -> int:
        """Stream result ``index`` into ``dest``; try every URL before giving up. Never re-runs
        the feature.

        Raises the error of the last URL that failed in a way worth retrying (transient, or
        ``BadResponse``); ``DownloadFailed`` when no URL may serve it (a private bucket holds
        every result but the first) or every one refused it (401, 403, 404, 410: a signature
        expired or an object unknown): polling the record again gives a fresh ``temporaryUrl``
        for the first result; the others cannot be had from this record.
        """
        urls = self.result_urls(result, index)
        if not urls:
            raise DownloadFailed(
                f"result {index} of record {result.uuid}: no URL serves it (the asset host "
                "serves no unsigned reads; temporaryUrl signs the first result only)"
            )
        failures: list[ApiError] = []
        for url in urls:
            try:
                return await self.download(url, dest, "result download", sink=sink)
            except ApiError as exc:
                failures.append(exc)
        reasons = "; ".join(str(f) for f in failures)
        status = failures[-1].http_status
        if all(isinstance(f, BadRequest) for f in failures):
            raise DownloadFailed(f"result {index} refused by every URL: {reasons}", status)
        raise next(f for f in reversed(failures) if not isinstance(f, BadRequest))

    async def download(
        self, url: str, dest: Path, what: str = "download", *, sink: SinkFactory | None = None
    ) -> int:
        """GET ``url`` into ``dest`` (no key sent), checking size and completeness. Every error
        names the URL, without its query (signatures and tokens stay out of messages).
        ``sink``: the body passes through it on its way to the file (checked while it streams).
        Returns the bytes received."""
        limit = self._timeouts.max_download_bytes
        what = f"{what} {public_url(url)}"
        async with self._request("GET", url, what, self._timeouts.download) as response:
            if response.status != 200:
                body = await self._read_limited(response, 64 * 1024, what)
                status = response.status
                if status in (401, 403, 404, 410):  # expired signature or missing object
                    raise BadRequest(f"{what} HTTP {status}: {_error_message(body)}", status)
                message, json_body = error_text(body)
                raise error_for_status(
                    status, message, response.headers, json_body=json_body, context=what
                )
            expected = response.content_length
            if expected is not None and expected > limit:
                raise BadResponse(f"{what}: {expected} bytes is more than the {limit} allowed")
            written = 0
            with dest.open("wb") as handle:
                stream = None if sink is None else sink(handle)
                write = handle.write if stream is None else stream.write
                async for chunk in response.content.iter_chunked(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise BadResponse(f"{what}: more than the {limit} bytes allowed")
                    write(chunk)
                if stream is not None:
                    stream.finish()
        if written == 0 or (expected is not None and written != expected):
            raise BadResponse(f"{what}: truncated ({written} of {expected or '?'} bytes)")
        return written
