"""The bodies the emulator answers with: AI records, error bodies and the CDN's challenge page.

Pure functions of their arguments (no server state), so the server's routes stay about the
order of checks and the answers' shapes live here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .signing import s3_error
from .validation import MODEL

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
    paths: list[str],
    temporary_url: str | None,
    team: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    """`{"aiRecord": ...}` as a feature call or a result poll answers it."""
    response_object: dict[str, Any] = {}
    if status not in ("SUCCESS", "PROCESSING"):
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


def error_body(message: str, shape: str) -> dict[str, Any]:
    """The message where SPEC 1a says error bodies carry it: `message`, `error.message`, `error`."""
    if shape == "error.message":
        return {"error": {"message": message}}
    if shape == "error":
        return {"error": message}
    return {"message": message}


def server_error(status: int, shape: str) -> web.Response:
    if status == 500:
        return web.json_response(error_body("Internal server error", shape), status=500)
    # Gateways answer in HTML: a client must not assume every error body is JSON.
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}[status]
    html = (
        f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html")


def challenge_403() -> web.Response:
    """The CDN's HTML 403: transient (SPEC 1a), unlike a 403 whose JSON speaks of the key."""
    return web.Response(status=403, text=CHALLENGE_PAGE, content_type="text/html")


def xml_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, text=s3_error(code, message), content_type="application/xml")
