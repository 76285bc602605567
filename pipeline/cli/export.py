"""``pipeline export OUT DEST``: delivered images to a folder or an object store, named for the
shop (``review.export``), and with ``--profile`` the channel's file beside them
(``review.channels``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.codes import ExitCode
from pipeline.cli.review import fail, subparser
from pipeline.errors import DestinationError, ExportError
from pipeline.review.channels import Profile, channel_options, export_channel
from pipeline.review.export import DEFAULT_NAME, FORMATS, ExportResult, export


def add_arguments(commands: Any) -> None:
    parser = subparser(commands, "export", "copy delivered images to a folder or object store")
    parser.add_argument("dest", metavar="DEST", help="a folder or an fsspec URL (s3://...)")
    parser.add_argument("--approved-only", action="store_true", help="only approved jobs")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"file name template ({DEFAULT_NAME})")
    parser.add_argument("--format", choices=sorted(FORMATS), help="convert to this format")
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality, 1-100")
    parser.add_argument(
        "--all-variants",
        action="store_true",
        help="every image of a job, not only its pick (or, with --profile, its first)",
    )
    channel = parser.add_argument_group("channel files")
    channel.add_argument(
        "--profile", choices=[p.value for p in Profile], help="also write the channel's file"
    )
    channel.add_argument("--base-url", metavar="URL", help="the URL DEST's files are served from")
    channel.add_argument(
        "--fit", action="store_true", help="amazon: re-frame on white what that alone fixes"
    )
    channel.add_argument("--alt-text", metavar="TEMPLATE", help="shopify: {Column} template")
    channel.add_argument("--feed-id", metavar="TEMPLATE", help="google id / amazon sku template")
    channel.add_argument(
        "--manifest", type=Path, help="the manifest whose rows templates read (default: the run's)"
    )
    parser.set_defaults(handler=command_export)


def command_export(args: argparse.Namespace) -> int:
    if args.quality is not None and not 1 <= args.quality <= 100:
        return fail("--quality must be between 1 and 100")
    try:
        result = _export(args)
    except DestinationError as exc:
        return fail(str(exc), ExitCode.FAILED)
    except ExportError as exc:
        return fail(str(exc))
    for note in result.skipped:
        print(f"note: {note}", file=sys.stderr)
    for line in result.left_out:
        print(f"left out: {line}", file=sys.stderr)
    print(result.line())
    return ExitCode.OK


def _export(args: argparse.Namespace) -> ExportResult:
    options = channel_options(
        args.profile,
        base_url=args.base_url,
        fit=args.fit,
        alt_text=args.alt_text,
        feed_id=args.feed_id,
    )
    common = (args.out, args.dest, args.name, args.approved_only, args.format, args.quality)
    extra = {"all_variants": args.all_variants, "manifest": args.manifest}
    if options is None:
        return export(*common, **extra)
    return export_channel(args.out, args.dest, options, *common[2:], **extra)
