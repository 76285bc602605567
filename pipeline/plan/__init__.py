"""Stage 2, the plan: the one pass over a manifest (``onepass``: each row shape checked once,
each id on its own), content keys (``keys``), the skip rule and ``--limit``/``--only``
(``prepare``), the spool of jobs to run (``spool``), the memo of a clean pass (``memo``: an
unchanged catalog is not checked again) and the plan's summary (``summary``: the text of
``validate`` and ``--dry-run``)."""

from __future__ import annotations

from pipeline.plan.prepare import CheckedPlan, PlanOptions, Skip, prepare_file, skip_reason
from pipeline.plan.summary import PlanSummary, format_plan, format_problems

__all__ = [
    "CheckedPlan",
    "PlanOptions",
    "PlanSummary",
    "Skip",
    "format_plan",
    "format_problems",
    "prepare_file",
    "skip_reason",
]
