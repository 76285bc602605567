"""One exception tree for the whole pipeline.

    PipelineError
    ├── UsageError               a command or option that cannot work; nothing was sent (exit 2)
    │   ├── ConfigError          a settings file or value that cannot be used
    │   └── LogFileError         `--log-file` cannot be opened
    ├── ManifestError            bad manifest or inputs; carries every Problem found (exit 2)
    │   └── PlanRefused          preflight found problems: carries the plan's summary
    ├── LockError                another run holds the output folder (exit 75)
    ├── StoreError               the output folder cannot be written (disk full, permissions)
    ├── MaskError                a mask recipe cannot be drawn for this image
    ├── ProvenanceError          a result is not a PNG, JPEG or WebP the XMP writer knows
    ├── ImageCheckError          a delivered image cannot be read for the marketplace checks
    ├── ExportError              `pipeline export` cannot start (exit 2) or write
    │   └── DestinationError     DEST cannot be written (exit 1)
    ├── ObjectStoreError         an object store cannot be used (missing extra, failed put)
    └── ApiError                 anything the remote API (or the way to it) did
        ├── TransientError       retry with backoff: the same request may well succeed later
        │   ├── RateLimited      429 (flow control: does not use up a job's attempts)
        │   ├── ServerError      408, 409, 425, 5xx
        │   ├── ApiTimeout       no answer within the phase's timeout
        │   ├── ConnectionLost   refused, reset or dropped connection
        │   ├── BadResponse      malformed or incomplete JSON, truncated or undecodable download
        │   ├── RecordFailed     the API answered, but aiRecord.status is FAILURE/FAILED
        │   ├── AnswerLost       a feature POST's answer lost after its body was sent (a
        │   │                    timeout, a dropped connection, an HTML 5xx, 520-524): it may
        │   │                    have been charged, an unknown outcome; re-sent once, async
        │   └── Stopped          the run is stopping: a call not yet sent is not sent
        ├── JobFatal             this job is wrong: fail it, do not retry
        │   ├── BadRequest       any other 4xx
        │   │   └── AssetNotFound the API no longer knows an uploaded asset: upload again once
        │   ├── DownloadFailed   no result URL answered with the image after every attempt
        │   ├── InputUnreadable  a local input file cannot be read
        │   ├── RecordUnknown    the results endpoint does not know the uuid ({"aiRecord": null})
        │   ├── ProcessingTimeout a record still unfinished after timeouts.processing
        │   └── OutcomeUnknown   a job's second unknown outcome: it may have been paid twice
        └── RunFatal             stop the whole run (exit 3); jobs stay resumable
            ├── KeyRejected      401, or a 403 whose JSON body speaks of the key
            ├── OutOfCredits     402, or a 4xx that speaks of credits or balance
            └── BudgetReached    --max-credits would be exceeded by the next call
                └── TotalBudgetReached  --max-total-credits (all runs of the folder)

Every class has a stable ``kind`` string: it is what the ledger and the summary record.
What a command exits with is ``ExitCode``, the one table of exit codes (``docs/cli.md``).
HTTP statuses are mapped to this tree in exactly one place, ``client.error_for_status``.
Why a run stopped is a ``StopReason``; its values are what the ledger and the summary show (the
circuit breaker's ``api_unreachable`` / ``input_host_unreachable`` are reasons, not errors: no
request failed in a new way, several jobs in a row ran out of retries).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any


class ExitCode(IntEnum):
    """What every command exits with; the Python API's results carry the same numbers."""

    OK = 0  # every job succeeded or was already done
    FAILED = 1  # the run finished and failed jobs remain in the manifest (new or earlier)
    USAGE = 2  # usage, manifest or preflight error: nothing was sent
    STOPPED = 3  # stopped: key rejected, out of credits, a budget reached, API unreachable
    TEMPFAIL = 75  # EX_TEMPFAIL: another run holds the output folder; try again later
    INTERRUPTED = 130  # SIGINT/SIGTERM, after the jobs in flight settled
    BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout was closed early (`| head`); said nowhere


class PipelineError(Exception):
    kind = "pipeline"


class UsageError(PipelineError):
    """A command or option that cannot work as given; ``str()`` is what to print (exit 2)."""

    kind = "usage"


class ConfigError(UsageError):
    """A settings file or value that cannot be used; the message names the key."""

    kind = "config"


class Severity(StrEnum):
    ERROR = "error"  # the manifest cannot run: nothing is sent
    WARNING = "warning"  # worth reading; the job runs


@dataclass(frozen=True)
class Finding:
    """One thing preflight found: where it is, which field, what it is, and how bad."""

    job: str | None  # job id, or None for manifest-level findings
    field: str | None
    message: str
    location: str | None = None  # "file:line[:col]" or "items.csv row 17"
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = []
        if self.location:
            where.append(self.location)
        if self.job is not None:
            where.append(f"job {self.job!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


@dataclass(frozen=True)
class Problem(Finding):
    """A finding that keeps the manifest from running."""


@dataclass(frozen=True)
class Notice(Finding):
    """A warning about a job: worth reading, does not stop it."""

    severity: Severity = Severity.WARNING


class ManifestError(PipelineError):
    kind = "manifest"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanRefused(ManifestError):
    """Preflight found problems: nothing was sent. ``summary`` is the plan's
    (``plan.summary.PlanSummary``: counts, problems, warnings) for the full report."""

    def __init__(self, summary: Any) -> None:
        super().__init__(list(summary.problems))
        self.summary = summary


class LockError(PipelineError):
    kind = "lock"


class StoreError(PipelineError):
    kind = "store"


class ApiError(PipelineError):
    kind = "api"

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class TransientError(ApiError):
    kind = "transient"


class RateLimited(TransientError):
    kind = "rate_limited"

    def __init__(
        self, message: str, http_status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, http_status)
        self.retry_after = retry_after  # seconds, as announced by the server; None if absent


class ServerError(TransientError):
    kind = "server_error"


class ApiTimeout(TransientError):
    kind = "timeout"


class ConnectionLost(TransientError):
    kind = "connection"


class BadResponse(TransientError):
    kind = "bad_response"


class RecordFailed(TransientError):
    kind = "record_failed"


class AnswerLost(TransientError):
    """A feature POST whose answer was lost after its body was sent: a client timeout, a
    connection dropped after it connected, an HTML 5xx or any 520-524 (the CDN's). The origin
    may have made and charged the edit: an unknown outcome (docs/api.md#unknown-outcomes).

    ``kind`` is what was seen (``timeout``, ``connection``, ``server_error``), so retry counts
    and the ledger's ``unknown_outcome`` line say how the answer was lost."""

    kind = "unknown_outcome"

    def __init__(self, message: str, http_status: int | None = None, *, seen: str) -> None:
        super().__init__(message, http_status)
        self.kind = seen


class JobFatal(ApiError):
    kind = "job_fatal"


class BadRequest(JobFatal):
    kind = "bad_request"


class AssetNotFound(BadRequest):
    kind = "asset_not_found"


class DownloadFailed(JobFatal):
    kind = "download"


class RunFatal(ApiError):
    kind = "run_fatal"


class KeyRejected(RunFatal):
    kind = "key_rejected"


class OutOfCredits(RunFatal):
    kind = "out_of_credits"


class Stopped(TransientError):
    """The run is stopping: a call not yet sent is not sent. The job stays resumable."""

    kind = "stopped"

    def __init__(self, message: str = "the run is stopping") -> None:
        # Raised bare (`Stopped()`) where a stop is noticed; ApiError needs a message.
        super().__init__(message)


class InputUnreadable(JobFatal):
    kind = "input"


class RecordUnknown(JobFatal):
    """The results endpoint answered ``{"aiRecord": null}``: polling it again cannot help."""

    kind = "record_unknown"


class ProcessingTimeout(JobFatal):
    """A record still processing after ``timeouts.processing``. Job-level: not retried in this
    run (re-buying would pay twice); ``--retry-failed`` polls the same uuid once more."""

    kind = "processing_timeout"

    def __init__(self, message: str, uuid: str) -> None:
        super().__init__(message)
        self.uuid = uuid


class OutcomeUnknown(JobFatal):
    """A job's feature call lost its answer a second time (each may have been charged). Not
    retried and not transient: a person decides, then ``--retry-failed`` runs it again."""

    kind = "outcome_unknown"


class BudgetReached(RunFatal):
    kind = "max_credits"


class TotalBudgetReached(BudgetReached):
    kind = "max_total_credits"


class StopReason(StrEnum):
    """Why a run stopped early; the values are what the ledger and the summary record."""

    INTERRUPTED = "interrupted"
    KEY_REJECTED = "key_rejected"
    OUT_OF_CREDITS = "out_of_credits"
    MAX_CREDITS = "max_credits"
    MAX_TOTAL_CREDITS = "max_total_credits"
    STORE = "store"
    CRASHED = "crashed"
    API_UNREACHABLE = "api_unreachable"
    INPUT_HOST_UNREACHABLE = "input_host_unreachable"
    CDN_CHALLENGE = "cdn_challenge"  # the breaker, when every try met the CDN's challenge page


# -- errors of the stages beside the API (each names what is wrong in its message) ----------


class MaskError(PipelineError):
    """A mask recipe cannot be rendered for this image (the message names what is wrong)."""

    kind = "mask"


class ProvenanceError(PipelineError):
    """The file is not a PNG, JPEG or WebP this module can write into (message says why)."""

    kind = "provenance"


class ImageCheckError(PipelineError):
    """A delivered image cannot be read for the marketplace checks (the message says why)."""

    kind = "image_check"


class ExportError(PipelineError):
    """The export cannot start (bad template, collisions, no ledger) or cannot write."""


class DestinationError(ExportError):
    """DEST cannot be written (a file where a folder should be, permissions, credentials)."""


class ObjectStoreError(PipelineError):
    """An object store cannot be used (missing extra, refused put, size mismatch)."""


class LogFileError(UsageError):
    """The log file cannot be opened; `str()` is one line for the CLI to print."""
