"""S3-style presigned URLs for `temporaryUrl`, and the XML errors the asset store answers."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

# Seven days, like the real presigned URLs (X-Amz-Expires=604800).
EXPIRES_SECONDS = 604_800
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
BUCKET = "asset.1min.ai"


def _signature(secret: bytes, path: str, amz_date: str, expires: str, token: str) -> str:
    # Date, lifetime and token are signed too, so a client cannot extend or forge a URL by
    # editing its query; the path is signed, so a URL reads the one object it was made for.
    message = f"{path}\n{amz_date}\n{expires}\n{token}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def presign(base: str, path: str, secret: bytes, now: datetime | None = None) -> str:
    """`{base}/s3/asset.1min.ai/<path>?X-Amz-...` valid for EXPIRES_SECONDS from `now`.

    Each call signs anew (a fresh session token, as presigning with temporary credentials
    gives), so two answers never carry the same URL, even within one second.
    """
    moment = now or datetime.now(UTC)
    amz_date = moment.strftime(_DATE_FORMAT)
    expires = str(EXPIRES_SECONDS)
    token = secrets.token_urlsafe(24)
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
        "X-Amz-Credential": f"EMULATOR/{amz_date[:8]}/us-east-1/s3/aws4_request",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": expires,
        "X-Amz-Security-Token": token,
        "X-Amz-Signature": _signature(secret, path, amz_date, expires, token),
        "X-Amz-SignedHeaders": "host",
        "x-amz-checksum-mode": "ENABLED",
        "x-id": "GetObject",
    }
    return f"{base}/s3/{BUCKET}/{quote(path, safe='/')}?{urlencode(query)}"


def check_presigned(
    path: str, query: dict[str, str], secret: bytes, now: datetime | None = None
) -> str | None:
    """None if the URL is valid, else the reason for an AccessDenied answer."""
    amz_date = query.get("X-Amz-Date", "")
    expires = query.get("X-Amz-Expires", "")
    signature = query.get("X-Amz-Signature", "")
    if not (amz_date and expires and signature):
        return "Query-string authentication requires the Signature, Expires and Date parameters"
    token = query.get("X-Amz-Security-Token", "")
    expected = _signature(secret, path, amz_date, expires, token)
    if not hmac.compare_digest(expected, signature):
        return "The request signature we calculated does not match the signature you provided"
    try:
        signed_at = datetime.strptime(amz_date, _DATE_FORMAT).replace(tzinfo=UTC)
        lifetime = timedelta(seconds=int(expires))
    except ValueError:
        return "X-Amz-Date or X-Amz-Expires is malformed"
    if (now or datetime.now(UTC)) > signed_at + lifetime:
        return "Request has expired"
    return None


def s3_error(code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
    )
