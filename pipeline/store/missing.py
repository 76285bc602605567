"""What is gone: the one rule for whether a done job's outputs are still there.

``status`` shows such a job ``missing``, the re-fetch brings its outputs back from the stored
result, ``--redo-missing`` buys it again. A local OUT is checked file by file; a bucket OUT by
one listing (``store.bucket.BucketListing``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class HasOutputs(Protocol):
    @property
    def outputs(self) -> tuple[str, ...]: ...


def outputs_missing(out_dir: Path, outputs: tuple[str, ...]) -> bool:
    """Whether any of a succeeded job's outputs (paths relative to ``out_dir``) is gone.

    A stat per file (5.5 us here) rather than a listing per job folder (13.5 us): jobs have one
    to a few outputs.
    """
    root = os.fspath(out_dir) + os.sep
    isfile = os.path.isfile
    return not all(isfile(root + output) for output in outputs)


def missing_rule(gone: Callable[[tuple[str, ...]], bool]) -> Callable[[HasOutputs], bool]:
    """``--redo-missing``'s test for the plan: this succeeded job's outputs are ``gone``."""
    return lambda state: gone(state.outputs)
