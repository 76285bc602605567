"""The row schema: the job fields, their types (pydantic), and messages about bad fields."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before 3.12

from pipeline.errors import Problem
from pipeline.models import Feature

VERSION = 1
HEADER_FIELDS = ("version", "name", "defaults", "jobs", "glob", "items")
JOB_FIELDS = (
    "id",
    "type",
    "image",
    "mask",
    "prompt",
    "size",
    "n",
    "quality",
    "output_format",
    "output_compression",
    "background",
    *("mask_invert", "mask_grow", "mask_feather", "protect"),
    "group",
)
MASK_OPTIONS = ("mask_invert", "mask_grow", "mask_feather", "protect")  # need a mask
INPAINT_ONLY = ("mask", "n", "output_format", "output_compression", *MASK_OPTIONS)
BACKGROUND_ONLY = ("background",)
PARAMETERS = ("size", "n", "quality", "output_format", "output_compression", "background")
# A Shopify export's product handle: an items row that has this column and no ``group`` of its
# own belongs to that product (all its images are one product's angles).
GROUP_COLUMN = "Handle"

FEATURE_ALIASES: Mapping[str, Feature] = {
    "image_inpainter": Feature.INPAINT,
    "inpainter": Feature.INPAINT,
    "inpaint": Feature.INPAINT,
    "inpainting": Feature.INPAINT,
    "background_replacer": Feature.BACKGROUND,
    "background": Feature.BACKGROUND,
    "replace_background": Feature.BACKGROUND,
}
OUTPUT_FORMAT_ALIASES: Mapping[str, str] = {"jpg": "jpeg"}
# Names people reach for that difflib would not match to ours.
FIELD_HINTS: Mapping[str, str] = {
    "feature": "type",
    "kind": "type",
    "count": "n",
    "num_images": "n",
    "compression": "output_compression",
    "format": "output_format",
    "image_url": "image",
    "imageurl": "image",
    "mask_url": "mask",
    "maskurl": "mask",
}

TYPE_CHOICES = "IMAGE_INPAINTER (inpaint) or BACKGROUND_REPLACER (background)"
ITEM_SUFFIXES = (".csv", ".jsonl", ".ndjson")
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
PATH_CACHE_SIZE = 65_536
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Report = Callable[[str, str], None]  # report(field, message) about the job being built


# --- the row schema -------------------------------------------------------------------------


def _whole_number(value: Any) -> int:
    # Lax pydantic would take `true` as 1 and "2.5" as an error worded for programmers.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError(
        "whole_number", "must be a whole number, got {value}", {"value": repr(value)}
    )


_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def _flag(value: Any) -> bool:
    # A CSV cell is text: "true", "1", "yes" (and their opposites) all mean what they say.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PydanticCustomError(
        "flag", "must be true or false (yes/no, 1/0), got {value}", {"value": repr(value)}
    )


# Text fields: numbers are fine as text (YAML reads `id: 1001` as an int), surrounding spaces
# go. Choice fields are lower-cased too. Both are done by pydantic's core, not per-row Python.
Text = str
Choice = Annotated[str, StringConstraints(to_lower=True)]
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
Flag = Annotated[bool, BeforeValidator(_flag)]


@with_config(ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True))
class JobFields(TypedDict, total=False):
    """The fields a job, a defaults block or a glob entry may set; every one optional here."""

    id: Text
    type: Text
    image: Text
    mask: Text
    prompt: Text
    size: Choice
    n: WholeNumber
    quality: Choice
    output_format: Choice
    output_compression: WholeNumber
    background: Choice
    mask_invert: Flag
    mask_grow: WholeNumber
    mask_feather: WholeNumber
    protect: Flag
    group: Text


_JOB_FIELDS_ADAPTER: TypeAdapter[JobFields] = TypeAdapter(JobFields)


def validate_fields(
    raw: Mapping[Any, Any], location: str, name_jobs: bool = True
) -> tuple[dict[str, Any], frozenset[str], list[Problem]]:
    """Typed fields of one entry, the names that were invalid, and a problem per bad field.

    ``name_jobs``: name the job in problems (False for defaults and glob entries).
    """
    cleaned = {str(key): value for key, value in raw.items() if value is not None}
    try:
        return dict(_JOB_FIELDS_ADAPTER.validate_python(cleaned)), frozenset(), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    job_name = _name_hint(raw) if name_jobs else None
    problems = [_problem_from_error(error, job_name, location) for error in errors]
    invalid = frozenset(str(error["loc"][0]) for error in errors if error["loc"])
    # Validate the rest again so the remaining checks (missing prompt, ...) report at once.
    rest = {name: value for name, value in cleaned.items() if name not in invalid}
    try:
        fields = dict(_JOB_FIELDS_ADAPTER.validate_python(rest))
    except ValidationError:
        fields = {}
    return fields, invalid, problems


def _problem_from_error(error: Any, job_name: str | None, location: str) -> Problem:
    name = str(error["loc"][0]) if error["loc"] else None
    if error["type"] == "extra_forbidden" and name is not None:
        return Problem(job_name, name, unknown_field_message(name), location)
    if error["type"] == "string_type":
        return Problem(job_name, name, f"must be text, got {error['input']!r}", location)
    return Problem(job_name, name, str(error["msg"]), location)


def unknown_field_message(
    name: str, known: Sequence[str] = JOB_FIELDS, hints: Mapping[str, str] = FIELD_HINTS
) -> str:
    message = f"unknown field {name!r}"
    lowered = name.strip().lower()
    suggestion = hints.get(lowered)
    if suggestion is None:
        close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    if suggestion is not None and suggestion != name:
        return f"{message} (did you mean {suggestion!r}?)"
    return f"{message} (known: {', '.join(known)})"


def _name_hint(raw: Mapping[Any, Any]) -> str | None:
    """The job's id for messages about an entry that failed validation, if one can be told."""
    job_id = raw.get("id")
    if isinstance(job_id, str | int) and not isinstance(job_id, bool) and str(job_id).strip():
        return str(job_id).strip()
    image = raw.get("image")
    if isinstance(image, str):
        return stem_of(image) or None
    return None


def stem_of(text: str) -> str:
    """The file stem an id defaults to: ``images/chair.jpg`` and URLs → ``chair``."""
    text = text.strip()
    if text.lower().startswith(("http://", "https://")):
        text = urlsplit(text).path
    elif text.lower().startswith("asset:"):
        text = text[len("asset:") :]
    return PurePosixPath(text.replace("\\", "/")).stem


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 40 else "a text"
    names = {dict: "a mapping", list: "a list", bool: "a true/false", int: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
