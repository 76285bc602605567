"""Building a Job from one entry's typed fields and the defaults; where inputs come from."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.errors import Problem
from pipeline.images import masks
from pipeline.manifest.schema import (
    BACKGROUND_ONLY,
    FEATURE_ALIASES,
    GROUP_COLUMN,
    INPAINT_ONLY,
    MASK_OPTIONS,
    OUTPUT_FORMAT_ALIASES,
    PARAMETERS,
    PATH_CACHE_SIZE,
    TYPE_CHOICES,
    URL_SCHEME,
    Report,
    stem_of,
)
from pipeline.models import Feature, InputRef, Job

# --- building a Job -------------------------------------------------------------------------


def build_job(
    own: Mapping[str, Any],
    defaults: Mapping[str, Any],
    base_dir: Path,
    location: str,
    invalid: frozenset[str] = frozenset(),
    data: Mapping[str, str] | None = None,
    own_literal: bool = False,
) -> Job | list[Problem]:
    """Apply defaults to one entry's typed fields and make a Job, or say what is wrong.

    ``invalid`` names fields already reported as bad, so they are not reported again as missing.
    """
    merged = {**defaults, **own}
    template_problems: list[Problem] = []
    if data is not None:
        # A YAML job's own text is literal (it is written for that job, and braces in old
        # prompts keep working); its defaults are templates over its fields.
        literal = own.keys() if own_literal else ()
        merged = _expanded(merged, data, location, template_problems, literal)
    # An explicit id is kept as written, even "" (preflight says what is wrong with it).
    job_id = merged["id"] if "id" in merged else stem_of(merged.get("image", "")) or None
    problems: list[Problem] = template_problems

    def problem(name: str, message: str) -> None:
        problems.append(Problem(job_id, name, message, location))

    feature = _feature_of(merged.get("type"), "type" in invalid, problem)
    if feature is not None:
        unused = INPAINT_ONLY if feature is Feature.BACKGROUND else BACKGROUND_ONLY
        for name in unused:
            if name in own:
                problem(name, f"applies only to {_other(feature).value}, not {feature.value}")
            merged.pop(name, None)

    image = _required_ref(merged, "image", base_dir, invalid, problem)
    recipe, mask = _mask_of(merged, own, base_dir, problem)
    if "prompt" not in merged and "prompt" not in invalid:
        problem("prompt", "required: describe the edit")
    if job_id is None and image is not None:
        problem("id", "cannot be derived from the image; set an id")
    # Fields already reported as invalid are left out (their defaults apply), so the job can
    # still be checked for everything else; the reported problems keep it from running.
    if problems or feature is None or image is None or "prompt" not in merged:
        return problems
    parameters = {name: merged[name] for name in PARAMETERS if name in merged}
    if "output_format" in parameters:
        fmt = parameters["output_format"]
        parameters["output_format"] = OUTPUT_FORMAT_ALIASES.get(fmt, fmt)
    return Job(
        id=str(job_id),
        feature=feature,
        image=image,
        mask=mask,
        prompt=merged["prompt"],
        mask_recipe=recipe,
        protect=bool(merged.get("protect", False)),
        location=location,
        group=_group_of(merged, data),
        **parameters,
    )


def _group_of(merged: Mapping[str, Any], data: Mapping[str, str] | None) -> str | None:
    """The job's own ``group``, else the row's ``Handle`` cell (a Shopify export), else None."""
    group = merged.get("group")
    if group is None and data is not None:
        group = data.get(GROUP_COLUMN)
    text = str(group).strip() if group is not None else ""
    return text or None


def _mask_of(
    merged: Mapping[str, Any], own: Mapping[str, Any], base_dir: Path, problem: Report
) -> tuple[masks.MaskRecipe | None, InputRef | None]:
    """The mask recipe (any string form) and, for a file mask, the file's InputRef."""
    text = merged.get("mask")
    if text is None:
        for name in MASK_OPTIONS:
            # Set on the job itself only: a defaults block may serve jobs with and without one.
            if name in own and name in merged and (name != "protect" or own[name]):
                problem(name, "needs a mask: set mask (a file, alpha, box: or ellipse:)")
        return None, None
    options: dict[str, Any] = {}
    for name in ("mask_grow", "mask_feather"):
        if name in merged:
            reason = masks.modifier_problem(name, merged[name])
            if reason:
                problem(name, reason)
            else:
                options[name.removeprefix("mask_")] = merged[name]
    source = masks.parse_mask_spec(text)
    if isinstance(source, str):
        problem("mask", source)
        return None, None
    ref = None
    if isinstance(source, masks.FileSource):
        ref = _ref_field(merged, "mask", base_dir, problem)
        if ref is None:
            return None, None
        source = masks.FileSource(ref.value)
    recipe = masks.MaskRecipe(source, invert=bool(merged.get("mask_invert", False)), **options)
    # A plain file mask keeps no recipe: its job is exactly what it was before masks grew forms.
    return (recipe if recipe.generated else None), ref


def _feature_of(value: Any, already_reported: bool, problem: Report) -> Feature | None:
    if value is None:
        if not already_reported:
            problem("type", f"required: {TYPE_CHOICES}")
        return None
    feature = parse_feature(value)
    if feature is None:
        problem("type", f"{value!r} is not {TYPE_CHOICES}")
    return feature


def parse_feature(value: str) -> Feature | None:
    """``IMAGE_INPAINTER``, ``inpaint``, ``Background``, ... → Feature; None if unknown."""
    return FEATURE_ALIASES.get(value.strip().lower().replace("-", "_").replace(" ", "_"))


def _other(feature: Feature) -> Feature:
    return Feature.INPAINT if feature is Feature.BACKGROUND else Feature.BACKGROUND


def _required_ref(
    merged: Mapping[str, Any], name: str, base_dir: Path, invalid: frozenset[str], problem: Report
) -> InputRef | None:
    if name not in merged:
        if name not in invalid:
            problem(name, "required: a file path, an http(s) URL or asset:<path>")
        return None
    return _ref_field(merged, name, base_dir, problem)


def _ref_field(
    merged: Mapping[str, Any], name: str, base_dir: Path, problem: Report
) -> InputRef | None:
    text = merged.get(name)
    if text is None:
        return None
    ref = input_ref(text, str(base_dir))
    if isinstance(ref, str):
        problem(name, ref)
        return None
    return ref


_REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "gcs://", "az://", "abfs://")


@lru_cache(maxsize=PATH_CACHE_SIZE)
def input_ref(text: str, base_dir: str) -> InputRef | str:
    """Where an image or mask comes from; a message (str) when it cannot be used.

    Cached: a catalog names the same few files many times.
    """
    text = text.strip()
    unusable = unusable_path(text)
    if unusable:
        return unusable
    lowered = text.lower()
    if lowered.startswith(_REMOTE_PREFIXES):
        return InputRef("url", text)  # fetched by preflight (pipeline.inputs)
    if lowered.startswith("file://"):
        local = urlsplit(text)
        if local.netloc not in ("", "localhost"):
            return "file:// URLs name a local file: file:///path or file://localhost/path"
        path = unquote(local.path)  # %00 is a NUL byte once decoded
        return unusable_path(path) or InputRef("file", os.path.normpath(path))
    if lowered.startswith("asset:"):
        path = text[len("asset:") :].strip()
        return InputRef("asset", path) if path else "asset: needs a path after the colon"
    scheme = URL_SCHEME.match(text)
    if scheme:
        return (
            f"{scheme.group(1)}:// is not supported; use a file path, an http(s), s3://, "
            "gs://, az:// or file:// URL, or asset:<path>"
        )
    if not text:
        return "is empty"
    expanded = os.path.expanduser(text)
    return InputRef("file", os.path.normpath(os.path.join(base_dir, expanded)))


def unusable_path(text: str) -> str | None:
    """Why an input cannot have this name, or None: a NUL byte (no file name or URL holds
    one; the OS call would raise), or bytes that are not UTF-8 (a file name in another
    encoding, found by a glob: the ledger, the report and every message are UTF-8)."""
    if "\x00" in text:
        return f"{text!r} holds a NUL byte, which no file name or URL can"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{text!r} is not UTF-8 text (a file name in another encoding): rename the file"
    return None


# --- templates ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def expand_template(text: str, data: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with each ``{Column}`` replaced by the row's cell; the names it could not find.

    Names are exact header names (letter case and inner spaces kept); ``{{`` and ``}}`` are
    literal braces.
    """
    if "{" not in text and "}" not in text:
        return text, []
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1).strip()
        if name in data:
            return data[name]
        missing.append(name)
        return token

    return _PLACEHOLDER.sub(replace, text), missing


def placeholders(value: Any) -> frozenset[str]:
    """The column names a template text reads (none for a value that is not text)."""
    if not isinstance(value, str) or ("{" not in value and "}" not in value):
        return frozenset()
    names = (match.group(1) for match in _PLACEHOLDER.finditer(value) if match.group(1) is not None)
    return frozenset(name.strip() for name in names)


def _expanded(
    merged: Mapping[str, Any],
    data: Mapping[str, str],
    location: str,
    problems: list[Problem],
    literal: Iterable[str] = (),
) -> dict[str, Any]:
    result = dict(merged)
    skip = frozenset(literal)
    for name, value in merged.items():
        if not isinstance(value, str) or name in skip:
            continue
        text, missing = expand_template(value, data)
        result[name] = text
        for placeholder in missing:
            known = ", ".join(sorted(data)) or "none"
            message = (
                f"placeholder {{{placeholder}}} names no column of this row (columns: {known})"
            )
            problems.append(Problem(None, name, message[:400], location))
    return result
