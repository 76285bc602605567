"""Preflight: every check on a job that needs no network, before any credit is spent.

``Preflight.check(job)`` returns the job (``size: auto`` resolved), its problems and its notices
(warnings that do not stop the job). Each distinct file is read at most once, its digest and its
checks from the same bytes, and not at all while the state folder's stat cache says it is
unchanged since an earlier run read it; the only per-job memory is the set of ids seen, to find
duplicates.

The package: ``core`` (``Preflight``), ``fields`` (ids, prompt, parameters), ``files`` (what a
file is: ``ImageFacts``), ``reader`` (one read per new or changed file), ``statcache`` (what was
read, kept between runs in SQLite), ``quick`` (the nightly fast path: a photo the stat cache
knows unchanged costs an ``lstat`` and a lookup), ``maskfile`` (a mask file's pixels) and
``effective`` (masks made here). The one pass over the rows, the content keys and the spool
are the plan's (``plan.onepass``, ``plan.keys``, ``plan.spool``).

A run with a report hands the bytes of each image it reads to ``on_image_read`` (the report's
thumbnail is made from them), so a photo is opened for its check and its upload only.

Policies (the decisions behind the checks):

- Ids must be unique and usable as a folder name (see ``naming.folder_name_problem``). They
  are compared ignoring letter case and Unicode normal form, because ``SKU-1`` and ``sku-1`` are
  one folder on macOS and Windows.
- Files: a path holding a NUL byte, or bytes that are not UTF-8, is refused before any OS
  call (``manifest.build.unusable_path``). A path that points into the manifest's folder must
  stay inside it once symbolic links are resolved (a link placed there must not quietly
  upload a file from elsewhere). A path written outside the folder (absolute, ``~`` or
  ``..``) is taken as written: the manifest says plainly where the file is. Inputs must be
  regular, non-empty, readable files.
- Formats: the API takes PNG, JPEG and WebP (the seed's mask table; we hold images to the same).
  GIF, BMP, TIFF and others are refused with a hint to convert, not converted silently, so the
  bytes uploaded are the bytes the user has and the content key is the file's digest. JPEG
  files that Pillow calls MPO (phone cameras) are JPEGs and pass.
- Animated images (APNG, animated WebP) are refused: the API documents still images only and
  what it does with extra frames is unknown, which costs credits to find out.
- Integrity is checked once per file as cheaply as the format allows: PNG by ``verify()`` (every
  chunk's CRC, no pixel decoding), JPEG decoded at 1/8 scale (still reads every byte), WebP by a
  full decode. Images larger than ``MAX_PIXELS`` are refused (decompression bombs).
- Masks: ``L``, ``RGB`` and ``1`` are uploaded as they are (the API reads luminance). Any other
  mode is converted to grayscale before upload (``PlannedJob.mask_convert``, done by
  ``mask_upload_bytes``) and a notice says so. When the mask has real transparency (some alpha
  below 255) OpenAI's convention decides, since gpt-image models define it: transparent = edit,
  so the upload is ``255 - alpha`` and colours are ignored; the notice gives the share of the
  image that will be edited, so an inverted mask shows at a glance. Without transparency the
  conversion keeps luminance.
- Mask content (the seeds' checklist) is only warned about: all black (edits nothing), all white
  (edits everything), mostly mid-gray (low contrast). Notices about a file are given once, with
  the first job that uses it, so 100,000 jobs sharing a mask do not print it 100,000 times.
- ``size: auto`` picks the allowed size whose aspect ratio is closest to the image's (ties go to
  the square). For URL or asset inputs the image cannot be seen offline: 1024x1024 and a notice.
"""

from PIL import Image  # noqa: F401  (tests patch ``Image.open`` through this package)

from pipeline.errors import Notice, Problem
from pipeline.preflight.core import CACHE_SIZE, FALLBACK_SIZE, Preflight, ShapeCheck
from pipeline.preflight.effective import EffectiveMask
from pipeline.preflight.fields import AUTO_SIZE, ID_FILTER_BITS, IdSet, id_fingerprint
from pipeline.preflight.files import (
    ACCEPTED_FORMATS,
    LARGE_FILE_BYTES,
    MAX_PIXELS,
    ImageFacts,
    closest_size,
)
from pipeline.preflight.maskfile import mask_as_grayscale, mask_upload_bytes
from pipeline.preflight.statcache import StatCache

__all__ = [
    "ACCEPTED_FORMATS",
    "AUTO_SIZE",
    "CACHE_SIZE",
    "FALLBACK_SIZE",
    "ID_FILTER_BITS",
    "LARGE_FILE_BYTES",
    "MAX_PIXELS",
    "EffectiveMask",
    "IdSet",
    "ImageFacts",
    "Notice",
    "Preflight",
    "Problem",
    "ShapeCheck",
    "StatCache",
    "closest_size",
    "id_fingerprint",
    "mask_as_grayscale",
    "mask_upload_bytes",
]
