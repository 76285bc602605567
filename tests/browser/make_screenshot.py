"""Make ``docs/report.png``: the review page of a demo-like run, as headless Chromium draws it.

    python -m tests.browser.make_screenshot                 # a synthetic six-job run
    python -m tests.browser.make_screenshot --out out/demo  # the report of a real run folder

The image is written to ``docs/report.png`` unless ``--png`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pipeline.review.page import write_report
from tests.browser.playwright_helpers import WINDOW, launched, wait_ready
from tests.browser.synthetic_run import build_run, demo_jobs

DEFAULT_PNG = Path(__file__).resolve().parents[2] / "docs" / "report.png"


def shoot(out_dir: Path, png: Path) -> Path:
    report = write_report(out_dir)
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        with launched() as browser:
            page = browser.new_page(viewport=WINDOW)
            page.goto(report.as_uri())
            wait_ready(page)
            # Lazily loaded images in view: wait until each has decoded (or failed).
            page.wait_for_function(
                "[...document.images].filter((i) => i.getBoundingClientRect().top < innerHeight)"
                ".every((i) => i.complete)"
            )
            page.screenshot(path=str(png))
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="a run's output folder (default: synthetic)")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG, help="where to write the image")
    args = parser.parse_args(argv)
    if args.out is not None:
        print(shoot(args.out, args.png))
        return 0
    with tempfile.TemporaryDirectory(prefix="report-demo-") as temp:
        out = Path(temp) / "demo"
        build_run(out, demo_jobs(), side=512, name="demo")
        print(shoot(out, args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
