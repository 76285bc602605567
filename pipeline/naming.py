"""The folder-name policy: what may name an output folder (a job id, the run's name).

One owner for the rule: the manifest checks the run's name with it, preflight every job's id.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 200
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{port}{i}" for port in ("com", "lpt") for i in range(1, 10)}
)
_NOT_IN_FOLDER_NAMES = re.compile(r'[/\\<>:"|?*]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The names most catalogs use (SKU-1, chair_02.v2): dot-separated words of ASCII letters,
# digits, _ and -. None of the rules below can refuse one but the length and device names.
_PLAIN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` cannot safely name a folder (a job id, the run name), or None.

    Beyond escaping the output folder (``/``, ``..``) this refuses what breaks on Windows or
    macOS (reserved device names, ``:`` and friends, trailing dots and spaces), since output
    folders get copied and synced between systems.
    """
    if _PLAIN.fullmatch(name) and len(name) <= MAX_NAME_LENGTH:
        head = name.partition(".")[0]  # a device name is 3 or 4 letters, before any dot
        if len(head) > 4 or head.lower() not in _WINDOWS_DEVICES:
            return None
    return _rules(name)


def _rules(name: str) -> str | None:
    """``folder_name_problem`` without its shortcut for plain names (the rules themselves)."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_NAME_LENGTH}"
    if _CONTROL.search(name):
        return "contains a control character"
    if _NOT_IN_FOLDER_NAMES.search(name):
        forbidden = sorted(set(_NOT_IN_FOLDER_NAMES.findall(name)))
        return f"contains {' '.join(forbidden)}, not allowed in a folder name"
    if name.startswith("."):
        return "starts with '.' (a hidden or parent folder)"
    if ".." in name:
        return "contains '..'"
    if name != name.strip() or name.endswith("."):
        return "starts or ends with a space, or ends with '.'"
    if name.split(".")[0].lower() in _WINDOWS_DEVICES:
        return "is a reserved device name on Windows"
    return None
