"""``pipeline validate MANIFEST``: every check that needs no network; nothing is sent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.codes import ExitCode
from pipeline.cli.options import add_rehash
from pipeline.errors import ManifestError
from pipeline.images.masks import write_mask_preview
from pipeline.manifest import load_manifest
from pipeline.models import PlannedJob
from pipeline.plan.prepare import scan
from pipeline.plan.summary import format_plan
from pipeline.preflight import Preflight
from pipeline.preflight.statcache import StatCache
from pipeline.runner.options import Console
from pipeline.runner.start import input_cache, validate_manifest
from pipeline.store.bucket import output_target
from pipeline.store.local import protect_inputs


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
    validate.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="the state folder whose input cache to use (default: the output folder a run "
        "without --out uses, out/<name> beside the manifest; --state of a bucket run)",
    )
    add_rehash(validate)
    validate.set_defaults(handler=command_validate)


def command_validate(args: argparse.Namespace) -> int:
    console = Console.stdio()
    plan = validate_manifest(args.manifest, state=args.state, rehash=args.rehash, console=console)
    print(format_plan(plan.summary), file=sys.stdout if plan.ok else sys.stderr)
    if plan.ok and args.masks is not None:
        with input_cache(args.state or plan_state(args.manifest), False, console) as cache:
            write_mask_previews(args.manifest, args.masks, cache)
    return ExitCode.OK if plan.ok else ExitCode.USAGE


def plan_state(manifest_path: Path) -> Path:
    manifest = load_manifest(manifest_path)
    return output_target(None, None, manifest.base_dir, manifest.name).state_dir


def write_mask_previews(
    manifest_path: Path, folder: Path, stat_cache: StatCache | None = None
) -> int:
    """Each valid job's effective mask and overlay into ``folder``; how many were written.

    A second pass over the manifest (the first one counted, this one draws): nothing is sent.
    """
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError:
        return 0  # its problems are printed above already
    written = 0
    for item in scan(manifest, Preflight(stat_cache=stat_cache)):  # files checked: not read
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
