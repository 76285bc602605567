"""The reliability suite's own toolkit: quiet options, a tallying emulator, log accounting.

Catalogs, CLI runs and output checks are the shared ones of ``tests.helpers.e2e``; what is
here is the suite's own: its quiet options, an emulator that tallies its faults, and the
accounting that replays the emulator's log into the retries the pipeline must have made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.helpers import e2e as e2e_helpers
from tests.helpers.e2e import QUICK_POLLS, Expected, records
from tests.helpers.emulator import KEY, RunningEmulator, serve_in_thread
from tests.reliability.figures import tally, tally_faults

# Progress bar and report off (report tests turn it on), and a pace that never throttles.
QUIET = ["--no-progress", "--no-report", "--rpm", "60000"]
# For runs without a profile of their own (``write_profile`` polls quickly too).
QUICK = ["--config", str(QUICK_POLLS)]


# -- running------------------------------------------------------------------------------------


@contextmanager
def emulator(**config: Any) -> Iterator[RunningEmulator]:
    """``emulator_thread`` that adds its request log to the suite's fault figures.

    Tallied once the emulator has stopped: a slow call the client gave up on is logged only
    when its handler ends, and stopping the emulator is what wakes it.
    """
    started: RunningEmulator | None = None
    try:
        # The seed documents' regime (a public asset host, instant edits): this suite's fault
        # accounting replays its downloads; the live regime's own kills are test_live_kills.
        with serve_in_thread(
            EmulatorServer(EmulatorConfig.generous(api_key=KEY, **config))
        ) as started:
            yield started
    finally:
        if started is not None:
            tally_faults(started.log)


def assert_outputs_whole(out: Path, expected: dict[str, Expected]) -> None:
    """``e2e_helpers.assert_outputs_whole``, counted in the suite's figures."""
    e2e_helpers.assert_outputs_whole(out, expected)
    tally("verified/jobs whole", len(expected))


# -- accounting: what the emulator injected vs what the pipeline counted ---------------------

# A feature-call fault and the retry reason it must produce (stats.py: retry/reason/<kind>).
# ``forget`` is absent: a forgotten asset is uploaded again, which is not a retry.
FEATURE_FAULT_REASON = {
    "drop": "connection",
    "429": "rate_limited",
    "rate_limit": "rate_limited",
    "5xx": "server_error",
    "slow": "timeout",  # the profile's feature timeout is shorter than slow_seconds
    "malformed": "bad_response",
    "failed": "record_failed",
}


def observed_retries(out: Path) -> Counter[tuple[str, str]]:
    """Retries the pipeline recorded, by (step, reason), from the ledger's retrying lines."""
    return Counter(
        (line["step"], line["error"]["kind"])
        for line in records(out)
        if line["status"] == "retrying"
    )


# The words a polled record that failed answers with (an async call's failed edit).
FAILED_RECORD_WORDS = frozenset({"FAILED", "FAILURE", "ERROR", "CANCELLED"})


def expected_retries(log: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Retries the pipeline must have made, by (step, reason), from the emulator's log alone.

    Exact when every job succeeded (a job that fails makes no retry after its last try).
    """
    expected: Counter[tuple[str, str]] = Counter()
    for entry in log:
        if entry["route"] == "features" and entry["fault"] in FEATURE_FAULT_REASON:
            expected["feature", FEATURE_FAULT_REASON[entry["fault"]]] += 1
        elif entry["route"] == "results" and entry["record"] in FAILED_RECORD_WORDS:
            expected["feature", "record_failed"] += 1  # an async record polled to its failure
        elif entry["route"] == "assets" and entry["fault"] == "drop":
            expected["upload", "connection"] += 1  # a POST: aiohttp never re-sends it
    for entries in _downloads_by_result(log).values():
        expected.update(("download", reason) for reason in replay_downloads(entries))
    return expected


def _downloads_by_result(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """GETs grouped by the result they fetch (signed URL and asset host), in arrival order.

    One job fetches its results one at a time, so the order in the log is the client's order.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in log:
        if entry["route"] in ("temporary", "asset") and entry["method"] == "GET":
            path = entry["path"].removeprefix("/s3/asset.1min.ai/").removeprefix("/asset/")
            if _is_result(path):  # not the check of an upload on the asset host
                grouped.setdefault(path, []).append(entry)
    return grouped


def _is_result(path: str) -> bool:
    """A result the emulator made (its stored names end so), not one of our uploads."""
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.endswith(("_inpainted", "_background_replaced"))


def replay_downloads(entries: list[dict[str, Any]]) -> list[str]:
    """The retry reasons the client must have recorded for one result, replaying its logic.

    One fetch attempt tries the signed URL (result 0 only), then the asset host; it fails only
    if both fail, with the reason of the last failure that is not a 403/404 (client.py
    ``fetch_result``). aiohttp re-sends an idempotent GET once, by itself, when the server
    drops the connection before answering (RFC 9112 §9.3.1), so a logged drop reaches the
    pipeline only if that second GET is dropped too: drops are consumed in pairs here.
    """
    pending = list(entries)
    signed = bool(pending) and pending[0]["route"] == "temporary"
    reasons: list[str] = []
    while pending:
        failures = []
        for route in ("temporary", "asset") if signed else ("asset",):
            outcome = _one_get(pending, route)
            if outcome is None:
                break
            failures.append(outcome)
        else:
            permanent = [f for f in failures if f != "not_found"]
            reasons.append(permanent[-1] if permanent else "bad_response")
            continue
        assert not pending, f"requests after a successful download: {pending}"
    return reasons


def _one_get(pending: list[dict[str, Any]], route: str) -> str | None:
    """Consume one ``client.download`` call; None on success, else how it failed."""
    entry = pending.pop(0)
    assert entry["route"] == route, (route, entry)
    if entry["fault"] == "drop":
        entry = pending.pop(0)  # aiohttp's own re-send
        assert entry["route"] == route, (route, entry)
        if entry["fault"] == "drop":
            return "connection"
    if entry["fault"] in ("truncate", "huge"):
        return "bad_response"
    if entry["status"] in (403, 404):  # an expired signature, or an unknown path
        return "not_found"
    assert entry["status"] == 200, entry
    return None


def retries_by_reason(retries: Counter[tuple[str, str]]) -> dict[str, int]:
    """(step, reason) counts summed per reason, keyed as summary.json's stats are."""
    totals: Counter[str] = Counter()
    for (_step, reason), count in retries.items():
        totals[f"retry/reason/{reason}"] += count
    return dict(totals)


def paid_feature_calls(log: list[dict[str, Any]]) -> int:
    return sum(1 for e in log if e["route"] == "features" and e["credits"])
