"""The status words a record answers with, and the canned words of live error answers.

Records keep one internal state (PROCESSING, SUCCESS, or failed); what an answer says about it
is the record's own `StatusWords`, chosen (seeded) when the record is made, so one record keeps
its words across polls.
"""

from __future__ import annotations

from dataclasses import dataclass

# Seed words: what the seed documents and docs/api.md#unfinished-records name.
SEED_FINISHED = "SUCCESS"
SEED_UNFINISHED = "PROCESSING"
# The words live records were seen with, by meaning.
LIVE_FINISHED = ("SUCCESS", "COMPLETED", "SUCCEEDED")
LIVE_UNFINISHED = ("PENDING", "QUEUED", "IN_PROGRESS", "RUNNING", "PROCESSING")
LIVE_FAILED = ("FAILURE", "FAILED", "ERROR", "CANCELLED")
# An example of a word nobody documented (`--unknown-status-word`).
EXAMPLE_UNKNOWN_WORD = "WAITING_FOR_GPU"

# What the live API answers, as errorCode, when the provider behind it refused an edit; the
# canned message says nothing of the cause, which is in `details`.
BUSY_ERROR_CODE = "EXTERNAL_API_RESPONSE_WITH_ERROR"
BUSY_MESSAGES = (
    "The service is busy, please try again shortly",
    "The service is currently busy. Please try again shortly.",
    "Service is busy right now, please try again shortly",
)
# The provider's own reasons, as its error bodies put them.
BUSY_CAUSES = (
    (
        "Your request was rejected as a result of our safety system. Your request may contain "
        "content that is not allowed by our safety system.",
        "moderation_blocked",
    ),
    ("Invalid mask image format - mask size does not match image size", "invalid_value"),
    ("Billing hard limit has been reached", "billing_hard_limit_reached"),
    ("The image could not be processed: unsupported image content", "image_parse_error"),
)


@dataclass(frozen=True)
class StatusWords:
    """The words one record answers with while unfinished, once finished, and if failed."""

    finished: str = SEED_FINISHED
    unfinished: str = SEED_UNFINISHED
    failed: str = "FAILED"


# A record's words unless it was given its own: the seed words.
SEED_WORDS = StatusWords()


@dataclass(frozen=True)
class BusyAnswer:
    """A live-style 400 whose message is canned and whose real cause is the provider's."""

    message: str
    cause: str
    cause_code: str
