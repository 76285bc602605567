"""What happens during a run, as frozen events, and a tiny synchronous fan-out bus.

The scheduler only emits; the ledger, the progress bar and the run statistics listen. Listeners
are called in subscription order, so the ledger (subscribed first) has written and flushed a
line before anything else learns of the event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.models import Asset, ErrorInfo, FeatureResult, PlannedJob

if TYPE_CHECKING:
    from pipeline.images.checks import ImageChecks


@dataclass(frozen=True, slots=True)
class JobStarted:
    planned: PlannedJob


@dataclass(frozen=True, slots=True)
class JobsSkipped:
    """Jobs the plan left out before the run began (done, failed before, held back)."""

    reason: str  # plan.Skip: "done" | "failed" | "held"
    count: int


@dataclass(frozen=True, slots=True)
class AssetsUploaded:
    job_id: str
    key: str
    assets: dict[str, Asset]  # role ("image" | "mask") -> the uploaded asset
    uploads: int  # how many of them this job actually sent (0: all reused)


@dataclass(frozen=True, slots=True)
class FeatureSubmitted:
    job_id: str
    key: str
    attempt: int
    result: FeatureResult
    credits: int | None
    part: int | None = None  # the image index of a job bought one call per image


@dataclass(frozen=True, slots=True)
class AnswerLostAfterSending:
    """A feature call's answer was lost after its body was sent (an unknown outcome): it may
    have been charged. Listeners count ``credits`` as possibly spent."""

    job_id: str
    key: str
    step: str
    attempt: int
    error: ErrorInfo
    credits: int | None
    part: int | None = None


@dataclass(frozen=True, slots=True)
class RecordFinished:
    """A record that was still processing when FeatureSubmitted was emitted has finished: the
    result paths are now known. Not a second purchase (listeners must not count credits again);
    the ledger writes it as a ``submitted`` line with the paths, so a resume downloads."""

    job_id: str
    key: str
    attempt: int
    result: FeatureResult
    credits: int | None
    polls: int = 0
    part: int | None = None


@dataclass(frozen=True, slots=True)
class JobDeferred:
    """A job cut short by a systemic stop (circuit breaker): not failed, stays pending.

    The ledger writes nothing for it; listeners may count it."""

    job_id: str
    key: str
    error: ErrorInfo
    attempts: int


@dataclass(frozen=True, slots=True)
class JobRetrying:
    job_id: str
    key: str
    step: str  # "input" | "upload" | "feature" | "poll" | "download"
    attempt: int
    error: ErrorInfo
    delay: float


@dataclass(frozen=True, slots=True)
class JobSucceeded:
    job_id: str
    key: str
    outputs: tuple[str, ...]
    attempts: int
    credits: int | None
    uuid: str
    timings: dict[str, float] = field(default_factory=dict)
    superseded: tuple[str, ...] = ()
    bytes_written: int = 0
    checks: tuple[ImageChecks, ...] = ()  # the marketplace checks of each output, or none
    uuids: tuple[str, ...] = ()  # a job bought one call per image: each output's record


@dataclass(frozen=True, slots=True)
class JobPartial:
    """Some of a job's paid images could not be fetched after every attempt: ``outputs`` were
    delivered, ``missing`` (indexes) were not. Never bought again silently."""

    job_id: str
    key: str
    outputs: tuple[str, ...]
    missing: tuple[int, ...]
    attempts: int
    credits: int | None
    uuid: str
    error: ErrorInfo
    uuids: tuple[str, ...] = ()
    superseded: tuple[str, ...] = ()
    bytes_written: int = 0


@dataclass(frozen=True, slots=True)
class UnknownStatusWord:
    """A record answered with a status word nobody documented (once per word and run): it is
    polled as unfinished until ``timeouts.processing``."""

    word: str
    uuid: str


@dataclass(frozen=True, slots=True)
class JobFailed:
    job_id: str
    key: str
    error: ErrorInfo
    attempts: int


@dataclass(frozen=True, slots=True)
class OutputsRefetched:
    """A done job's lost outputs were fetched again from its stored record: free, no feature
    call. The job stays succeeded, with these outputs."""

    job_id: str
    key: str
    outputs: tuple[str, ...]
    uuid: str
    superseded: tuple[str, ...] = ()
    checks: tuple[ImageChecks, ...] = ()  # the marketplace checks of each output, or none


@dataclass(frozen=True, slots=True)
class ResultLost:
    """A done job's lost outputs cannot be fetched again (the stored record no longer serves):
    later runs do not ask again; ``--redo-missing`` buys it."""

    job_id: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class RequestSent:
    """An API-host request left the rate gate (every try counts: the budget counts them all)."""

    job_id: str
    kind: str  # "upload" | "feature" | "poll"
    waited: float  # seconds it waited at the gate


@dataclass(frozen=True, slots=True)
class ConcurrencyChanged:
    """The jobs the pool may keep in flight changed (``--concurrency auto``)."""

    limit: int
    edits_per_minute: float | None  # what the budget allows at the requests an edit seen


@dataclass(frozen=True, slots=True)
class RunStopping:
    reason: str  # a pipeline.errors.StopReason value
    message: str


Event = (
    JobStarted
    | JobsSkipped
    | AssetsUploaded
    | FeatureSubmitted
    | AnswerLostAfterSending
    | RecordFinished
    | JobDeferred
    | JobRetrying
    | JobSucceeded
    | JobFailed
    | JobPartial
    | UnknownStatusWord
    | OutputsRefetched
    | ResultLost
    | RequestSent
    | ConcurrencyChanged
    | RunStopping
)
Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
