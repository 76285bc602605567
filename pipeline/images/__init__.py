"""Pure pixel and byte work on delivered images: the marketplace checks and the Amazon fit.

``marketplace_checks(image)`` measures and judges one image for Amazon, Google and Shopify
(``ImageChecks``, storable in a ledger line); ``fit_for_amazon(image, checks, ...)`` makes a
copy re-framed on pure white where that alone fixes Amazon's failures (``FitResult``).
"""

from __future__ import annotations

from pipeline.images.checks import (
    RULES_VERSION,
    Channel,
    Code,
    Failure,
    ImageChecks,
    checks_from_facts,
    marketplace_checks,
)
from pipeline.images.fit import FIT_MAX_UPSCALE, FitOutcome, FitResult, Refusal, fit_for_amazon
from pipeline.images.measure import ImageFacts

__all__ = [
    "FIT_MAX_UPSCALE",
    "RULES_VERSION",
    "Channel",
    "Code",
    "Failure",
    "FitOutcome",
    "FitResult",
    "ImageChecks",
    "ImageFacts",
    "Refusal",
    "checks_from_facts",
    "fit_for_amazon",
    "marketplace_checks",
]
