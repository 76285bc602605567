"""Stage 4, the API: ``OneMinClient`` (one attempt per call; every HTTP answer mapped to the error
tree in ``error_for_status`` alone), the pure ``RetryPolicy``, and the rate gate (``Throttle``
over ``RateControl``, the one owner of the pace and the 429 rule, behind the ``Gate`` protocol
the Ray budget also implements). See ``docs/api.md``."""

from __future__ import annotations

from pipeline.api.client import OneMinClient, error_for_status
from pipeline.api.retry import RetryPolicy, retry_loop
from pipeline.api.throttle import Gate, RateControl, Throttle

__all__ = [
    "Gate",
    "OneMinClient",
    "RateControl",
    "RetryPolicy",
    "Throttle",
    "error_for_status",
    "retry_loop",
]
