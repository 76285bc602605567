"""Stage 5, the store: where results go, whole. ``local`` (``OUT/<id>/<index>.<ext>``, temp then
rename, earlier outputs kept aside), ``bucket`` (the output target, a bucket OUT's store and its
listing), ``objects`` (whole-object puts in an object store), ``verify`` (a result is a whole
image of the size asked for, checked while it streams) and ``missing`` (the one rule for a done
job whose outputs are gone)."""

from __future__ import annotations

from pipeline.store.bucket import BucketStore, OutputTarget, output_target
from pipeline.store.local import Store
from pipeline.store.missing import outputs_missing
from pipeline.store.verify import ResultStream, check_image

__all__ = [
    "BucketStore",
    "OutputTarget",
    "ResultStream",
    "Store",
    "check_image",
    "output_target",
    "outputs_missing",
]
