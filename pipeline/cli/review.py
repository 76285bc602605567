"""``pipeline report OUT`` and ``pipeline review OUT``: the review page, written or served, and
decisions recorded without a browser.

Every failure is one line on stderr and exit 2 (usage, unknown ids, missing ledger) or 1 (could
not write); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli.codes import ExitCode
from pipeline.layout import LEDGER_NAME
from pipeline.ledger.decisions import record_decisions, record_picks
from pipeline.reporting.status import manifest_jobs, recorded_manifest
from pipeline.review.page import ManifestJob, write_report
from pipeline.review.page import manifest_rows as page_rows
from pipeline.review.view import JobView, read_ledger_view

DEFAULT_PORT = 8765


def subparser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command whose first argument is an output folder (``review``, ``report``, ``export``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
    parser.add_argument("out", type=Path, metavar="OUT_DIR")
    return parser


def add_arguments(commands: Any) -> None:
    add_report_arguments(commands).set_defaults(
        handler=lambda args: command_report(args, manifest_rows(args.out))
    )
    add_review_arguments(commands).set_defaults(
        handler=lambda args: command_review(args, lambda: manifest_rows(args.out) or ())
    )


def manifest_rows(out_dir: Path) -> Iterator[ManifestJob] | None:
    """The recorded manifest's jobs as the review page lists them (pending ones too), streamed
    from the manifest: a million rows are never held at once."""
    jobs, _shown = manifest_jobs(recorded_manifest(out_dir))
    return None if jobs is None else page_rows(jobs)


def add_review_arguments(subparsers: Any) -> argparse.ArgumentParser:
    review = subparser(
        subparsers, "review", "serve the review page with approve/reject, or record decisions"
    )
    review.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    review.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    review.add_argument("--reject", metavar="ID,ID", action="append", default=[])
    review.add_argument("--approve", metavar="ID,ID", action="append", default=[])
    review.add_argument(
        "--pick",
        metavar="ID:INDEX",
        action="append",
        default=[],
        help="for a job with several images, the one to deliver (its index, from 0)",
    )
    review.add_argument("--note", default="", help="a note stored with these decisions")
    review.add_argument(
        "--from",
        dest="from_file",
        type=Path,
        metavar="FILE",
        help="the page's exported JSON, or job ids one a line (rejected)",
    )
    return review


def add_report_arguments(subparsers: Any) -> argparse.ArgumentParser:
    return subparser(subparsers, "report", "write OUT_DIR/report.html to review a run")


def fail(message: str, code: int = ExitCode.USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _no_ledger(out_dir: Path) -> str | None:
    path = out_dir / LEDGER_NAME
    return None if path.is_file() else f"no ledger at {path}"


# -- report -------------------------------------------------------------------------------------


def command_report(
    args: argparse.Namespace, manifest_jobs: Iterable[ManifestJob] | None = None
) -> int:
    """Write report.html; with ``manifest_jobs`` the jobs not run yet are listed too."""
    missing = _no_ledger(args.out)
    if missing:
        return fail(missing)
    try:
        print(write_report(args.out, manifest_jobs))
    except OSError as exc:
        return fail(
            f"cannot write the report in {args.out}: {exc.strerror or exc}", ExitCode.FAILED
        )
    return ExitCode.OK


# -- review -------------------------------------------------------------------------------------


def split_ids(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def read_from_file(path: Path) -> tuple[list[str], list[str], str]:
    """(rejected, approved, note) from the page's export JSON, or ids one a line (rejected)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        rejected, approved = data.get("rejected") or [], data.get("approved") or []
        if not all(isinstance(i, str) for i in [*rejected, *approved]):
            raise ValueError(f"{path}: 'rejected' and 'approved' must be lists of job ids")
        note = data.get("note")
        return list(rejected), list(approved), note if isinstance(note, str) else ""
    if isinstance(data, list) and all(isinstance(i, str) for i in data):
        return list(data), [], ""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")], [], ""


def command_review(
    args: argparse.Namespace, manifest_jobs: Callable[[], Iterable[ManifestJob]] | None = None
) -> int:
    """Record decisions given on the command line, else serve the page (until Ctrl-C).

    ``manifest_jobs`` (called at each page load) adds the manifest's jobs not run yet."""
    missing = _no_ledger(args.out)
    if missing:
        return fail(missing)
    rejected, approved = split_ids(args.reject), split_ids(args.approve)
    try:
        picks = parse_picks(split_ids(args.pick))
    except ValueError as exc:
        return fail(str(exc))
    note = args.note
    if args.from_file is not None:
        try:
            more_rejected, more_approved, file_note = read_from_file(args.from_file)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return fail(f"cannot read --from {args.from_file}: {exc}")
        rejected += more_rejected
        approved += more_approved
        note = note or file_note
    if rejected or approved or picks:
        return record(args.out, rejected, approved, note, picks)
    return serve_page(args, manifest_jobs)


def parse_picks(values: list[str]) -> dict[str, int]:
    """``ID:INDEX`` pairs (the id may hold colons: the index is after the last one)."""
    picks: dict[str, int] = {}
    for value in values:
        job_id, colon, index = value.rpartition(":")
        if not colon or not job_id or not index.isdigit():
            raise ValueError(f"--pick {value!r}: expected ID:INDEX, e.g. sku-4:2")
        if job_id in picks:
            raise ValueError(f"--pick names {job_id} twice: pick one image")
        picks[job_id] = int(index)
    return picks


def record(
    out_dir: Path,
    rejected: list[str],
    approved: list[str],
    note: str,
    picks: dict[str, int] | None = None,
) -> int:
    picks = picks or {}
    for first, second, what in (
        (rejected, approved, "both approved and rejected: "),
        (rejected, list(picks), "both picked and rejected: "),
    ):
        both = sorted(set(first) & set(second))
        if both:
            return fail(what + ", ".join(both))
    jobs = read_ledger_view(out_dir / LEDGER_NAME).jobs
    named = dict.fromkeys([*rejected, *approved, *picks])
    unknown = [job_id for job_id in named if job_id not in jobs]
    if unknown:
        return fail(f"unknown job ids (not in {out_dir / LEDGER_NAME}): " + ", ".join(unknown))
    bad_picks = [pick_problem(jobs[j], index) for j, index in picks.items()]
    if any(bad_picks):
        return fail("; ".join(problem for problem in bad_picks if problem))
    entries = [(j, jobs[j].key, "rejected") for j in dict.fromkeys(rejected)]
    entries += [(j, jobs[j].key, "approved") for j in dict.fromkeys(approved)]
    try:
        count = record_decisions(out_dir, entries, note)
        # After the approvals: a pick made with them is the latest word on its job.
        count += record_picks(out_dir, [(j, jobs[j].key, i) for j, i in picks.items()], note)
    except OSError as exc:
        return fail(f"cannot write {out_dir}/reviews.jsonl: {exc.strerror or exc}", ExitCode.FAILED)
    rejected_n = sum(1 for _, _, d in entries if d == "rejected")
    approved_n = len(entries) - rejected_n
    print(
        f"recorded {count} decisions ({rejected_n} rejected, {approved_n} approved, "
        f"{len(picks)} picked)"
    )
    return ExitCode.OK


def pick_problem(job: JobView, index: int) -> str | None:
    """Why ``index`` cannot be picked for ``job`` (None: it can): a pick chooses among the
    images a job delivered."""
    if job.status != "succeeded":
        return f"{job.job_id} has not succeeded ({job.status}): no image to pick"
    count = len(job.outputs)
    if count < 2:
        return f"{job.job_id} has {count} image: nothing to pick"
    if index >= count:
        return f"{job.job_id} has images 0 to {count - 1}: no image {index}"
    return None


def serve_page(
    args: argparse.Namespace, manifest_jobs: Callable[[], Iterable[ManifestJob]] | None = None
) -> int:
    # Loaded here: aiohttp's server is for this command alone (``report`` writes files).
    from pipeline.review.server import serve

    def ready(url: str) -> None:
        print(f"review page: {url}  (Ctrl-C to stop)", flush=True)

    try:
        asyncio.run(serve(args.out, args.host, args.port, manifest_jobs, ready))
    except KeyboardInterrupt:
        return ExitCode.OK
    except OSError as exc:
        return fail(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}")
    return ExitCode.OK
