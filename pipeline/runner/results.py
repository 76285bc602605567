"""What the Python API's functions return: typed results, never text to parse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ExitCode
from pipeline.plan.summary import PlanSummary

if TYPE_CHECKING:
    from pipeline.reporting.stats import RunStats
    from pipeline.runner.options import RunContext
    from pipeline.scheduler import RunOutcome


@dataclass(frozen=True)
class RunResult:
    """A run's outcome: ``exit_code`` is what ``pipeline run`` exits with (``ExitCode``)."""

    exit_code: ExitCode
    manifest: str  # the manifest's name
    out: str  # the output folder or bucket URL
    state_dir: Path  # the ledger, summaries and report are here
    succeeded: int = 0  # jobs done in this run
    failed: int = 0  # jobs that failed in this run
    skipped: int = 0  # jobs the plan left out (done before, failed before, held)
    stop_reason: str | None = None  # a ``StopReason`` value when the run stopped early
    stop_message: str = ""
    report: Path | None = None
    dry_run: bool = False
    plan: PlanSummary | None = None  # the dry run's plan
    summary: Mapping[str, Any] = field(default_factory=dict)  # as runs/<stamp>.json holds it

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK

    @classmethod
    def of_run(
        cls,
        context: RunContext,
        stats: RunStats,
        outcome: RunOutcome,
        code: ExitCode,
        report: Path | None,
        summary: Mapping[str, Any],
    ) -> RunResult:
        return cls(
            exit_code=code,
            manifest=context.manifest.name,
            out=context.target.out,
            state_dir=context.target.state_dir,
            succeeded=stats.succeeded,
            failed=stats.failed,
            skipped=stats.skipped,
            stop_reason=outcome.stop_reason,
            stop_message=outcome.stop_message,
            report=report,
            summary=summary,
        )


@dataclass(frozen=True)
class ValidationResult:
    """``validate``: the plan's summary (counts, problems, warnings); ok when no problem."""

    summary: PlanSummary

    @property
    def ok(self) -> bool:
        return self.summary.ok

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.USAGE
