"""Checks of a feature request against the seed tables, with the messages the emulator answers.

Every rejection names the offending field first (`"<field>: <what is wrong>"`), so a client can
report it to the user as is. Checks run in a fixed order and the first failure wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

MODEL = "gpt-image-1-mini"
INPAINTER = "IMAGE_INPAINTER"
BACKGROUND_REPLACER = "BACKGROUND_REPLACER"
FEATURE_TYPES = (INPAINTER, BACKGROUND_REPLACER)
SIZES = ("1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("low", "medium", "high")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("auto", "opaque", "transparent")
PROMPT_MAX = 4000
N_MAX = 10
# Credits per produced image, by quality.
CREDITS_PER_IMAGE = {"low": 1000, "medium": 4000, "high": 8000}

# "async" asks for an unfinished record at once (docs/api.md#unfinished-records); every other key is
# refused.
_TOP_LEVEL_KEYS = ("type", "model", "promptObject", "async")


class ApiError(Exception):
    """An answer other than success: status, JSON message and optional headers.

    `code` and `details` are the live body's errorCode and details (defaults by status);
    `live` makes the answer live-shaped whatever `error_bodies` says (a refusal that only the
    live API gives).
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
        details: str | None = None,
        live: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.code = code
        self.details = details
        self.live = live


@dataclass(frozen=True)
class FeatureParams:
    type: str
    prompt_object: dict[str, Any]  # as the record echoes it: defaults filled in
    image_url: str
    mask_url: str | None
    prompt: str
    size: tuple[int, int]
    n: int
    quality: str
    output_format: str
    output_compression: int
    background: str
    asynchronous: bool = False

    @property
    def cost(self) -> int:
        return CREDITS_PER_IMAGE[self.quality] * self.n


def _bad(field: str, problem: str) -> ApiError:
    return ApiError(400, f"{field}: {problem}")


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which Python counts as int; the API does not.
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(choices: tuple[str, ...]) -> Callable[[str, object], None]:
    def check(field: str, value: object) -> None:
        if not isinstance(value, str) or value not in choices:
            raise _bad(field, f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def _asset_path(field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, "must be a non-empty string (an asset path from /api/assets)")


def _prompt(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    if not value:
        raise _bad(field, "must not be empty")
    if len(value) > PROMPT_MAX:
        raise _bad(field, f"must be at most {PROMPT_MAX} characters, got {len(value)}")


def _int_range(low: int, high: int) -> Callable[[str, object], None]:
    def check(field: str, value: object) -> None:
        if not _is_int(value):
            raise _bad(field, f"must be an integer from {low} to {high}, got {value!r}")
        assert isinstance(value, int)
        if not low <= value <= high:
            raise _bad(field, f"must be from {low} to {high}, got {value}")

    return check


@dataclass(frozen=True)
class _Field:
    check: Callable[[str, object], None]
    required: bool
    default: object = None


_FIELDS: dict[str, dict[str, _Field]] = {
    INPAINTER: {
        "imageUrl": _Field(_asset_path, True),
        "maskUrl": _Field(_asset_path, True),
        "prompt": _Field(_prompt, True),
        "size": _Field(_one_of(SIZES), True),
        "n": _Field(_int_range(1, N_MAX), True),
        "quality": _Field(_one_of(QUALITIES), False, "medium"),
        "output_format": _Field(_one_of(OUTPUT_FORMATS), False, "png"),
        "output_compression": _Field(_int_range(0, 100), False, 85),
    },
    BACKGROUND_REPLACER: {
        "imageUrl": _Field(_asset_path, True),
        "prompt": _Field(_prompt, True),
        "size": _Field(_one_of(SIZES), True),
        "quality": _Field(_one_of(QUALITIES), False, "medium"),
        "background": _Field(_one_of(BACKGROUNDS), False, "auto"),
    },
}


def validate_feature(payload: object, require_all_params: bool = False) -> FeatureParams:
    """Return the checked parameters or raise ApiError(400) naming the first bad field.

    With `require_all_params`, a parameter the seed table gives a default for is required all
    the same, as the live API required `quality` although its page calls it optional.
    """
    if not isinstance(payload, dict):
        raise _bad("body", "must be a JSON object")
    for key in payload:
        if key not in _TOP_LEVEL_KEYS:
            raise _bad(str(key), "unknown field")
    feature_type = payload.get("type")
    if feature_type not in FEATURE_TYPES:
        raise _bad("type", f"must be one of {', '.join(FEATURE_TYPES)}, got {feature_type!r}")
    if payload.get("model") != MODEL:
        raise _bad("model", f"must be {MODEL}, got {payload.get('model')!r}")
    asynchronous = payload.get("async", False)
    if not isinstance(asynchronous, bool):
        raise _bad("async", f"must be true or false, got {asynchronous!r}")
    prompt_object = payload.get("promptObject")
    if not isinstance(prompt_object, dict):
        raise _bad("promptObject", "must be an object")
    params = _validate_prompt_object(feature_type, prompt_object, require_all_params)
    return replace(params, asynchronous=asynchronous)


def _validate_prompt_object(
    feature_type: str, prompt_object: dict[str, Any], require_all_params: bool
) -> FeatureParams:
    spec = _FIELDS[feature_type]
    for key in prompt_object:
        if key not in spec:
            raise _bad(str(key), f"unknown field for {feature_type}")
    filled: dict[str, Any] = {}
    for name, field in spec.items():
        if name not in prompt_object:
            if field.required:
                raise _bad(name, "is required")
            if require_all_params:
                # Only the live API refuses this, so its answer is live-shaped.
                raise ApiError(400, f"{name}: is required", live=True)
            filled[name] = field.default
            continue
        field.check(name, prompt_object[name])
        filled[name] = prompt_object[name]
    width, height = (int(part) for part in filled["size"].split("x"))
    return FeatureParams(
        type=feature_type,
        prompt_object=filled,
        image_url=filled["imageUrl"],
        mask_url=filled.get("maskUrl"),
        prompt=filled["prompt"],
        size=(width, height),
        n=filled.get("n", 1),
        quality=filled["quality"],
        output_format=filled.get("output_format", "png"),
        output_compression=filled.get("output_compression", 85),
        background=filled.get("background", "auto"),
    )
