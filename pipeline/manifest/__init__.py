"""Manifest: a YAML file (plus CSV / JSONL items and glob entries) → a header and a stream of Jobs.

Layout (docs/manifest.md#layout)::

    version: 1
    name: spring-catalog        # optional, default: the file's stem; names the output folder
    defaults: {type: inpaint, size: auto, quality: medium}
    jobs:  [{id, type, image, mask, prompt, size, n, quality, output_format,
             output_compression, background}, ...]
    glob:  [{pattern: "images/*.jpg", prompt: "studio shot of {stem}", type: background}, ...]
    items: catalog.csv          # or .jsonl, or a list of them: one job per row, same field names

Jobs come out in that order: ``jobs``, then ``glob`` matches (sorted), then ``items`` rows.

Rules a user relies on:

- A job's own value beats ``defaults``. Empty (or blank) CSV cells and ``null`` mean "not set";
  an explicit ``""`` in YAML or JSON is a value (so ``prompt: ""`` is reported as empty).
- ``type`` takes ``IMAGE_INPAINTER`` / ``inpaint`` or ``BACKGROUND_REPLACER`` / ``background``,
  in any letter case.
- Fields for one feature only (``mask``, ``n``, ``output_format``, ``output_compression`` for the
  inpainter; ``background`` for the replacer) are a problem when written on a job of the other
  feature, and silently ignored when they come from ``defaults``, which both features share.
- ``id`` defaults to the image's file stem. Checking that it is unique and safe as a folder name
  is preflight's work; the manifest name is checked here because the header names the run folder.
- ``image`` / ``mask``: ``http(s)://...`` is a URL, ``asset:<path>`` an already uploaded asset,
  anything else a file path, relative to the manifest's folder (``~`` expands). Paths are
  normalised lexically only; preflight resolves symbolic links and applies the folder policy.
- A glob entry makes one job per matching file (hidden files excluded, ``**`` recurses); in its
  text fields ``{stem}`` becomes the file's stem, e.g. ``mask: masks/{stem}.png``.
- CSV: UTF-8 (a byte-order mark is fine), the first row names the columns (letter case and
  surrounding spaces ignored, unnamed columns ignored). JSONL: one object per line, blank lines
  skipped. Both are read as a stream, so a file of a million rows never sits in memory.

Rows are validated with pydantic v2 (a ``TypedDict`` schema): its Rust core checks a row in about
a microsecond, reports every bad field of a row at once with the field as its location, and its
lax mode turns CSV strings such as ``"2"`` into ints. Range and cross-file checks are preflight's.
"""

from __future__ import annotations

from pipeline.manifest.build import build_job, input_ref, parse_feature
from pipeline.manifest.header import load_manifest
from pipeline.manifest.schema import (
    BACKGROUND_ONLY,
    FEATURE_ALIASES,
    HEADER_FIELDS,
    INPAINT_ONLY,
    JOB_FIELDS,
    VERSION,
    JobFields,
)
from pipeline.manifest.sources import GlobEntry, Manifest
from pipeline.naming import folder_name_problem

__all__ = [
    "BACKGROUND_ONLY",
    "FEATURE_ALIASES",
    "HEADER_FIELDS",
    "INPAINT_ONLY",
    "JOB_FIELDS",
    "VERSION",
    "GlobEntry",
    "JobFields",
    "Manifest",
    "build_job",
    "folder_name_problem",
    "input_ref",
    "load_manifest",
    "parse_feature",
]
