"""``pipeline validate``, ``status`` and ``report``: commands that read and never send."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli.codes import ExitCode
from pipeline.cli.options import http_url
from pipeline.config import KEY_ENV, Endpoints, Settings, load_settings
from pipeline.errors import ManifestError
from pipeline.inputs.objectstore import REMOTE_SCHEMES
from pipeline.ledger import LEDGER_NAME
from pipeline.manifest import load_manifest
from pipeline.models import Job
from pipeline.outputs import BUCKET_STATUS_HINT, BucketListing, recorded_bucket
from pipeline.plan import prepare_file
from pipeline.review.page import ManifestJob
from pipeline.review.page import manifest_rows as page_rows
from pipeline.status import write_status
from pipeline.summary import format_plan

SUMMARY_NAME = "summary.json"


def add_arguments(commands: Any) -> None:
    validate = commands.add_parser("validate", help="check a manifest; send nothing")
    validate.add_argument("manifest", type=Path, metavar="MANIFEST")
    validate.add_argument(
        "--masks",
        type=Path,
        metavar="DIR",
        help="write each job's effective mask (<id>.mask.png) and an overlay on its source "
        "(<id>.overlay.png) to DIR, to look before paying",
    )
    validate.set_defaults(handler=command_validate)

    status = commands.add_parser(
        "status", help="where every job of the manifest stands (exit 0: all succeeded)"
    )
    status.add_argument("out", type=Path, metavar="OUT_DIR")
    status.add_argument(
        "--manifest", type=Path, help="the manifest (default: the one the last run recorded)"
    )
    status.add_argument("--json", action="store_true", help="every job's state as JSON")
    status.set_defaults(handler=command_status)

    doctor = commands.add_parser(
        "doctor",
        help="check the key, the API and asset hosts and the settings; spends no credit",
        epilog="exit codes: 0 all is well, 3 key rejected (or no credits), 1 unreachable",
    )
    doctor.add_argument("--config", type=Path, help="settings file (see configs/)")
    doctor.add_argument("--api-base", type=http_url, help="API base URL")
    doctor.add_argument("--asset-base", type=http_url, help="asset host base URL")
    doctor.add_argument(
        "--emulator", action="store_true", help="check against the built-in emulator (no key)"
    )
    doctor.set_defaults(handler=command_doctor)

    from pipeline.review import cli as review_cli

    review_cli.add_report_arguments(commands).set_defaults(
        handler=lambda args: review_cli.command_report(args, manifest_rows(args.out))
    )
    review_cli.add_review_arguments(commands).set_defaults(
        handler=lambda args: review_cli.command_review(args, lambda: manifest_rows(args.out) or ())
    )
    review_cli.add_export_arguments(commands).set_defaults(handler=review_cli.command_export)


def command_validate(args: argparse.Namespace) -> int:
    plan = prepare_file(args.manifest)
    print(format_plan(plan.summary), file=sys.stdout if plan.ok else sys.stderr)
    if args.masks is not None and plan.summary.manifest is not None:
        write_mask_previews(args.manifest, args.masks)
    return ExitCode.OK if plan.ok else ExitCode.USAGE


def write_mask_previews(manifest_path: Path, folder: Path) -> int:
    """Each valid job's effective mask and overlay into ``folder``; how many were written.

    A second pass over the manifest (the first one counted, this one draws): nothing is sent.
    """
    from pipeline.masks import write_mask_preview
    from pipeline.models import PlannedJob
    from pipeline.plan import scan
    from pipeline.store import protect_inputs

    try:
        manifest = load_manifest(manifest_path)
    except ManifestError:
        return 0  # its problems are printed above already
    written = 0
    for item in scan(manifest):
        if not isinstance(item, PlannedJob) or not item.job.has_mask:
            continue
        if item.job.image.kind != "file" or (
            item.job.mask is not None and item.job.mask.kind != "file" and item.mask_png is None
        ):
            print(f"masks: {item.job.id}: not drawn (an input is an uploaded asset)")
            continue
        try:
            source, mask = protect_inputs(item)
            mask_path, overlay_path = write_mask_preview(folder, item.job.id, source, mask)
        except OSError as exc:
            print(
                f"error: cannot write mask previews in {folder}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return written
        print(f"masks: {item.job.id}: {mask_path} and {overlay_path}")
        written += 1
    print(f"masks: {written} written to {folder} (nothing was sent)")
    return written


def command_status(args: argparse.Namespace) -> int:
    out_dir: Path = args.out
    if str(out_dir).split(":/", 1)[0] in REMOTE_SCHEMES:  # Path() made s3://b/p into s3:/b/p
        print(f"error: {BUCKET_STATUS_HINT}", file=sys.stderr)
        return ExitCode.USAGE
    if not (out_dir / LEDGER_NAME).is_file():
        print(f"error: no ledger at {out_dir / LEDGER_NAME}", file=sys.stderr)
        return ExitCode.USAGE
    manifest_path = args.manifest or _recorded_manifest(out_dir)
    jobs, shown = _manifest_jobs(manifest_path)
    bucket = recorded_bucket(out_dir)  # a bucket run's state folder: its outputs are there
    missing = BucketListing(bucket).missing if bucket is not None else None
    # Streamed: the manifest's jobs one at a time, the ledger's fold compact.
    all_done = write_status(out_dir, sys.stdout, jobs, shown, missing, as_json=args.json)
    return ExitCode.OK if all_done else ExitCode.FAILED


def _recorded_manifest(out_dir: Path) -> Path | None:
    try:
        summary = orjson.loads((out_dir / SUMMARY_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    # The folder's summary: its last run recorded the manifest's path.
    run = summary.get("last_run") if isinstance(summary, dict) else None
    manifest = run.get("manifest") if isinstance(run, dict) else None
    return Path(manifest) if isinstance(manifest, str) and manifest else None


def _manifest_jobs(path: Path | None) -> tuple[Iterator[Job] | None, str | None]:
    """The manifest's jobs, streamed (no file is read but the manifest and its items)."""
    if path is None:
        return None, None
    try:
        manifest = load_manifest(path)
    except ManifestError:
        print(
            f"warning: cannot read the manifest {path}; showing the ledger's jobs", file=sys.stderr
        )
        return None, None
    jobs = (item for item in manifest.iter_jobs() if isinstance(item, Job))
    return jobs, manifest.display_name


def command_doctor(args: argparse.Namespace) -> int:
    flags = {"endpoints": {"api_base": args.api_base, "asset_base": args.asset_base}}
    settings = load_settings(args.config, os.environ, flags)
    return asyncio.run(_doctor(settings, args.emulator))


async def _doctor(settings: Settings, emulator: bool) -> int:
    from pipeline.doctor import run_doctor

    if not emulator:
        key = os.environ.get(KEY_ENV) or None
        return await run_doctor(settings.endpoints, key, settings.timeouts, sys.stdout)
    from pipeline.emulator import EmulatorConfig, EmulatorServer

    key = secrets.token_urlsafe(16)  # a throwaway key for a throwaway server
    async with EmulatorServer(EmulatorConfig(api_key=key)) as server:
        endpoints = Endpoints(server.api_base, server.asset_base)
        return await run_doctor(endpoints, key, settings.timeouts, sys.stdout)


def manifest_rows(out_dir: Path) -> list[ManifestJob] | None:
    """The recorded manifest's jobs as the review page lists them (pending ones too)."""
    jobs, _shown = _manifest_jobs(_recorded_manifest(out_dir))
    return None if jobs is None else list(page_rows(jobs))
