"""Every name inside an output folder (OUT) and a run's state folder, in one place.

A local OUT is both: outputs and state. A bucket OUT (``s3://...``) holds the outputs (and, at the
end of a run, copies of ``LEDGER_NAME`` and ``SUMMARY_NAME``); the state stays in a local folder
(``.pipeline/<name>`` beside the manifest, or ``--state``). See ``docs/ledger.md``.

    OUT/ or STATE/
      ledger.jsonl          append-only: one JSON line per event of a job (LEDGER_NAME)
      ledger.checkpoint     the ledger's folded state up to an offset, derived (CHECKPOINT_NAME)
      .lock                 flock held by the run writing here (LOCK_NAME)
      summary.json          the folder as a whole, plus its last run (SUMMARY_NAME)
      runs/<stamp>.json     one record per run that sent anything (RUNS_DIR)
      reviews.jsonl         reviewers' decisions, append-only (REVIEWS_NAME)
      report.html           the review page (REPORT_NAME), its thumbnails in .thumbs/ (THUMBS_DIR)
      report-data/<build>/  the page's jobs in chunk files, one folder per build (REPORT_DATA_DIR)
      staging/              a bucket run's temporaries (STAGING_DIR)
    OUT/<id>/
      <index>.<ext>         a job's images, index from 0
      .raw/<index>.<ext>    the API's own image of a ``protect`` job (RAW_DIR)
      .superseded/<stamp>/  earlier outputs of a redone job, never deleted (SUPERSEDED_DIR)
      .part-*               a download in progress (TEMP_PREFIX): swept by the next run
"""

from __future__ import annotations

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".lock"
CHECKPOINT_SUFFIX = ".checkpoint"  # beside a ledger, its suffix replaced: ledger.checkpoint
CHECKPOINT_NAME = "ledger" + CHECKPOINT_SUFFIX
SUMMARY_NAME = "summary.json"
RUNS_DIR = "runs"
REVIEWS_NAME = "reviews.jsonl"
REPORT_NAME = "report.html"
THUMBS_DIR = ".thumbs"
REPORT_DATA_DIR = "report-data"
STAGING_DIR = "staging"
RAW_DIR = ".raw"
SUPERSEDED_DIR = ".superseded"
TEMP_PREFIX = ".part-"
EXPORT_CSV_NAME = "export.csv"  # written by ``pipeline export`` into DEST

# State files a bucket OUT receives a copy of when a run ends: the bucket then says which of its
# files are current, and a state folder lost with its machine can be rebuilt from it.
COPIED_TO_BUCKET = (LEDGER_NAME, SUMMARY_NAME)


def output_name(index: int, extension: str) -> str:
    """A job's ``index``-th image inside ``OUT/<id>/``."""
    return f"{index}.{extension}"
