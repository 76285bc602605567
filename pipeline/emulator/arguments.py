"""The options of `pipeline emulator`: one per EmulatorConfig field (dest = the field's name).

Settings a profile decides (profiles.py) have no argparse default: an option left out is not
in the namespace, so `config_from_args` takes it from the chosen `--profile`. Kept free of the
server's imports: every `pipeline` command builds this parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from .config import (
    BAD_KEY_STATUSES,
    ERROR_BODIES,
    FAILURE_WORDS,
    RATE_FIELDS,
    RETRY_AFTER_FORMATS,
    STATUS_WORDS,
    EmulatorConfig,
)
from .profiles import DEFAULT_PROFILE, PROFILES
from .words import EXAMPLE_UNKNOWN_WORD

_RATE_HELP = {
    "rate_429": "share of feature calls answered 429 at random (Retry-After 1 s)",
    "rate_5xx": "share of feature calls answered 500/502/503",
    "rate_drop": "share of requests whose connection is closed without an answer",
    "rate_malformed": "share of feature answers that are 200 with broken JSON",
    "rate_failed": "share of feature calls answered 200 with a failed record (free; see "
    "--failure-status)",
    "rate_truncate": "share of downloads cut short after a full Content-Length",
    "rate_expire": "share of temporaryUrl downloads answered 403 (expired signature)",
    "rate_forget": "share of feature calls that first forget their image asset (404)",
    "rate_slow": "share of feature calls that sleep --slow-seconds before answering",
    "rate_huge": "share of downloads that stream --huge-bytes of garbage",
    "rate_403_html": "share of API requests (uploads, feature calls, polls) answered 403 with "
    "an HTML challenge page, as a CDN in front of the API does (transient)",
    "rate_processing": 'share of feature calls answered 200 with status "PROCESSING" (a body '
    'with "async": true always is); poll GET /api/results/{uuid}',
    "rate_processing_failed": "share of PROCESSING records that end failed (free) instead of "
    "SUCCESS",
    "rate_lost_after_charge": "share of charged feature calls whose answer is lost: the "
    "connection drops or the CDN answers HTML 502/520/522 (the edit stays charged)",
    "rate_busy_400": "share of feature calls the provider refuses: 400 "
    'EXTERNAL_API_RESPONSE_WITH_ERROR, "busy, try again shortly", the cause in details (free)',
}
# Shown in their own group, not among the faults.
_RECORD_RATES = ("rate_processing", "rate_processing_failed")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _non_negative(text: str, kind: type[float] | type[int] = float) -> float:
    try:
        value = kind(text)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _count(text: str) -> int:
    return int(_non_negative(text, int))


def _positive_count(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _limit(text: str) -> int | None:
    """A count where 0 means no limit."""
    return _count(text) or None


def _by_profile(name: str) -> str:
    """The defaults of one profile-decided setting, e.g. "(generous: 0, live: 0.5, ...)"."""
    shown = ", ".join(
        f"{profile}: {_shown(values.values()[name])}" for profile, values in PROFILES.items()
    )
    return f"({shown})"


def _shown(value: object) -> str:
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --host, --port and one option per EmulatorConfig field (dest = the field's name)."""
    d = EmulatorConfig()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 for any free one (%(default)s)"
    )
    _add_profile(parser)
    _add_account(parser, d)
    timing = parser.add_argument_group("timing (seconds)")
    timing.add_argument(
        "--latency",
        type=_non_negative,
        metavar="S",
        default=d.latency,
        help="per feature call, before the origin starts on it",
    )
    timing.add_argument(
        "--jitter", type=_non_negative, metavar="S", default=d.jitter, help="+- on --latency"
    )
    timing.add_argument(
        "--asset-latency",
        type=_non_negative,
        metavar="S",
        default=d.asset_latency,
        help="per upload and download",
    )
    _add_regime(parser)
    _add_record_arguments(parser)
    _add_faults(parser, d)
    logs = parser.add_argument_group("logs")
    logs.add_argument(
        "--request-log",
        type=Path,
        metavar="PATH",
        default=None,
        help="append one JSON line per request here (never headers or the key)",
    )
    logs.add_argument(
        "--charge-log",
        type=Path,
        metavar="PATH",
        default=None,
        help="append one JSON line per charged edit here (uuid, type, cost, n, prompt, "
        "imageUrl, moment, and how it was answered: sync, async or lost)",
    )


def _add_profile(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("profile")
    group.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=DEFAULT_PROFILE,
        help="the regime served: generous (the seed documents), live (what live calls showed: "
        "private bucket, CDN gateway, live bodies and words, ...), realistic (live with edits "
        "of 10-60 s and 180 requests a minute); options below override it (%(default)s)",
    )
    group.add_argument(
        "--realistic",
        dest="profile",
        action="store_const",
        const="realistic",
        help="the same as --profile realistic",
    )


def _add_account(parser: argparse.ArgumentParser, d: EmulatorConfig) -> None:
    account = parser.add_argument_group("account")
    account.add_argument(
        "--key", dest="api_key", metavar="KEY", default=d.api_key, help="the accepted API key"
    )
    account.add_argument(
        "--credit-limit",
        type=_count,
        metavar="N",
        default=d.credit_limit,
        help="the member's cap (creditLimit): credits it may use in all; beyond: 402 (%(default)s)",
    )
    account.add_argument(
        "--used-credit", type=_count, metavar="N", default=d.used_credit, help="used at start"
    )
    account.add_argument(
        "--team-balance",
        type=_count,
        metavar="N",
        default=d.team_balance,
        help="the team's balance, which creditLimit does not show; beyond: 402 (no limit)",
    )
    # One window, given per minute or over any length: never both.
    limits = account.add_mutually_exclusive_group()
    limits.add_argument(
        "--rpm-limit",
        type=_positive,
        metavar="N",
        default=argparse.SUPPRESS,
        help="API requests (uploads, feature calls and result polls together; not downloads) "
        "admitted in any rolling 60 s; beyond: 429 with Retry-After " + _by_profile("rpm_limit"),
    )
    limits.add_argument(
        "--window-limit",
        type=_positive_count,
        metavar="N",
        default=argparse.SUPPRESS,
        help="the same limit over another window: N API requests in any --window-seconds "
        "(instead of --rpm-limit)",
    )
    account.add_argument(
        "--window-seconds",
        type=_positive,
        metavar="S",
        default=d.window_seconds,
        help="length of the --window-limit window (%(default)s)",
    )
    account.add_argument(
        "--bad-key-status",
        type=int,
        choices=BAD_KEY_STATUSES,
        default=d.bad_key_status,
        help='status of a wrong or missing key, JSON {"message": "Invalid API key"} (%(default)s)',
    )
    account.add_argument(
        "--retry-after",
        choices=RETRY_AFTER_FORMATS,
        default=d.retry_after,
        help="Retry-After format on 429 answers (%(default)s)",
    )


def _add_regime(parser: argparse.ArgumentParser) -> None:
    """The settings a profile decides: no argparse default, the profile's value unless given."""
    regime = parser.add_argument_group("regime (defaults by profile)")
    add = regime.add_argument
    keep = argparse.SUPPRESS
    add(
        "--edit-seconds",
        type=_non_negative,
        metavar="S",
        default=keep,
        help="the origin's render time: a sync call is held that long, an unfinished record "
        "finishes that long after submission " + _by_profile("edit_seconds"),
    )
    add(
        "--edit-jitter",
        type=_rate,
        metavar="F",
        default=keep,
        help="+- fraction of --edit-seconds, seeded " + _by_profile("edit_jitter"),
    )
    add(
        "--gateway-timeout",
        type=_positive,
        metavar="S",
        default=keep,
        help="the CDN answers a sync call still rendering after S seconds with an HTML 524, "
        "while the origin finishes and charges it " + _by_profile("gateway_timeout"),
    )
    add(
        "--no-gateway",
        dest="gateway_timeout",
        action="store_const",
        const=None,
        default=keep,
        help="no CDN timeout: sync calls answer however long the edit takes",
    )
    add(
        "--honour-async",
        action=argparse.BooleanOptionalAction,
        default=keep,
        help='whether "async": true gets an unfinished record at once; --no-honour-async '
        "renders first and answers SUCCESS " + _by_profile("honour_async"),
    )
    add(
        "--public-assets",
        action=argparse.BooleanOptionalAction,
        default=keep,
        help="whether the asset host serves unsigned reads; --no-public-assets: 403 "
        "AccessDenied, only temporaryUrl (the first result) reads " + _by_profile("public_assets"),
    )
    add(
        "--error-bodies",
        choices=ERROR_BODIES,
        default=keep,
        help="shape of JSON error answers: varied (5xx text at message, error.message or error, "
        "seeded), message, or live (errorCode, message, details, context) "
        + _by_profile("error_bodies"),
    )
    add(
        "--credit-lag",
        action=argparse.BooleanOptionalAction,
        default=keep,
        help="teamUser.usedCredit shows the spend before the call it answers "
        + _by_profile("credit_lag"),
    )
    add(
        "--upload-concurrency",
        type=_limit,
        metavar="N",
        default=keep,
        help="uploads in flight at once; one more is answered 429 with Retry-After; 0: no limit "
        + _by_profile("upload_concurrency"),
    )
    add(
        "--status-words",
        choices=STATUS_WORDS,
        default=keep,
        help="seed (SUCCESS/PROCESSING/failure word) or live (COMPLETED, QUEUED, ERROR, ... "
        "seeded per record) " + _by_profile("status_words"),
    )
    add(
        "--unknown-status-word",
        metavar="WORD",
        default=None,
        help=f"an undocumented word every unfinished record answers, e.g. {EXAMPLE_UNKNOWN_WORD}",
    )
    add("--require-all-params", action=argparse.BooleanOptionalAction, default=keep,
        help="a feature call missing any parameter of the seed tables (quality, ...) is a "
        "live-style 400 " + _by_profile("require_all_params"))  # fmt: skip


def _add_record_arguments(parser: argparse.ArgumentParser) -> None:
    records = parser.add_argument_group("unfinished records")
    _add_rates(records, _RECORD_RATES)
    # The older names of --edit-seconds and (in seconds) --edit-jitter.
    records.add_argument(
        "--processing-seconds",
        type=_non_negative,
        metavar="S",
        default=argparse.SUPPRESS,
        help="the same as --edit-seconds",
    )
    records.add_argument(
        "--processing-jitter",
        type=_non_negative,
        metavar="S",
        default=argparse.SUPPRESS,
        help="+- seconds on --processing-seconds, seeded (--edit-jitter as seconds)",
    )


def _add_faults(parser: argparse.ArgumentParser, d: EmulatorConfig) -> None:
    faults = parser.add_argument_group("faults (rates are probabilities 0..1)")
    _add_rates(faults, [rate for rate in RATE_FIELDS if rate not in _RECORD_RATES])
    faults.add_argument(
        "--slow-seconds",
        type=_non_negative,
        metavar="S",
        default=d.slow_seconds,
        help="sleep of a slow call (%(default)s)",
    )
    faults.add_argument(
        "--huge-bytes",
        type=_count,
        metavar="N",
        default=d.huge_bytes,
        help="length of a huge download (%(default)s)",
    )
    faults.add_argument(
        "--foreign-temporary-url",
        action="store_true",
        help="point temporaryUrl at another, unreachable host (203.0.113.1)",
    )
    faults.add_argument(
        "--failure-status",
        choices=FAILURE_WORDS,
        default=d.failure_status,
        help="status word of a failed record with seed words; mixed: FAILED or FAILURE, "
        "seeded (%(default)s)",
    )
    faults.add_argument(
        "--drift",
        type=_count,
        metavar="LEVELS",
        default=d.drift,
        help="inpainted results change the pixels the mask keeps by up to this many levels per "
        "channel (a seeded shift per result, as the real model does not keep them exactly); "
        "0 keeps them exactly (%(default)s)",
    )
    faults.add_argument(
        "--seed", type=int, default=d.seed, help="seed of every random decision (%(default)s)"
    )


def _add_rates(group: argparse._ArgumentGroup, names: Iterable[str]) -> None:
    """One ``--rate-x P`` option a fault rate, each off (0.0) unless given."""
    for name in names:
        flag = "--" + name.replace("_", "-")
        group.add_argument(
            flag, dest=name, type=_rate, metavar="P", default=0.0, help=_RATE_HELP[name]
        )
