"""The bodies the emulator answers with: AI records, error bodies and the CDN's HTML pages.

Pure functions of their arguments (no server state), so the server's routes stay about the
order of checks and the answers' shapes live here.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .signing import s3_error
from .validation import MODEL, ApiError

# What a FAILED/FAILURE record says in its responseObject.
RECORD_FAILURE_MESSAGE = "The model did not produce an image"

# A challenge page of the kind a CDN puts in front of an API: HTML, 403, nothing about the key.
CHALLENGE_PAGE = (
    '<!DOCTYPE html><html lang="en"><head><title>Just a moment...</title>'
    '<meta http-equiv="refresh" content="5"></head><body>'
    "<h1>Checking your browser before accessing api.1min.ai</h1>"
    "<p>This process is automatic. Please allow up to 5 seconds&hellip;</p>"
    "<p>Ray ID: <code>emulator</code></p></body></html>"
)


# The live API's errorCode for each status of its own errors (a refusal can name its own code).
LIVE_ERROR_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    402: "INSUFFICIENT_CREDITS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
}
# What the CDN's own error pages say, by status: 524 when the origin answered nothing within
# the CDN's patience, 520-522 and 502 when the connection to the origin failed.
CDN_ERRORS = {
    502: "Bad gateway",
    520: "Web server is returning an unknown error",
    521: "Web server is down",
    522: "Connection timed out",
    523: "Origin is unreachable",
    524: "A timeout occurred",
}


def iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def team_user(credit_limit: int, used_credit: int, now: str) -> dict[str, Any]:
    return {
        "teamId": "emulator-team",
        "userId": "emulator-user",
        "userName": "Emulator User",
        "userAvatar": None,
        "status": "ACTIVE",
        "role": "ADMIN",
        "creditLimit": credit_limit,
        "usedCredit": used_credit,
        "createdAt": "2025-01-01T00:00:00.000Z",
        "createdBy": "SYSTEM",
        "updatedAt": now,
        "updatedBy": "SYSTEM",
    }


def ai_record(
    *,
    record_id: str,
    feature_type: str,
    prompt_object: dict[str, Any],
    status: str,
    failed: bool,
    paths: list[str],
    temporary_url: str | None,
    team: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    """`{"aiRecord": ...}` as a feature call or a result poll answers it; `status` is the word."""
    response_object: dict[str, Any] = {}
    if failed:
        response_object = {"error": {"message": RECORD_FAILURE_MESSAGE}}
    return {
        "aiRecord": {
            "uuid": record_id,
            "userId": "emulator-user",
            "teamId": "emulator-team",
            "teamUser": team,
            "model": MODEL,
            "type": feature_type,
            "metadata": None,
            "rating": None,
            "feedback": None,
            "conversationId": None,
            "status": status,
            "createdAt": created_at,
            "aiRecordDetail": {
                "promptObject": prompt_object,
                "resultObject": paths,
                "responseObject": response_object,
            },
            "additionalData": None,
            "temporaryUrl": temporary_url,
        }
    }


def error_body(message: str, shape: str, status: int = 500) -> dict[str, Any]:
    """The message where error bodies carry it: `message`, `error.message`, `error`, or live."""
    if shape == "error.message":
        return {"error": {"message": message}}
    if shape == "error":
        return {"error": message}
    if shape == "live":
        return live_error_body(status, message, details=generic_details(status, message))
    return {"message": message}


def live_error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The live API's error body: errorCode, message, details (a JSON string), context."""
    body: dict[str, Any] = {
        "errorCode": code or LIVE_ERROR_CODES.get(status, "UNKNOWN_ERROR"),
        "message": message,
    }
    if details is not None:
        body["details"] = details
    body["context"] = {"requestId": str(uuid.uuid4()), "timestamp": iso_now(), **(context or {})}
    return body


def generic_details(status: int, message: str) -> str:
    """`details` of one of the API's own errors: its message again, as a JSON string."""
    return json.dumps({"statusCode": status, "message": message})


def provider_details(cause: str, cause_code: str) -> str:
    """`details` of a refusal by the provider behind the API: the provider's own error body."""
    error = {"message": cause, "type": "invalid_request_error", "param": None, "code": cause_code}
    return json.dumps({"error": error})


def api_error_response(
    error: ApiError, style: str, details_missing: bool, path: str
) -> web.Response:
    """An ApiError as the API answers it: `{"message"}`, or the live body (see error_body)."""
    if style == "live" or error.live:
        details = error.details
        if details is None and not details_missing:
            details = generic_details(error.status, error.message)
        body = live_error_body(
            error.status, error.message, code=error.code, details=details, context={"path": path}
        )
    else:
        body = {"message": error.message}
    return web.json_response(body, status=error.status, headers=error.headers)


def server_error(status: int, shape: str) -> web.Response:
    if status == 500:
        return web.json_response(error_body("Internal server error", shape, 500), status=500)
    # Gateways answer in HTML: a client must not assume every error body is JSON.
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}[status]
    html = (
        f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html")


def challenge_403() -> web.Response:
    """The CDN's HTML 403: transient (docs/api.md#cdn-in-front-of-the-api), unlike a 403 whose JSON
    speaks of the key."""
    return web.Response(status=403, text=CHALLENGE_PAGE, content_type="text/html")


def xml_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, text=s3_error(code, message), content_type="application/xml")


def cdn_error(status: int) -> web.Response:
    """An HTML error page of the CDN in front of the API (Cloudflare's 52x, or a 502)."""
    what = CDN_ERRORS[status]
    html = (
        f"<!DOCTYPE html><html><head><title>api.1min.ai | {status}: {what}</title></head><body>"
        f"<h1>{what}</h1><p>Error code {status}</p>"
        "<p>The web server reported an error; the request may have been processed.</p>"
        "<p>Ray ID: <code>emulator</code></p></body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html")
