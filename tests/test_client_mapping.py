"""HTTP answers → the error tree, in the one function that does it
(docs/api.md#error-classification)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest

from pipeline.api.client import (
    error_for_status,
    error_text,
    known_status,
    parse_feature,
    parse_poll,
    parse_retry_after,
    parse_upload,
    public_url,
)
from pipeline.errors import (
    AssetNotFound,
    BadRequest,
    BadResponse,
    KeyRejected,
    OutOfCredits,
    RateLimited,
    RecordFailed,
    RecordUnknown,
    RunFatal,
    ServerError,
    TransientError,
)


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (429, "Too many requests", RateLimited),
        (408, "", ServerError),
        (409, "", ServerError),
        (425, "", ServerError),
        (500, "boom", ServerError),
        (502, "", ServerError),
        (503, "", ServerError),
        (504, "", ServerError),
        (401, "Invalid API key", KeyRejected),
        (403, "Invalid API key", KeyRejected),
        (403, "not authorized", KeyRejected),
        (403, "Forbidden", BadRequest),  # JSON, but not about the key: this job is wrong
        (402, "Payment required", OutOfCredits),
        (400, "Insufficient credit balance", OutOfCredits),
        (401, "credit", KeyRejected),  # 401 is the key whatever the words
        (403, "credit", OutOfCredits),
        (422, "your balance is too low", OutOfCredits),
        (404, "imageUrl: asset not found: x.png", AssetNotFound),
        (400, "prompt: must be 1 to 4000 characters", BadRequest),
        (404, "Not Found", BadRequest),
        (413, "too large", BadRequest),
    ],
)
def test_status_mapping(status: int, message: str, expected: type) -> None:
    error = error_for_status(status, message)
    assert type(error) is expected
    assert error.http_status == status


def test_transient_and_run_fatal_branches() -> None:
    assert isinstance(error_for_status(503, ""), TransientError)
    assert isinstance(error_for_status(401, ""), RunFatal)
    assert isinstance(error_for_status(402, ""), RunFatal)


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=lambda: now.timestamp()) == pytest.approx(30)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=lambda: now.timestamp()) == 0.0


def test_429_carries_retry_after() -> None:
    error = error_for_status(429, "slow down", {"Retry-After": "12"})
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12.0


def test_parse_upload_both_places() -> None:
    assert parse_upload({"fileContent": {"path": "a/b.png"}}) == "a/b.png"
    assert parse_upload({"asset": {"key": "a/c.png"}}) == "a/c.png"
    with pytest.raises(BadResponse):
        parse_upload({"fileContent": {}})


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "uuid": "u-1",
        "status": "SUCCESS",
        "teamUser": {"usedCredit": 10, "creditLimit": 100},
        "aiRecordDetail": {"resultObject": ["r/0.png", "r/1.png"]},
        "temporaryUrl": "https://s3.example/r/0.png?sig",
    }
    base.update(overrides)
    return {"aiRecord": base}


def test_parse_feature_success() -> None:
    result = parse_feature(record())
    assert result.uuid == "u-1"
    assert result.result_paths == ("r/0.png", "r/1.png")
    assert result.used_credit == 10 and result.credit_limit == 100


def test_parse_feature_failed_record_is_retryable() -> None:
    with pytest.raises(RecordFailed):
        parse_feature(record(status="FAILED"))


@pytest.mark.parametrize(
    "data",
    [{}, {"aiRecord": None}, record(aiRecordDetail={"resultObject": []}), record(aiRecordDetail=3)],
)
def test_parse_feature_incomplete_is_bad_response(data: dict[str, object]) -> None:
    with pytest.raises(BadResponse):
        parse_feature(data)


@pytest.mark.parametrize("status", ["PROCESSING", "PENDING", "QUEUED", "RUNNING", "processing"])
def test_parse_feature_unfinished_is_not_a_failure(status: str) -> None:
    result = parse_feature(record(status=status, aiRecordDetail={"resultObject": []}))
    assert not result.finished and result.result_paths == () and result.uuid == "u-1"
    assert result.status == status.upper()


def test_parse_feature_unfinished_without_uuid_cannot_be_polled() -> None:
    with pytest.raises(BadResponse):
        parse_feature(record(status="PROCESSING", uuid=None))


@pytest.mark.parametrize("status", ["FAILURE", "FAILED"])
def test_parse_feature_failure_words(status: str) -> None:
    with pytest.raises(RecordFailed):
        parse_feature(record(status=status))


def test_parse_poll_null_record_is_unknown() -> None:
    with pytest.raises(RecordUnknown, match="u-9"):
        parse_poll({"aiRecord": None}, "u-9")
    assert parse_poll(record(), "u-1").finished


@pytest.mark.parametrize(
    ("body", "expected", "is_json"),
    [
        (b'{"message": "Invalid API key"}', "Invalid API key", True),
        (b'{"error": {"message": "quota gone"}}', "quota gone", True),
        (b'{"error": "bad prompt"}', "bad prompt", True),
        (
            b"<html><head><style>p{}</style><title>Attention</title></head>"
            b"<body><h1>Just a moment&hellip;</h1>\n\n  <p>Checking   your browser</p>"
            b"</body></html>",
            "Attention Just a moment… Checking your browser",
            False,
        ),
        (b"", "", False),
    ],
)
def test_error_text_from_bodies(body: bytes, expected: str, is_json: bool) -> None:
    assert error_text(body) == (expected, is_json)


def test_error_text_is_cut_short() -> None:
    message, _ = error_text(b"<p>" + b"word " * 500 + b"</p>")
    assert len(message) <= 200 and message.endswith("…")


@pytest.mark.parametrize(
    ("message", "json_body", "expected"),
    [
        ("Just a moment", False, ServerError),  # a CDN challenge page: transient
        ("", False, ServerError),  # empty body: transient
        ("Invalid API key", True, KeyRejected),
        ("permission denied", True, KeyRejected),
        ("token expired", True, KeyRejected),
        ("Unauthorized", False, ServerError),  # HTML even if it speaks of auth
    ],
)
def test_403_is_not_always_the_key(message: str, json_body: bool, expected: type) -> None:
    assert type(error_for_status(403, message, json_body=json_body)) is expected
    assert type(error_for_status(401, message, json_body=json_body)) is KeyRejected


def test_public_url_drops_query_and_credentials() -> None:
    url = "https://user:pw@cdn.example.com:8443/p/a.png?X-Amz-Signature=abc#frag"
    assert public_url(url) == "https://cdn.example.com:8443/p/a.png"


def _live(code: str, message: str, details: object = None) -> bytes:
    body: dict[str, object] = {"errorCode": code, "message": message, "context": {"id": "r"}}
    if details is not None:
        body["details"] = details if isinstance(details, str) else orjson.dumps(details).decode()
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (  # the provider's own error body inside details, a JSON string
            _live(
                "EXTERNAL_API_RESPONSE_WITH_ERROR",
                "The service is busy, please try again shortly",
                {"error": {"message": "Your request was rejected by the safety system"}},
            ),
            "EXTERNAL_API_RESPONSE_WITH_ERROR: Your request was rejected by the safety system",
        ),
        (  # a JSON string inside a JSON string inside details
            _live(
                "EXTERNAL_API_RESPONSE_WITH_ERROR",
                "busy",
                {"message": orjson.dumps({"error": {"message": "mask size mismatch"}}).decode()},
            ),
            "EXTERNAL_API_RESPONSE_WITH_ERROR: mask size mismatch",
        ),
        (  # nested details objects: the deepest message wins
            _live("VALIDATION_ERROR", "bad", {"message": "outer", "details": {"message": "inner"}}),
            "VALIDATION_ERROR: inner",
        ),
        (_live("VALIDATION_ERROR", "quality is required"), "VALIDATION_ERROR: quality is required"),
        (_live("NOT_FOUND", "gone", "plain words, not JSON"), "NOT_FOUND: plain words, not JSON"),
        (_live("NOT_FOUND", "gone", "{broken"), "NOT_FOUND: {broken"),
        (_live("UNKNOWN", "", {"statusCode": 500}), "UNKNOWN"),
    ],
)
def test_live_error_bodies_read_error_code_then_the_innermost_cause(
    body: bytes, expected: str
) -> None:
    assert error_text(body) == (expected, True)


def test_a_live_body_about_credits_is_out_of_credits_whatever_its_status() -> None:
    message, _ = error_text(_live("INSUFFICIENT_CREDITS", "Not enough credit"))
    assert type(error_for_status(400, message)) is OutOfCredits
    busy, _ = error_text(
        _live("EXTERNAL_API_RESPONSE_WITH_ERROR", "busy", {"error": {"message": "low balance"}})
    )
    assert type(error_for_status(400, busy)) is OutOfCredits


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_no_word_of_a_4xx_makes_it_transient(status: int) -> None:
    words = "The service is busy, please try again shortly (temporarily unavailable, retry)"
    assert isinstance(error_for_status(status, words), BadRequest)


@pytest.mark.parametrize(
    ("word", "known"),
    [
        ("SUCCESS", True),
        ("completed", True),
        ("SUCCEEDED", True),
        ("ERROR", True),
        ("CANCELLED", True),
        ("PENDING", True),
        ("QUEUED", True),
        ("IN_PROGRESS", True),
        ("RUNNING", True),
        ("WAITING_FOR_GPU", False),
    ],
)
def test_status_words(word: str, known: bool) -> None:
    assert known_status(word) is known


@pytest.mark.parametrize("word", ["COMPLETED", "SUCCEEDED", "success"])
def test_finished_words(word: str) -> None:
    assert parse_feature(record(status=word)).finished


@pytest.mark.parametrize("word", ["ERROR", "CANCELLED", "failure"])
def test_failed_words(word: str) -> None:
    with pytest.raises(RecordFailed):
        parse_feature(record(status=word))


def test_an_unknown_word_is_unfinished() -> None:
    result = parse_feature(record(status="WAITING_FOR_GPU", aiRecordDetail={"resultObject": []}))
    assert not result.finished and result.status == "WAITING_FOR_GPU"
