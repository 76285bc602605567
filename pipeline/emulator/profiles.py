"""Profiles: the regimes the emulator can serve, as sets of defaults.

`generous` is the API as the seed documents describe it: results on a public asset host, sync
calls that answer however long the edit takes, error bodies with a plain `message`. `live` is
the regime real accounts were seen to run in: a private result bucket (only the presigned
`temporaryUrl` works, and it signs the first result only), a CDN in front of the API that answers
an HTML 524 after 100 s while the origin finishes and charges the edit, error bodies with
`errorCode` and `details`, `usedCredit` one call behind, at most 5 uploads in flight, status
words beyond SUCCESS/PROCESSING/FAILED, and every parameter of the seed tables required.
`realistic` is `live` with the account's timing: edits of 10-60 s and 180 API requests a minute.

Short edits stay the default of `live` so that a demo run against it takes seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# A live-regime edit short enough for demos and tests: 0.25-0.75 s.
LIVE_EDIT_SECONDS = 0.5
LIVE_EDIT_JITTER = 0.5
# How long the CDN in front of the API waits for the origin (Cloudflare's 100 s).
LIVE_GATEWAY_SECONDS = 100.0
# A reported limit of the live API: uploads in flight at once.
LIVE_UPLOAD_CONCURRENCY = 5
# The account's edits as seen on live calls: 10 to 60 s, uniformly spread around 35 s.
REALISTIC_EDIT_SECONDS = 35.0
REALISTIC_EDIT_JITTER = 25.0 / 35.0
# The account's documented window: 180 API requests (uploads, calls, polls) a minute.
REALISTIC_RPM_LIMIT = 180.0


@dataclass(frozen=True)
class Profile:
    """The settings a profile decides; every other setting has one default for all."""

    edit_seconds: float
    edit_jitter: float
    gateway_timeout: float | None
    public_assets: bool
    honour_async: bool
    error_bodies: str
    credit_lag: bool
    upload_concurrency: int | None
    status_words: str
    require_all_params: bool
    rpm_limit: float | None = None

    def values(self) -> dict[str, Any]:
        return asdict(self)


GENEROUS = Profile(
    edit_seconds=0.0,
    edit_jitter=0.0,
    gateway_timeout=None,
    public_assets=True,
    honour_async=True,
    error_bodies="varied",
    credit_lag=False,
    upload_concurrency=None,
    status_words="seed",
    require_all_params=False,
)
LIVE = Profile(
    edit_seconds=LIVE_EDIT_SECONDS,
    edit_jitter=LIVE_EDIT_JITTER,
    gateway_timeout=LIVE_GATEWAY_SECONDS,
    public_assets=False,
    honour_async=True,
    error_bodies="live",
    credit_lag=True,
    upload_concurrency=LIVE_UPLOAD_CONCURRENCY,
    status_words="live",
    require_all_params=True,
)
REALISTIC = Profile(
    **{
        **LIVE.values(),
        "edit_seconds": REALISTIC_EDIT_SECONDS,
        "edit_jitter": REALISTIC_EDIT_JITTER,
        "rpm_limit": REALISTIC_RPM_LIMIT,
    }
)
PROFILES = {"generous": GENEROUS, "live": LIVE, "realistic": REALISTIC}

# The one place that decides what `EmulatorConfig()`, `pipeline emulator` and
# `pipeline run --emulator` serve when no profile is named: the regime real accounts run in.
DEFAULT_PROFILE = "live"
