"""``read_ledger``: the ledger folded, from its checkpoint and the lines after it when it can.

A resume, ``pipeline status`` and the report read the compact state (``fold.LedgerState``):
the checkpoint when it describes this ledger (``checkpoint``), then only the lines after its
offset. ``detailed=True`` folds every line into ``JobState`` objects with their details (export
and the review CLI), never from a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

from pipeline.ledger.checkpoint import load_checkpoint
from pipeline.ledger.fold import DetailedLedger, LedgerState, fold_tail, read_detailed


@overload
def read_ledger(path: Path, *, detailed: Literal[False] = ...) -> LedgerState: ...
@overload
def read_ledger(path: Path, *, detailed: Literal[True]) -> DetailedLedger: ...
def read_ledger(path: Path, *, detailed: bool = False) -> LedgerState | DetailedLedger:
    """The ledger at ``path`` folded (see the module docstring); never raises for damage."""
    if detailed:
        return read_detailed(path)
    return read_state(path)


def read_state(path: Path, *, use_checkpoint: bool = True) -> LedgerState:
    """The compact fold: the checkpoint (if usable) and the lines after it.

    ``state.checkpoint_note`` says what became of the checkpoint ("none", "used", or why it
    was ignored); ``state.tail_lines`` how many ledger lines were read after it."""
    loaded = load_checkpoint(path) if use_checkpoint else None
    state = loaded.state if loaded is not None and loaded.state is not None else LedgerState()
    state.checkpoint_note = loaded.note if loaded is not None else "not read"
    state.tail_lines = fold_tail(state, path)
    return state
