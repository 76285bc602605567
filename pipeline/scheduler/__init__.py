"""Stage 3, the scheduler: planned jobs through upload → feature call → poll → fetch → store.

``build_scheduler`` puts the pool (``pool.Scheduler``) together from its parts, each an object
handed what it needs: ``StepRunner`` (one step's tries, through the rate gate), ``CreditBudget``,
``Uploads``, ``Purchase``, ``Polling``, ``Results``; ``Refetcher`` brings back lost outputs of
done jobs beside a run.
"""

from __future__ import annotations

from pipeline.scheduler.budget import CreditBudget
from pipeline.scheduler.build import SchedulerOptions, build_scheduler, scheduler_options
from pipeline.scheduler.job import (
    Client,
    JobRun,
    PendingRecord,
    PhotoBytes,
    PhotoReader,
    ResumeState,
    RunOutcome,
    Timing,
    error_info,
    is_systemic,
)
from pipeline.scheduler.pool import Scheduler
from pipeline.scheduler.refetch import DoneJobs, Refetcher, RefetchReport

__all__ = [
    "Client",
    "CreditBudget",
    "DoneJobs",
    "JobRun",
    "PendingRecord",
    "PhotoBytes",
    "PhotoReader",
    "RefetchReport",
    "Refetcher",
    "ResumeState",
    "RunOutcome",
    "Scheduler",
    "SchedulerOptions",
    "Timing",
    "build_scheduler",
    "error_info",
    "is_systemic",
    "scheduler_options",
]
