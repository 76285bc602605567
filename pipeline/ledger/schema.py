"""The ledger's records: one frozen type per status, validated when a line is read.

A ledger line is one JSON object. Every line has ``ts`` (ISO-8601 UTC), ``job_id`` and
``status``; the other fields depend on the status and are declared here, once, as msgspec
``Struct``s tagged by ``status``. Reading a line decodes and validates it in one step (about
a microsecond, in C): a line that is not JSON, has an unknown status, or breaks the schema (a
hand edit, bit rot inside a value) is corrupt, and readers report and skip it. Unknown fields
are ignored (a newer pipeline may add some); an absent optional field takes its default.

msgspec rather than hand-written checks over ``orjson``: a resume reads a million lines, and
typed decoding with validation is about four times faster than decoding then checking, with
the schema written as types instead of code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from pipeline.images.checks import ImageChecks
from pipeline.models import ErrorInfo, Status


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobDetails(msgspec.Struct, frozen=True):
    """What a `started` line says about the job, for the review page and `status`."""

    feature: str = ""
    image: str = ""
    mask: str | None = None
    parameters: dict[str, Any] = {}
    mask_recipe: str | None = None  # a mask made here (MaskRecipe.canonical): the page draws it
    group: str | None = None  # the product the job belongs to; None: the job is its own


class AssetRecord(msgspec.Struct, frozen=True):
    path: str
    digest: str | None = None


class _Line(msgspec.Struct, frozen=True, tag_field="status"):
    job_id: str
    key: str = ""
    ts: str = ""


class StartedCore(_Line, frozen=True, tag=Status.STARTED.value):
    """A ``started`` line as resume reads it: the job's details are skipped, not decoded."""

    status: ClassVar[Status] = Status.STARTED


class Started(StartedCore, frozen=True, tag=Status.STARTED.value):
    job: JobDetails | None = None


class Uploaded(_Line, frozen=True, tag=Status.UPLOADED.value):
    status: ClassVar[Status] = Status.UPLOADED
    assets: dict[str, AssetRecord] = {}


class Submitted(_Line, frozen=True, tag=Status.SUBMITTED.value):
    """A paid feature call. ``result_paths`` empty: the record was still processing (poll it).
    ``part``: the image index this call buys, for a job bought as one call of ``n: 1`` per
    image (a private result bucket serves a record's first result only); None: the whole job."""

    status: ClassVar[Status] = Status.SUBMITTED
    uuid: str = ""
    result_paths: tuple[str, ...] = ()
    attempt: int = 1
    credits: int | float | None = None
    temporary_url: str | None = None
    used_credit: int | None = None
    credit_limit: int | None = None
    part: int | None = None


class RetryingCore(_Line, frozen=True, tag=Status.RETRYING.value):
    """A ``retrying`` line as resume reads it: only that the job is being retried."""

    status: ClassVar[Status] = Status.RETRYING


class Retrying(RetryingCore, frozen=True, tag=Status.RETRYING.value):
    step: str = ""
    attempt: int = 0
    error: ErrorInfo = ErrorInfo("unknown", "")
    delay: float = 0.0


class SucceededCore(_Line, frozen=True, tag=Status.SUCCEEDED.value):
    """A ``succeeded`` line as resume reads it: timings and superseded files skipped."""

    status: ClassVar[Status] = Status.SUCCEEDED
    outputs: tuple[str, ...] = ()
    attempts: int = 0
    credits: int | float | None = None
    uuid: str = ""
    # A job bought one call per image: the record of each output, in index order (the re-fetch
    # of a lost output polls its own record); empty when one record made every image.
    uuids: tuple[str, ...] = ()


class Succeeded(SucceededCore, frozen=True, tag=Status.SUCCEEDED.value):
    timings: dict[str, float] = {}
    superseded: tuple[str, ...] = ()
    # One per output, judged when it was stored; () on lines older than the checks (export
    # judges those files when it needs their verdicts).
    checks: tuple[ImageChecks, ...] = ()


class Failed(_Line, frozen=True, tag=Status.FAILED.value):
    status: ClassVar[Status] = Status.FAILED
    error: ErrorInfo = ErrorInfo("unknown", "")
    attempts: int = 0
    uuid: str | None = None  # the record, when one was bought (a processing timeout, a download)


class Refetched(_Line, frozen=True, tag="refetched"):
    """A succeeded job's outputs fetched again from its stored record: free, no feature call
    (docs/ledger.md#lost-outputs). The job stays succeeded; its outputs are these
    (``pipeline.scheduler.refetch``)."""

    status: ClassVar[Status] = Status.SUCCEEDED
    outputs: tuple[str, ...] = ()
    uuid: str = ""
    superseded: tuple[str, ...] = ()
    checks: tuple[ImageChecks, ...] = ()  # one per output, as on ``succeeded``


class ResultGone(_Line, frozen=True, tag="result_gone"):
    """A succeeded job's outputs are gone and its stored record no longer serves them: later
    runs do not ask the API again (``--redo-missing`` buys the job). The job stays succeeded."""

    status: ClassVar[Status] = Status.SUCCEEDED
    reason: str = ""


class UnknownOutcome(_Line, frozen=True, tag="unknown_outcome"):
    """A feature POST whose answer was lost after its body was sent: it may have been charged
    (counted as spent by both budgets, shown as "possibly charged"). ``http_status`` when an
    answer came (a 52x, an HTML 5xx); ``error`` says what was seen; ``credits``: the call's
    estimate, possibly spent."""

    status: ClassVar[Status] = Status.RETRYING
    step: str = "feature"
    attempt: int = 0
    http_status: int | None = None
    error: ErrorInfo = ErrorInfo("unknown", "")
    credits: int | float | None = None
    part: int | None = None


class Partial(_Line, frozen=True, tag=Status.PARTIAL.value):
    """Some paid images could not be fetched after every attempt: ``outputs`` were delivered,
    ``missing`` (image indexes) were not. Nothing is bought again silently; ``--redo-missing``
    buys exactly the missing images."""

    status: ClassVar[Status] = Status.PARTIAL
    outputs: tuple[str, ...] = ()
    missing: tuple[int, ...] = ()
    uuid: str = ""
    uuids: tuple[str, ...] = ()  # as on succeeded lines: each delivered output's record
    attempts: int = 0
    credits: int | float | None = None
    error: ErrorInfo | None = None  # why the missing images could not be fetched


Record = (
    Started
    | Uploaded
    | Submitted
    | Retrying
    | Succeeded
    | Failed
    | Refetched
    | ResultGone
    | UnknownOutcome
    | Partial
)
# What resume decodes: every field the run uses is decoded and validated; the fields only
# ``status`` and the report show (a job's parameters, timings, retry reasons) are skipped
# unread, which halves the decoding of a million-line ledger. A line must still be JSON with a
# known status; a value broken only in a skipped field is the detailed readers' to report.
CoreRecord = (
    StartedCore
    | Uploaded
    | Submitted
    | RetryingCore
    | SucceededCore
    | Failed
    | Refetched
    | ResultGone
    | UnknownOutcome
    | Partial
)

RECORD_DECODER = _decoder = msgspec.json.Decoder(Record)
CORE_DECODER = _core_decoder = msgspec.json.Decoder(CoreRecord)
_encoder = msgspec.json.Encoder()


def decode_line(line: bytes) -> Record | None:
    """The typed record of one ledger line, or None if it is not a valid record."""
    try:
        return _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_core_line(line: bytes) -> CoreRecord | None:
    """What resume needs of one ledger line (``CoreRecord``), or None if it is invalid."""
    try:
        return _core_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def parse_record(data: Any) -> Record | None:
    """The typed record of an already decoded line (a mapping), or None if it is invalid."""
    try:
        return msgspec.convert(data, Record)
    except (msgspec.ValidationError, TypeError):
        return None


def stamped(record: Record) -> Record:
    """``record`` with ``ts`` stamped now if it has none."""
    return record if record.ts else msgspec.structs.replace(record, ts=utc_now())


def to_line(record: Record) -> bytes:
    """One ledger line: ``ts`` is stamped now if the record has none."""
    return _encoder.encode(stamped(record)) + b"\n"


def to_dict(record: Record) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(to_line(record))
    return result
