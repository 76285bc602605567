"""``pipeline export OUT DEST``: delivered images to a folder or an object store, named for the
shop (``review.export``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.cli.codes import ExitCode
from pipeline.cli.review import fail, subparser
from pipeline.errors import ExportError
from pipeline.review.export import DEFAULT_NAME, FORMATS, export


def add_arguments(commands: Any) -> None:
    parser = subparser(commands, "export", "copy delivered images to a folder or object store")
    parser.add_argument("dest", metavar="DEST", help="a folder or an fsspec URL (s3://...)")
    parser.add_argument("--approved-only", action="store_true", help="only approved jobs")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"file name template ({DEFAULT_NAME})")
    parser.add_argument("--format", choices=sorted(FORMATS), help="convert to this format")
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality, 1-100")
    parser.set_defaults(handler=command_export)


def command_export(args: argparse.Namespace) -> int:
    if args.quality is not None and not 1 <= args.quality <= 100:
        return fail("--quality must be between 1 and 100")
    try:
        result = export(
            args.out, args.dest, args.name, args.approved_only, args.format, args.quality
        )
    except ExportError as exc:
        return fail(str(exc))
    for note in result.skipped:
        print(f"note: {note}", file=sys.stderr)
    print(result.line())
    return ExitCode.OK
