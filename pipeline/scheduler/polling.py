"""``Polling``: records still processing: polled by uuid, backing off, until they finish, fail or
run out of ``timeouts.processing``; never bought again while processing.

Every poll spends the one request budget that feature calls and uploads share, so a record is
polled when the run's recent records (``RECENT_RECORDS``) were seen finished, not every 2 s
(``poll_wait``): at 20 s a record, the 2-3-4.5-... schedule spent five polls per edit, this one
about one. Before any record has finished, only the oldest record in flight polls.

A status word nobody documented is logged once per run (``UnknownStatusWord``) and polled as
unfinished: treating it as a failure would buy the edit twice. How long each record took is
told to the run's submit policy (``on_finished``), which may choose sync calls while edits are
fast.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable, Collection

from pipeline.api.client import known_status
from pipeline.config import POLL_GROWTH, POLL_JITTER, Timeouts
from pipeline.errors import ProcessingTimeout, RecordFailed, Stopped
from pipeline.events import EventBus, JobRetrying, RecordFinished, UnknownStatusWord
from pipeline.models import FeatureResult
from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.job import Client, JobRun, StopSignal, Timing, error_info
from pipeline.scheduler.steps import StepRunner
from pipeline.scheduler.submit import SubmitPolicy

RECENT_RECORDS = 16
# A record younger than this lets the oldest one poll for it (see below). Edits of two minutes
# are seen: with a shorter wait the whole first wave polled every 10 s from then on.
LEADER_WAIT = 300.0
# The first poll of a record is due when this share of recent records had been seen finished.
FIRST_POLL_QUANTILE = 0.9


class Polling:
    def __init__(
        self,
        client: Client,
        steps: StepRunner,
        bus: EventBus,
        credits: CreditBudget,
        stop: StopSignal,
        timeouts: Timeouts,
        timing: Timing,
        submit: SubmitPolicy | None = None,
    ) -> None:
        self._client = client
        self._submit = submit
        self._steps = steps
        self._policy = steps.policy
        self._bus = bus
        self._credits = credits
        self._stop = stop
        self._timeouts = timeouts
        self._sleep = timing.sleep
        self._clock = timing.clock
        self._rand = timing.rand
        # How long recent records took: to the poll that saw them finished, when it was due (not
        # when the rate gate let it go: a wait there is no processing time, and counting it
        # pushed every later poll further out, generation after generation).
        self._processing_seen: deque[float] = deque(maxlen=RECENT_RECORDS)
        self._polling: dict[object, float] = {}  # records polled now -> when polling began
        self._words_seen: set[str] = set()  # undocumented status words already logged

    async def after_record_failed(self, run: JobRun, exc: RecordFailed) -> None:
        """A record polled to FAILURE: a feature try that failed. Raise if none is left."""
        run.feature_tries += 1
        run.last_step = "feature"
        if self._stop.is_set() or not self._policy.should_retry(exc, run.feature_tries):
            raise exc
        delay = self._policy.delay(exc, run.feature_tries)
        self._bus.emit(
            JobRetrying(
                run.job.id, run.planned.key, "feature", run.attempts, error_info(exc), delay
            )
        )
        await self._sleep(delay)

    async def finish_record(
        self, run: JobRun, record: FeatureResult, credits: int | None, part: int | None = None
    ) -> FeatureResult:
        """Poll a processing record until it finishes; its uuid is in the ledger already.
        ``part``: the image index of a job bought one call per image (for its ledger line)."""
        self._note_word(record)
        started = self._clock()
        deadline = started + self._timeouts.processing
        token = object()
        self._polling[token] = started
        try:
            return await self._poll_until_done(run, record, credits, part, started, deadline, token)
        finally:
            del self._polling[token]

    async def _poll_until_done(
        self,
        run: JobRun,
        record: FeatureResult,
        credits: int | None,
        part: int | None,
        started: float,
        deadline: float,
        token: object,
    ) -> FeatureResult:
        wait, polls = self._timeouts.poll_initial, 0
        while True:
            now = self._clock()
            if now >= deadline:
                raise ProcessingTimeout(
                    f"record {record.uuid} still {record.status or 'processing'} after "
                    f"{self._timeouts.processing:g} s ({polls} polls)",
                    record.uuid,
                )
            pause = poll_wait(self._processing_seen, polls, now - started, self._jittered(wait))
            await self._sleep(min(pause, max(0.0, deadline - now)))
            if self._stop.halts("poll"):
                raise Stopped()  # resumable: the next run polls the same uuid
            if polls == 0 and self._waits_for_the_leader(token, started):
                wait = min(self._timeouts.poll_max, wait * POLL_GROWTH)
                continue  # a poll not sent: an older record will say when ours is due
            due, sent = self._clock(), list[float]()
            record = await self._steps.run(
                run,
                "poll",
                _poller(self._client, record.uuid, sent, self._clock),
                final=(RecordFailed,),
            )
            polls += 1
            if record.finished:
                run.timings["processing"] = self._clock() - started
                self._processing_seen.append(due - started)
                if self._submit is not None and run.submitted_at is not None:
                    # An edit of this run (not one resumed), POST to the poll that saw it done
                    # as sent: the longer measure, since this one decides sync calls.
                    self._submit.on_finished(sent[-1] - run.submitted_at)
                key = run.planned.key
                self._bus.emit(
                    RecordFinished(run.job.id, key, run.attempts, record, credits, polls, part)
                )
                self._credits.observe(record, 0)
                return record
            self._note_word(record)
            wait = min(self._timeouts.poll_max, wait * POLL_GROWTH)

    def _waits_for_the_leader(self, token: object, started: float) -> bool:
        """Before any record of this run has finished, only the oldest one in flight polls (up
        to ``LEADER_WAIT``): the younger ones are no nearer done, and their polls would spend
        the request budget feature calls need. When it finishes, they are due at its time."""
        if self._processing_seen or self._clock() - started >= LEADER_WAIT:
            return False
        oldest = min(self._polling.items(), key=lambda item: item[1])[0]
        return oldest is not token

    def _note_word(self, record: FeatureResult) -> None:
        word = record.status
        if word and word not in self._words_seen and not known_status(word):
            self._words_seen.add(word)
            self._bus.emit(UnknownStatusWord(word, record.uuid))

    def _jittered(self, wait: float) -> float:
        return wait * (1.0 - POLL_JITTER * self._rand())


def poll_wait(recent: Collection[float], polls: int, elapsed: float, backoff: float) -> float:
    """Seconds until a record's next poll. ``recent``: how long the run's recent records took
    to be seen finished; ``polls``: the polls this record has had; ``elapsed``: its age;
    ``backoff``: the documented wait (about 2 s growing to 10 s, jittered).

    A poll spends the request budget, a late one only latency (which the in-flight limit makes
    up for), so polls aim late: the first when ``FIRST_POLL_QUANTILE`` of recent records were
    done, the next when the slowest of them was, then the back-off. Recent times are each the
    time to the poll that saw the record finished, so they never undercount: aimed at them, most
    records take one poll. Never sooner than the back-off; the aimed waits are not jittered
    (records are submitted spread out by the rate gate already)."""
    if not recent:
        return backoff
    ordered = sorted(recent)
    if polls == 0:
        due = ordered[max(0, math.ceil(FIRST_POLL_QUANTILE * len(ordered)) - 1)]
    else:
        due = ordered[-1]
    return max(backoff, due - elapsed)


def _poller(
    client: Client, uuid: str, sent: list[float], clock: Callable[[], float]
) -> Callable[[], Awaitable[FeatureResult]]:
    """One poll of ``uuid``; when each try left the rate gate goes to ``sent``."""

    def poll() -> Awaitable[FeatureResult]:
        sent.append(clock())
        return client.poll_result(uuid)

    return poll
