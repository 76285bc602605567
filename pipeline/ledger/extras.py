"""What the fold keeps beside a job's state for the live API's harder edges, only for the few
jobs that meet them (``LedgerState.extras``, by job id):

- a job bought as **one call per image** (a private result bucket serves a record's first
  result only): each part's paid call, by image index, so a resume polls or fetches each part
  and never buys a paid one again; once done, each output's record (the re-fetch of a lost
  output polls its own);
- a **partial** job: the images paid but not fetched, and those delivered (``--redo-missing``
  buys exactly the missing ones);
- **unknown outcomes**: answers lost after a feature POST's body was sent since the job's last
  job-fatal end (a call is re-sent at most once per job: a second loss fails the job).

Kept apart from ``JobState`` so that a job that meets none of this costs the resume nothing
more; ``fold`` calls these functions and drops a job's extras when its content changes.
"""

from __future__ import annotations

import msgspec

from pipeline.ledger.schema import Partial, Submitted, UnknownOutcome


class JobExtras(msgspec.Struct, gc=False):
    parts: dict[int, Submitted] = {}  # image index -> the paid call of n: 1 that makes it
    uuids: tuple[str, ...] = ()  # a job bought per image: the record of each output, by index
    missing: tuple[int, ...] = ()  # a partial job: images paid and not fetched
    delivered: tuple[str, ...] = ()  # a partial job: the outputs it has
    lost: int = 0  # unknown outcomes since the job's last job-fatal end


Extras = dict[str, JobExtras]


def _of(extras: Extras, job_id: str) -> JobExtras:
    found = extras.get(job_id)
    if found is None:
        found = extras[job_id] = JobExtras()
    return found


def fold_part(extras: Extras, record: Submitted) -> bool:
    """A paid call of one image (``record.part`` set). True if it is a purchase not seen yet
    (a record still processing is written again, same uuid, once finished: one purchase)."""
    assert record.part is not None
    parts = _of(extras, record.job_id).parts
    earlier = parts.get(record.part)
    repeat = earlier is not None and bool(record.uuid) and earlier.uuid == record.uuid
    parts[record.part] = record
    return not repeat


def fold_unknown_outcome(extras: Extras, record: UnknownOutcome) -> None:
    _of(extras, record.job_id).lost += 1


def fold_partial(extras: Extras, record: Partial) -> None:
    """The parts behind it are settled: delivered, or paid and out of reach."""
    lost = extras[record.job_id].lost if record.job_id in extras else 0
    extras[record.job_id] = JobExtras(
        uuids=record.uuids, missing=record.missing, delivered=record.outputs, lost=lost
    )


def fold_succeeded(extras: Extras, job_id: str, uuids: tuple[str, ...]) -> None:
    """Done: only each output's record is worth keeping (a job bought per image)."""
    if uuids:
        extras[job_id] = JobExtras(uuids=uuids)
    else:
        extras.pop(job_id, None)


def fold_job_fatal(extras: Extras, job_id: str) -> None:
    """A job-fatal failure: a person decides what next (``--retry-failed``), so the allowance
    of one re-sent call starts over. Paid parts stay: they are fetched, never bought again."""
    found = extras.get(job_id)
    if found is not None:
        found.lost = 0
