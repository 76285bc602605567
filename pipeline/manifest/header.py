"""Loading a manifest: the YAML header and its checks (version, name, defaults, sources)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ManifestError, Problem
from pipeline.manifest.build import (
    parse_feature,
    unusable_path,
)
from pipeline.manifest.schema import (
    HEADER_FIELDS,
    ITEM_SUFFIXES,
    JOB_FIELDS,
    TYPE_CHOICES,
    VERSION,
    YamlLoader,
    os_reason,
    type_name,
    unknown_field_message,
    validate_fields,
)
from pipeline.manifest.sources import (
    GlobEntry,
    ItemsSource,
    Manifest,
)
from pipeline.naming import folder_name_problem

# --- loading --------------------------------------------------------------------------------


ITEMS_KEYS = ("path", "columns", "skip_empty", "ignore_unknown")


def load_manifest(path: Path) -> Manifest:
    """Read and check the header; the jobs are checked while ``iter_jobs`` streams them.

    Raises ManifestError with every header problem found.
    """
    path = Path(os.path.abspath(path))
    display = path.name
    data, node = _read_yaml(path, display)
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        message = "a manifest is a mapping with version, jobs, items or glob"
        raise ManifestError([Problem(None, None, f"{message}; got {type_name(data)}", display)])
    for key in data:
        if key not in HEADER_FIELDS:
            problems.append(
                Problem(None, str(key), unknown_field_message(str(key), HEADER_FIELDS, {}), display)
            )
    base_dir = path.parent
    version = _version(data, display, problems)
    name = _manifest_name(data, path, problems)
    defaults = _defaults(data.get("defaults"), display, problems)
    jobs = _jobs_list(data.get("jobs"), display, problems)
    globs = _glob_entries(data.get("glob"), node, display, problems)
    items = _items_paths(data.get("items"), base_dir, display, problems)
    if not (jobs or globs or items) and not problems:
        problems.append(Problem(None, "jobs", "no jobs: add jobs, glob or items", display))
    if problems:
        raise ManifestError(problems)
    return Manifest(
        path=path,
        base_dir=base_dir,
        name=name,
        version=version,
        defaults=defaults,
        jobs=jobs,
        job_lines=_entry_lines(node, "jobs"),
        globs=globs,
        items=items,
        display_name=display,
    )


def _read_yaml(path: Path, display: str) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = Problem(None, None, "not UTF-8 text", f"{display} byte {exc.start}")
        raise ManifestError([problem]) from None
    except OSError as exc:
        problem = Problem(None, None, f"cannot read manifest: {os_reason(exc)}", str(path))
        raise ManifestError([problem]) from None
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ManifestError([_yaml_problem(exc, display)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(None, None, f"not valid YAML: {exc}", display)]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ManifestError([Problem(None, None, "manifest is empty", display)])
    return data, node


def _yaml_problem(exc: yaml.MarkedYAMLError, display: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    location = f"{display}:{mark.line + 1}:{mark.column + 1}" if mark else display
    reason = " ".join(part for part in (exc.context, exc.problem) if part)
    return Problem(None, None, f"not valid YAML: {reason}", location)


def _version(data: Mapping[str, Any], display: str, problems: list[Problem]) -> int:
    version = data.get("version")
    if version is None:
        problems.append(Problem(None, "version", f"missing: add `version: {VERSION}`", display))
    elif isinstance(version, bool) or version != VERSION:
        message = f"{version!r} is not supported; this pipeline reads version {VERSION}"
        problems.append(Problem(None, "version", message, display))
    return VERSION


def _manifest_name(data: Mapping[str, Any], path: Path, problems: list[Problem]) -> str:
    name = data.get("name", path.stem)
    if not isinstance(name, str | int) or isinstance(name, bool):
        problems.append(Problem(None, "name", f"must be text, got {type_name(name)}", path.name))
        return path.stem
    name = str(name).strip()
    reason = folder_name_problem(name)
    if reason:
        message = f"{name!r} cannot name the output folder: {reason}"
        problems.append(Problem(None, "name", message, path.name))
    return name


def _defaults(raw: Any, display: str, problems: list[Problem]) -> dict[str, Any]:
    if raw is None:
        return {}
    location = f"{display} defaults"
    if not isinstance(raw, Mapping):
        problems.append(
            Problem(None, "defaults", f"must be a mapping, got {type_name(raw)}", display)
        )
        return {}
    fields, _invalid, found = validate_fields(raw, location, name_jobs=False)
    problems.extend(found)
    if "id" in fields and "{" not in str(fields["id"]):
        problems.append(
            Problem(
                None,
                "id",
                'cannot have a default unless it is a template ("{Handle}-{Image Position}")',
                location,
            )
        )
    if "type" in fields and parse_feature(fields["type"]) is None:
        message = f"{fields['type']!r} is not {TYPE_CHOICES}"
        problems.append(Problem(None, "type", message, location))
    return fields


def _jobs_list(raw: Any, display: str, problems: list[Problem]) -> tuple[Any, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(
            Problem(None, "jobs", f"must be a list of jobs, got {type_name(raw)}", display)
        )
        return ()
    return tuple(raw)


def _glob_entries(
    raw: Any, node: yaml.Node | None, display: str, problems: list[Problem]
) -> tuple[GlobEntry, ...]:
    if raw is None:
        return ()
    entries = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list):
        message = f"must be a mapping or a list of them, got {type_name(raw)}"
        problems.append(Problem(None, "glob", message, display))
        return ()
    lines = _entry_lines(node, "glob") if isinstance(raw, list) else (_key_line(node, "glob"),)
    result = []
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else None
        location = f"{display}:{line} glob {index + 1}" if line else f"{display} glob {index + 1}"
        parsed = _glob_entry(entry, location, problems)
        if parsed is not None:
            result.append(parsed)
    return tuple(result)


def _glob_entry(entry: Any, location: str, problems: list[Problem]) -> GlobEntry | None:
    if not isinstance(entry, Mapping):
        message = f"a glob entry is a mapping with a pattern, got {type_name(entry)}"
        problems.append(Problem(None, "glob", message, location))
        return None
    fields_only = {key: value for key, value in entry.items() if key != "pattern"}
    fields, _invalid, found = validate_fields(fields_only, location, name_jobs=False)
    problems.extend(found)
    pattern = entry.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        problems.append(Problem(None, "pattern", "required: e.g. images/*.jpg", location))
        return None
    if "image" in fields:
        message = "a glob entry takes its images from the pattern; remove image"
        problems.append(Problem(None, "image", message, location))
    return GlobEntry(os.path.expanduser(pattern.strip()), fields, location)


def _items_paths(
    raw: Any, base_dir: Path, display: str, problems: list[Problem]
) -> tuple[ItemsSource, ...]:
    if raw is None:
        return ()
    entries = raw if isinstance(raw, list) else [raw]
    sources = []
    for entry in entries:
        source = _items_source(entry, base_dir, display, problems)
        if source is not None:
            sources.append(source)
    return tuple(sources)


def _items_source(
    entry: Any, base_dir: Path, display: str, problems: list[Problem]
) -> ItemsSource | None:
    """A string (the file) or a mapping ``{path, columns, skip_empty, ignore_unknown}``."""
    options: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"path": entry}
    where = f"{display} items"
    for key in options:
        if key not in ITEMS_KEYS:
            message = unknown_field_message(str(key), ITEMS_KEYS, {})
            problems.append(Problem(None, f"items.{key}", message, where))
    name = options.get("path")
    if not isinstance(name, str) or not name.strip():
        message = f"must be the path of a CSV or JSONL file, got {type_name(name)}"
        problems.append(Problem(None, "items", message, display))
        return None
    unusable = unusable_path(name.strip())
    if unusable:
        problems.append(Problem(None, "items", unusable, display))
        return None
    path = base_dir / os.path.expanduser(name.strip())
    reason = _items_file_problem(path)
    if reason:
        problems.append(Problem(None, "items", f"{name}: {reason}", display))
        return None
    columns = _items_columns(options.get("columns"), where, problems)
    skip = options.get("skip_empty", ())
    skip_empty = tuple(skip) if isinstance(skip, list) else (skip,) if skip else ()
    for field_name in skip_empty:
        if field_name not in JOB_FIELDS:
            message = f"{field_name!r} is not a job field ({', '.join(JOB_FIELDS)})"
            problems.append(Problem(None, "items.skip_empty", message, where))
    ignore = options.get("ignore_unknown", False)
    if not isinstance(ignore, bool):
        problems.append(Problem(None, "items.ignore_unknown", "must be true or false", where))
        ignore = False
    return ItemsSource(path, columns, skip_empty, ignore)


def _items_columns(raw: Any, where: str, problems: list[Problem]) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        message = f"must map job fields to column names, got {type_name(raw)}"
        problems.append(Problem(None, "items.columns", message, where))
        return None
    columns: dict[str, str] = {}
    for field_name, column in raw.items():
        if str(field_name) not in JOB_FIELDS:
            message = unknown_field_message(str(field_name))
            problems.append(Problem(None, f"items.columns.{field_name}", message, where))
        elif not isinstance(column, str | int) or not str(column).strip():
            message = f"must be a column name, got {type_name(column)}"
            problems.append(Problem(None, f"items.columns.{field_name}", message, where))
        else:
            columns[str(field_name)] = str(column).strip()
    return columns


def _items_file_problem(path: Path) -> str | None:
    if path.suffix.lower() not in ITEM_SUFFIXES:
        return "an items file ends in .csv or .jsonl"
    if not path.exists():
        return f"no such file ({path})"
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _entry_lines(node: yaml.Node | None, key: str) -> tuple[int | None, ...]:
    """1-based line of each item of the top-level sequence ``key``, for messages."""
    value = _top_level_value(node, key)
    if not isinstance(value, yaml.SequenceNode):
        return ()
    return tuple(item.start_mark.line + 1 for item in value.value)


def _key_line(node: yaml.Node | None, key: str) -> int | None:
    value = _top_level_value(node, key)
    return value.start_mark.line + 1 if value is not None else None


def _top_level_value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if getattr(key_node, "value", None) == key:
            return value_node
    return None
