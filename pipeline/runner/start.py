"""A run from its options to its end: settings, the output target, the lock, the checked plan
(or the dry run's report), then ``runner.session``. The CLI and the Python API both call
``run_manifest``; what stops a run before anything is sent is raised (``UsageError``,
``PlanRefused``, ``LockError``, ``StoreError``), what happens after is in the ``RunResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.config import KEY_ENV, http_url_problem, load_settings
from pipeline.credits import load_credit_table
from pipeline.durability import Syncer
from pipeline.errors import ExitCode, ManifestError, PlanRefused, UsageError
from pipeline.layout import LEDGER_NAME, LOCK_NAME, STAGING_DIR
from pipeline.ledger import LedgerState, OutputLock, read_ledger
from pipeline.ledger.decisions import read_decisions
from pipeline.manifest import Manifest, load_manifest
from pipeline.models import Job
from pipeline.plan.memo import MemoPlace
from pipeline.plan.prepare import (
    CheckedPlan,
    PlanOptions,
    prepare,
    prepare_file,
    reviewer_rejections,
)
from pipeline.plan.summary import format_plan, format_problems
from pipeline.preflight import Preflight
from pipeline.preflight.statcache import StatCache
from pipeline.reporting.runlog import RunLog
from pipeline.runner.options import Console, RunContext, RunOptions
from pipeline.runner.photos import FirstReads
from pipeline.runner.results import RunResult
from pipeline.runner.session import run_session
from pipeline.runner.thumbnails import SourceThumbnails
from pipeline.scheduler import DoneJobs
from pipeline.store.bucket import OutputTarget, TargetError, output_target
from pipeline.store.local import Store
from pipeline.store.missing import missing_rule

NO_KEY_HELP = f"""\
No API key: set {KEY_ENV} to your 1min.ai key (https://1min.ai, account settings → API), e.g.

    export {KEY_ENV}=...        # never passed on the command line, never printed

or try the pipeline first against the built-in emulator, no key needed:

    pipeline run MANIFEST --emulator
"""


def run_manifest(options: RunOptions, *, api_key: str | None, console: Console) -> RunResult:
    """Run (or dry-run) a manifest; raises what keeps it from starting."""
    settings = load_settings(options.config, flags=options.settings_flags())
    if api_key is None and not options.emulator and not options.dry_run:
        raise UsageError(NO_KEY_HELP)
    if options.notify and (problem := http_url_problem(options.notify)):
        raise UsageError(f"--notify: {problem}")
    manifest = load_manifest(options.manifest)
    try:
        target = output_target(options.out, options.state, manifest.base_dir, manifest.name)
    except TargetError as exc:
        raise UsageError(str(exc)) from exc
    if options.ray:
        _check_ray(options, manifest)
    if options.dry_run:
        log = RunLog(io.StringIO())  # a dry run logs nothing
        return _dry_run(RunContext(options, manifest, settings, target, api_key, log, console))
    with _run_log(options) as log:
        context = RunContext(options, manifest, settings, target, api_key, log, console)
        syncer = Syncer()  # fsyncs off the event loop, batched (pipeline.durability)
        try:
            return _locked_run(context, target.open_store(syncer), syncer)
        finally:
            syncer.close()


def _run_log(options: RunOptions) -> RunLog:
    if options.log_file is None and not options.log_stderr:
        return RunLog(io.StringIO(), options.log_format)  # the Python API, no log file: silent
    above_bar = options.progress and options.log_file is None
    return RunLog.open(
        options.log_file, options.log_format, verbose=options.verbose, above_bar=above_bar
    )


def validate_manifest(
    path: Path, *, state: Path | None = None, rehash: bool = False, console: Console
) -> CheckedPlan:
    """``pipeline validate``: the one pass, nothing sent; with the stat cache a run of this
    manifest keeps (its state folder, or ``state``), so validate then run reads each photo
    once, and a nightly validate reads none that did not change."""
    try:
        manifest = load_manifest(path)
    except ManifestError:
        return prepare_file(path)  # the header's problems, as a plan
    state_dir = state or output_target(None, None, manifest.base_dir, manifest.name).state_dir
    with input_cache(state_dir, rehash, console) as cache:
        preflight = Preflight(stat_cache=cache)
        memo = MemoPlace(state_dir, read=not rehash)
        return prepare(manifest, LedgerState(), PlanOptions(), load_credit_table(), preflight, memo)


def plan_options(options: RunOptions, target: OutputTarget, done: DoneJobs | None) -> PlanOptions:
    return PlanOptions(
        retry_failed=options.retry_failed,
        limit=options.limit,
        only=options.only,
        rejected=reviewer_rejections(read_decisions(target.state_dir)),
        missing=missing_rule(target.outputs_look().gone) if options.redo_missing else None,
        on_done=done,
        read_at_upload=not (options.dry_run or options.ray),
    )


def _locked_run(context: RunContext, store: Store, syncer: Syncer) -> RunResult:
    state_dir = context.target.state_dir
    created = not state_dir.exists()
    store.prepare()  # a bucket OUT: probed here, before anything is fetched or bought
    with OutputLock(state_dir):
        ledger = read_ledger(state_dir / LEDGER_NAME)
        _report_ledger_damage(ledger, state_dir, context.console)
        # The re-fetch of lost outputs checks the done jobs; a plan that starts over (a stale
        # plan memo) asks for fresh options, so the latest DoneJobs is the plan's.
        done_jobs: list[DoneJobs] = []

        def options() -> PlanOptions:
            done_jobs[:] = [DoneJobs(ledger.output_records)]
            return plan_options(context.options, context.target, done_jobs[0])

        # The stat cache and the thumbnails stay open through the run: a first run's new
        # photos are read by their uploads (``runner.photos``), not by the pass.
        with _inputs(context) as (cache, thumbnails):
            plan, preflight = _prepared(context, ledger, options, cache, thumbnails)
            done = done_jobs[0]
            if not plan.ok:
                if created:
                    _remove_empty(state_dir)  # nothing was sent: leave nothing behind either
                raise PlanRefused(plan.summary)
            _print_warnings(plan, context.console)
            if thumbnails is not None:
                thumbnails.wait()
            photos = FirstReads(preflight.reader, thumbnails)
            return asyncio.run(run_session(context, store, ledger, plan, syncer, done, photos))


@contextlib.contextmanager
def _inputs(context: RunContext) -> Iterator[tuple[StatCache, SourceThumbnails | None]]:
    """The state folder's stat cache, and the report's source thumbnails (made from the bytes
    read), open together."""
    state_dir, rehash = context.target.state_dir, context.options.rehash
    with (
        input_cache(state_dir, rehash, context.console) as cache,
        _source_thumbnails(context) as thumbnails,
    ):
        yield cache, thumbnails


def _prepared(
    context: RunContext,
    ledger: LedgerState,
    options: Callable[[], PlanOptions],
    cache: StatCache,
    thumbnails: SourceThumbnails | None,
) -> tuple[CheckedPlan, Preflight]:
    """The one pass, with the state folder's stat cache: unchanged inputs are not read again
    (kept even when the plan fails, so a fixed catalog does not read every photo again), and
    its plan memo: an unchanged catalog is not checked again (``plan.memo``). A run with a
    report makes each photo's thumbnail from the bytes the pass read. ``options`` is called
    once, or twice when the memo turns out stale part way."""
    state_dir = context.target.state_dir
    preflight = Preflight(stat_cache=cache, on_image_read=thumbnails)
    memo = MemoPlace(state_dir, read=not context.options.rehash)
    credits = load_credit_table()
    plan = prepare(context.manifest, ledger, options(), credits, preflight, memo, options)
    return plan, preflight


def _source_thumbnails(
    context: RunContext,
) -> contextlib.AbstractContextManager[SourceThumbnails | None]:
    if not context.options.report or context.options.dry_run:
        return contextlib.nullcontext()
    return SourceThumbnails(context.target.state_dir)


def input_cache(state_dir: Path, rehash: bool, console: Console) -> StatCache:
    """The state folder's stat cache of input files; one note if it cannot be kept."""
    return StatCache.open(state_dir, rehash, warn=lambda message: console.warn(f"note: {message}"))


def _print_warnings(plan: CheckedPlan, console: Console) -> None:
    summary = plan.summary
    if summary.warning_count:
        text = format_problems(summary.warnings, total=summary.warning_count, heading="warnings")
        console.warn(text)


def _remove_empty(state_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (state_dir / LOCK_NAME).unlink()
        (state_dir / STAGING_DIR).rmdir()  # a bucket run's, if any
    with contextlib.suppress(OSError):
        state_dir.rmdir()


def _dry_run(context: RunContext) -> RunResult:
    target = context.target
    ledger = read_ledger(target.state_dir / LEDGER_NAME)
    with _inputs(context) as (cache, thumbnails):
        options = lambda: plan_options(context.options, target, None)  # noqa: E731
        plan, _preflight = _prepared(context, ledger, options, cache, thumbnails)
    if not plan.ok:
        raise PlanRefused(plan.summary)
    context.console.say(format_plan(plan.summary))
    context.console.say("dry run: nothing was sent.")
    return RunResult(
        exit_code=ExitCode.OK,
        manifest=context.manifest.name,
        out=target.out,
        state_dir=target.state_dir,
        skipped=sum(plan.skipped.values()),
        dry_run=True,
        plan=plan.summary,
    )


def _report_ledger_damage(ledger: LedgerState, out_dir: Path, console: Console) -> None:
    corrupt = ledger.damage.corrupt_lines
    if corrupt:
        shown = ", ".join(map(str, corrupt[:10]))
        more = f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else ""
        console.warn(f"warning: {out_dir / LEDGER_NAME}: skipped unreadable line(s) {shown}{more}")


def _check_ray(options: RunOptions, manifest: Manifest) -> None:
    """Why the manifest cannot run on this cluster (inputs only this machine can read).

    Imported here: without ``--ray`` nothing of Ray is imported (an optional extra)."""
    from pipeline.distributed.driver import check_shared_inputs

    if options.emulator and options.ray != "local":
        raise UsageError("--emulator listens on this machine's 127.0.0.1: use it with --ray local")
    jobs = [job for job in manifest.iter_jobs() if isinstance(job, Job)]
    problems = check_shared_inputs(jobs, options.ray or "")
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise UsageError("--ray:\n  " + "\n  ".join(problems[:10]) + more)
