"""The benchmark's machinery on a tiny scale: emulator process, probe, bare loop, comparison.

No timing is asserted (that is ``make bench``'s job): only that both clients did every job, that
the pipeline wrote each result byte for byte as the server sent it, and that the figures exist.
"""

from __future__ import annotations

import math

import pytest

from bench.scenarios.overhead import TARGET_RATIO, Plan, measure

pytestmark = pytest.mark.slow


def test_overhead_scenario_runs_both_clients_and_reports_figures() -> None:
    result = measure(Plan(jobs=2, concurrencies=(2,), repeats=1, baseline_repeats=1))

    assert result.error is None
    figures = {figure.name: figure for figure in result.figures}
    ratio = figures["pipeline / bare CPU, c=2"]
    assert ratio.target == ("<=", TARGET_RATIO)
    for name in ("pipeline CPU per job, c=2", "bare loop CPU per job, c=2"):
        value = figures[name].value
        assert value is not None and math.isfinite(value)
    assert len(ratio.runs) == 1
    # Inputs are ~2 MB noisy PNGs, so results stay big (the emulator keeps unmasked pixels).
    assert result.details["input_bytes"] > 1_500_000
