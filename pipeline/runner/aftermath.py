"""What a run leaves behind: history, the folder's summary, metrics, the report, the last lines.

A bucket ``OUT`` keeps all of these in the local state folder; the ledger and the summary are
copied to the bucket at the end (``OutputTarget.copy_state``), also when the run was stopped.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pipeline.errors import ExitCode, PipelineError
from pipeline.ledger import LedgerState
from pipeline.manifest import Manifest
from pipeline.plan.prepare import CheckedPlan, Skip
from pipeline.reporting.history import (
    folder_summary,
    read_folder_summary,
    sent_anything,
    write_folder_summary,
    write_run_record,
)
from pipeline.reporting.metrics import write_metrics
from pipeline.reporting.notify import notify, payload_from_summary
from pipeline.reporting.runlog import log_stop
from pipeline.reporting.stats import RunStats
from pipeline.review.page import manifest_rows, write_report
from pipeline.runner.options import Console, RunContext


async def finish_run(
    context: RunContext,
    ledger: LedgerState,
    plan: CheckedPlan,
    stats: RunStats,
    summary: dict[str, Any],
    code: ExitCode,
) -> Path | None:
    """What a run leaves for its operator: history, the folder's summary, metrics, the report, the
    log's last line and the notification; a bucket OUT gets the ledger and summary. A run that sent
    nothing leaves the last real run's figures as they were (docs/ledger.md#history-and-summaries);
    each piece that cannot be written is a warning."""
    out, log, options = context.target.state_dir, context.log, context.options
    sent = sent_anything(summary)
    states = folder_states(plan, stats)
    counters = stats.counters  # a lost answer's credits count as spent (possibly charged)
    credits_all_runs = (
        ledger.credits_spent + counters["credits/estimated"] + counters["credits/possibly_charged"]
    )
    possibly_charged = ledger.possibly_charged + stats.possibly_charged
    try:
        if sent:
            summary["record"] = write_run_record(out, summary).relative_to(out).as_posix()
        folder = folder_summary(
            manifest_name=context.manifest.name,
            manifest_total=plan.total,
            states=states,
            credits_all_runs=credits_all_runs,
            last_run=summary if sent else None,
            previous=read_folder_summary(out),
            possibly_charged=possibly_charged,
        )
        write_folder_summary(out, folder)
    except OSError as exc:  # a full disk: the ledger already holds what matters
        log.warning("could not write the run history or summary", reason=exc.strerror or str(exc))
    for warning in await asyncio.to_thread(context.target.copy_state):
        log.warning(warning)  # a bucket OUT: its ledger copy is behind the local one
    if options.metrics_file is not None:
        _write_metrics(context, states, summary, credits_all_runs, possibly_charged, stats, code)
    report_path = None
    if options.report and sent:
        report_path = write_run_report(out, context.manifest, plan.total, context.console)
    log_stop(log, code, summary)
    if options.notify:
        result = await notify(options.notify, payload_from_summary(summary))
        if not result.ok:
            log.warning("notify failed", url=options.notify, reason=result.reason)
    return report_path


def folder_states(plan: CheckedPlan, stats: RunStats) -> dict[str, int]:
    """Every manifest job's state after this run, counted from the plan and the run alone."""
    done = plan.skipped[Skip.DONE] + stats.succeeded
    failed = plan.skipped[Skip.FAILED] + stats.failed
    partial = plan.skipped[Skip.PARTIAL] + stats.partial
    pending = plan.total - done - failed - partial
    return {"succeeded": done, "failed": failed, "partial": partial, "pending": pending}


def _write_metrics(
    context: RunContext,
    states: dict[str, int],
    summary: dict[str, Any],
    credits_all_runs: float,
    possibly_charged: int,
    stats: RunStats,
    code: ExitCode,
) -> None:
    now = time.time()
    assert context.options.metrics_file is not None
    try:
        write_metrics(
            context.options.metrics_file,
            jobs_by_state=states,
            manifest_total=sum(states.values()),
            credits_run=stats.counters["credits/estimated"],
            credits_total=credits_all_runs,
            last_run_ts=now,
            last_success_ts=now if code == ExitCode.OK else None,
            exit_code=int(code),
            duration_s=stats.elapsed(),
            manifest=context.manifest.name,
            possibly_charged=possibly_charged,
            requests=summary.get("requests"),
        )
    except OSError as exc:
        context.log.warning(
            "could not write the metrics file",
            path=str(context.options.metrics_file),
            reason=exc.strerror or str(exc),
        )


# The report a run writes by itself costs at most this many jobs' rows (about 4 s, 50 MB) and
# this many new thumbnails (about 5 ms each; the run's prefetcher made its own jobs' already);
# a bigger folder's page is written (paged, in bounded memory) by `pipeline report`, or served
# by `pipeline review`, when someone wants to look.
AUTO_REPORT_MAX_JOBS = 100_000
AUTO_REPORT_THUMBNAILS = 2_000


def write_run_report(out_dir: Path, manifest: Manifest, jobs: int, console: Console) -> Path | None:
    """The run's own report of its ``jobs`` manifest jobs, bounded (``AUTO_REPORT_MAX_JOBS``):
    its path, or None (too big, or it could not be written: a warning says which)."""
    if jobs > AUTO_REPORT_MAX_JOBS:
        console.warn(
            f"report: not written for {jobs:,} jobs (over {AUTO_REPORT_MAX_JOBS:,}): "
            f"`pipeline report {out_dir}` writes it, `pipeline review {out_dir}` serves it"
        )
        return None

    rows = manifest_rows(manifest.iter_jobs())  # pending jobs with their group, as the page's
    try:
        return write_report(out_dir, rows, thumbnail_budget=AUTO_REPORT_THUMBNAILS)
    except (OSError, PipelineError) as exc:
        console.warn(f"warning: could not write the report: {exc}")
        return None


def summary_lines(
    context: RunContext,
    stats: RunStats,
    stop_message: str,
    code: int,
    report: Path | None,
    failures: int,
) -> list[str]:
    """What ``pipeline run`` prints when it ends."""
    counters = stats.counters
    retries = counters["retry/count"]
    partial = f"{stats.partial} partial, " if stats.partial else ""
    lines = [
        f"{context.manifest.name}: {stats.succeeded} succeeded, {stats.failed} failed, "
        f"{partial}{stats.skipped} skipped in {stats.elapsed():.1f} s "
        f"({counters['images/written']} images, {retries} retries, "
        f"~{counters['credits/estimated']} credits)",
        f"outputs: {context.target.out}",
    ]
    if stats.possibly_charged:
        lines.append(
            f"possibly charged: {stats.possibly_charged} feature calls whose answer was lost "
            f"after sending (~{counters['credits/possibly_charged']} credits, counted as spent)"
        )
    if (requests := request_line(stats)) is not None:
        lines.append(requests)
    if stop_message:
        lines.append(f"stopped: {stop_message}")
    if failures:
        earlier = failures - stats.failed - stats.partial
        also = f" ({earlier} from earlier runs)" if earlier else ""
        what = "failed or partial jobs" if stats.partial else "failed jobs"
        lines.append(f"{what}{also}: pipeline status {context.target.state_dir}")
    if code in (ExitCode.STOPPED, ExitCode.INTERRUPTED):
        lines.append("run the same command again to resume; finished jobs are not sent again")
    if report is not None:
        lines.append(f"report: {report}")
    return lines


def request_line(stats: RunStats) -> str | None:
    """``API requests: 2.04 an image (uploads 1.00, calls 1.00, polls 0.04); 0.97 of --rpm 150
    used``, or None when nothing was delivered."""
    summary = stats.request_summary()
    per_image = summary["per_image"]
    if not per_image:
        return None
    kinds = ", ".join(f"{kind} {per_image[kind]:.2f}" for kind in ("uploads", "calls", "polls"))
    line = f"API requests: {per_image['total']:.2f} an image ({kinds})"
    if summary["budget_use"] is not None:
        line += f"; {summary['budget_use']:.2f} of --rpm {summary['rpm']:g} used"
    return line
