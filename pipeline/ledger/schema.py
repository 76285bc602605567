"""The ledger's records: one frozen type per status, built from events, validated on read.

A ledger line is one JSON object. Every line has ``ts`` (ISO-8601 UTC), ``job_id`` and
``status``; the other fields depend on the status and are typed here, once. Writers turn events
into records (``record_for``) and records into lines (``to_line``); readers turn lines back into
records (``parse_record``), which checks the type of every field the readers rely on: a line
that parses as JSON but breaks the schema (a hand edit, bit rot inside a value) is reported as
corrupt and skipped, exactly like a line that is not JSON at all.

Unknown fields are ignored (a newer pipeline may add some); a missing optional field takes its
default; a missing or wrongly typed required field makes the line corrupt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.models import ErrorInfo, Status


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class JobDetails:
    """What a `started` line says about the job, for the review page and `status`."""

    feature: str
    image: str
    mask: str | None
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AssetRecord:
    digest: str | None
    path: str


@dataclass(frozen=True, slots=True)
class Started:
    job_id: str
    key: str
    job: JobDetails | None = None
    ts: str = ""
    status: Status = Status.STARTED


@dataclass(frozen=True, slots=True)
class Uploaded:
    job_id: str
    key: str
    assets: Mapping[str, AssetRecord]
    ts: str = ""
    status: Status = Status.UPLOADED


@dataclass(frozen=True, slots=True)
class Submitted:
    """A paid feature call. ``result_paths`` empty: the record was still processing (poll it)."""

    job_id: str
    key: str
    uuid: str
    result_paths: tuple[str, ...] = ()
    attempt: int = 1
    credits: int | None = None
    temporary_url: str | None = None
    used_credit: int | None = None
    credit_limit: int | None = None
    ts: str = ""
    status: Status = Status.SUBMITTED


@dataclass(frozen=True, slots=True)
class Retrying:
    job_id: str
    key: str
    step: str
    attempt: int
    error: ErrorInfo
    delay: float = 0.0
    ts: str = ""
    status: Status = Status.RETRYING


@dataclass(frozen=True, slots=True)
class Succeeded:
    job_id: str
    key: str
    outputs: tuple[str, ...]
    attempts: int
    credits: int | None = None
    uuid: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    superseded: tuple[str, ...] = ()
    ts: str = ""
    status: Status = Status.SUCCEEDED


@dataclass(frozen=True, slots=True)
class Failed:
    job_id: str
    key: str
    error: ErrorInfo
    attempts: int
    uuid: str | None = None  # the record, when one was bought (a processing timeout, a download)
    ts: str = ""
    status: Status = Status.FAILED


Record = Started | Uploaded | Submitted | Retrying | Succeeded | Failed


# -- writing ------------------------------------------------------------------------------------


def _error_dict(error: ErrorInfo) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": error.kind,
        "message": error.message,
        "http_status": error.http_status,
    }
    if error.transient:
        data["transient"] = True
    return data


def to_dict(record: Record) -> dict[str, Any]:
    """The JSON object of a record: ``ts``, ``job_id`` and ``status`` first, then its fields."""
    data: dict[str, Any] = {
        "ts": record.ts or utc_now(),
        "job_id": record.job_id,
        "status": record.status.value,
        "key": record.key,
    }
    match record:
        case Started(job=job):
            if job is not None:
                data["job"] = {
                    "feature": job.feature,
                    "image": job.image,
                    "mask": job.mask,
                    "parameters": dict(job.parameters),
                }
        case Uploaded(assets=assets):
            data["assets"] = {
                role: {"digest": a.digest, "path": a.path} for role, a in assets.items()
            }
        case Submitted():
            data |= {
                "attempt": record.attempt,
                "credits": record.credits,
                "uuid": record.uuid,
                "result_paths": list(record.result_paths),
                "temporary_url": record.temporary_url,
                "used_credit": record.used_credit,
                "credit_limit": record.credit_limit,
            }
        case Retrying():
            data |= {
                "step": record.step,
                "attempt": record.attempt,
                "delay": round(record.delay, 3),
                "error": _error_dict(record.error),
            }
        case Succeeded():
            data |= {
                "outputs": list(record.outputs),
                "attempts": record.attempts,
                "credits": record.credits,
                "uuid": record.uuid,
                "timings": {k: round(v, 3) for k, v in record.timings.items()},
            }
            if record.superseded:
                data["superseded"] = list(record.superseded)
        case Failed():
            data |= {"error": _error_dict(record.error), "attempts": record.attempts}
            if record.uuid:
                data["uuid"] = record.uuid
    return data


def to_line(record: Record) -> bytes:
    return orjson.dumps(to_dict(record)) + b"\n"


# -- reading ------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A field of the wrong type: the line is corrupt."""


def _str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if type(value) is not str:
        raise _Invalid(name)
    return value


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and type(value) is not str:
        raise _Invalid(name)
    return value


def _int(data: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if type(value) is not int:
        raise _Invalid(name)
    return value


def _opt_number(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if type(value) is int:
        return value
    if type(value) is float:
        return round(value)
    raise _Invalid(name)


def _strings(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, ())
    if type(value) not in (list, tuple) or not all(type(item) is str for item in value):
        raise _Invalid(name)
    return tuple(value)


def _mapping(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if type(value) is not dict:
        raise _Invalid(name)
    return value


def _error(data: Mapping[str, Any]) -> ErrorInfo:
    error = data.get("error")
    if type(error) is not dict:
        raise _Invalid("error")
    status = error.get("http_status")
    if status is not None and type(status) is not int:
        raise _Invalid("error.http_status")
    kind, message = error.get("kind", "unknown"), error.get("message", "")
    if type(kind) is not str or type(message) is not str:
        raise _Invalid("error")
    return ErrorInfo(kind, message, status, error.get("transient") is True)


def _details(data: Mapping[str, Any]) -> JobDetails | None:
    job = data.get("job")
    if job is None:
        return None
    if type(job) is not dict:
        raise _Invalid("job")
    parameters = job.get("parameters", {})
    if type(parameters) is not dict:
        raise _Invalid("job.parameters")
    return JobDetails(
        feature=str(job.get("feature") or ""),
        image=str(job.get("image") or ""),
        mask=job["mask"] if type(job.get("mask")) is str else None,
        parameters=parameters,
    )


def _assets(data: Mapping[str, Any]) -> dict[str, AssetRecord]:
    assets: dict[str, AssetRecord] = {}
    for role, asset in _mapping(data, "assets").items():
        if type(asset) is not dict or type(asset.get("path")) is not str or not asset["path"]:
            raise _Invalid("assets")
        digest = asset.get("digest")
        assets[role] = AssetRecord(
            digest if type(digest) is str and digest else None, asset["path"]
        )
    return assets


def _timings(data: Mapping[str, Any]) -> dict[str, float]:
    timings = _mapping(data, "timings")
    if not all(type(v) in (int, float) for v in timings.values()):
        raise _Invalid("timings")
    return timings


def _started(d: Mapping[str, Any], job_id: str, key: str, ts: str) -> Started:
    return Started(job_id, key, _details(d), ts)


def _uploaded(d: Mapping[str, Any], job_id: str, key: str, ts: str) -> Uploaded:
    return Uploaded(job_id, key, _assets(d), ts)


def _submitted(d: Mapping[str, Any], job_id: str, key: str, ts: str) -> Submitted:
    return Submitted(
        job_id,
        key,
        _opt_str(d, "uuid") or "",
        _strings(d, "result_paths"),
        _int(d, "attempt", 1),
        _opt_number(d, "credits"),
        _opt_str(d, "temporary_url"),
        _opt_number(d, "used_credit"),
        _opt_number(d, "credit_limit"),
        ts,
    )


def _retrying(d: Mapping[str, Any], job_id: str, key: str, ts: str) -> Retrying:
    delay = d.get("delay", 0.0)
    if type(delay) not in (int, float):
        raise _Invalid("delay")
    return Retrying(
        job_id, key, str(d.get("step") or ""), _int(d, "attempt", 0), _error(d), delay, ts
    )


def _succeeded(d: Mapping[str, Any], job_id: str, key: str, ts: str) -> Succeeded:
    return Succeeded(
        job_id,
        key,
        _strings(d, "outputs"),
        _int(d, "attempts", 0),
        _opt_number(d, "credits"),
        _opt_str(d, "uuid") or "",
        _timings(d),
        _strings(d, "superseded"),
        ts,
    )


def _failed(d: Mapping[str, Any], job_id: str, key: str, ts: str) -> Failed:
    return Failed(job_id, key, _error(d), _int(d, "attempts", 0), _opt_str(d, "uuid"), ts)


_PARSERS: dict[str, Callable[[Mapping[str, Any], str, str, str], Record]] = {
    Status.STARTED: _started,
    Status.UPLOADED: _uploaded,
    Status.SUBMITTED: _submitted,
    Status.RETRYING: _retrying,
    Status.SUCCEEDED: _succeeded,
    Status.FAILED: _failed,
}


def parse_record(data: Any) -> Record | None:
    """The typed record of one decoded line, or None if it breaks the schema."""
    if type(data) is not dict:
        return None
    job_id, status, key = data.get("job_id"), data.get("status"), data.get("key")
    parser = _PARSERS.get(status) if type(status) is str else None
    if type(job_id) is not str or parser is None or (key is not None and type(key) is not str):
        return None
    ts = data.get("ts")
    try:
        return parser(data, job_id, key or "", ts if type(ts) is str else "")
    except _Invalid:
        return None
