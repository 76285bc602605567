"""``glob:`` patterns, walked inside the manifest's folder and nowhere else, within a bound.

A pattern is matched like Python's ``glob`` with ``recursive=True`` (``*``, ``?``, ``[...]``
within a name, ``**`` for any depth; names starting with a dot only match a pattern that
starts with one), with three rules ``glob`` does not have:

- **Inside only.** A pattern that is absolute (``/``, ``~``, a drive) or climbs with ``..`` is
  refused before anything is walked: ``../../**/*.png`` or ``/**/*.png`` would walk the disk.
  A folder reached through a symbolic link is walked only if it really lies inside the
  manifest's folder, and a folder reached twice (a link loop) is walked once.
- **Bounded.** At most ``MAX_GLOB_ENTRIES`` directory entries are looked at per pattern; past
  that the walk stops and says so (the catalog is then better given as an items file).
- **Never a traceback.** A folder that cannot be listed is skipped, as ``glob`` does.

Files only are matched (a folder named ``x.png`` is not an image); a matched symbolic link to a
file is kept, and preflight's folder policy judges where it leads.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

MAX_GLOB_ENTRIES = 2_000_000  # directory entries one pattern may look at (a catalog, not a disk)
RECURSIVE = "**"
_SEPARATORS = re.compile(r"[\\/]+")
_MAGIC = re.compile(r"[*?[]")


def pattern_problem(pattern: str) -> str | None:
    """Why the pattern may not be walked (it would leave the manifest's folder), or None."""
    if "\x00" in pattern:
        return f"{pattern!r} holds a NUL byte, which no file name can"
    if os.path.isabs(pattern) or os.path.splitdrive(pattern)[0] or pattern.startswith(("/", "\\")):
        return (
            f"{pattern!r} is absolute; a glob pattern is relative to the manifest's folder "
            "and stays inside it (move the images under it, or list them in an items file)"
        )
    if ".." in _SEPARATORS.split(pattern):
        return (
            f"{pattern!r} climbs out of the manifest's folder with '..'; a glob pattern "
            "stays inside it (move the images under it, or list them in an items file)"
        )
    return None


@dataclass
class GlobWalk:
    """One pattern's walk under ``base`` (an absolute folder): ``matches()``, then ``stopped``
    says why the walk ended early (None if it did not)."""

    pattern: str
    base: str
    limit: int | None = None  # default: MAX_GLOB_ENTRIES
    visited: int = 0
    stopped: str | None = None
    _base_real: str = ""
    _seen_dirs: set[str] = field(default_factory=set)

    def matches(self) -> list[str]:
        """The matching files, relative to ``base`` (with ``/``), sorted; [] if refused."""
        self.stopped = pattern_problem(self.pattern)
        if self.stopped is not None:
            return []
        if self.limit is None:
            self.limit = MAX_GLOB_ENTRIES
        parts = [part for part in _SEPARATORS.split(self.pattern) if part not in ("", ".")]
        parts = [p for i, p in enumerate(parts) if not (p == RECURSIVE and parts[i - 1 : i] == [p])]
        try:
            self._base_real = os.path.realpath(self.base)
        except (OSError, ValueError) as exc:
            self.stopped = f"cannot walk the manifest's folder: {exc}"
            return []
        self._seen_dirs = {self._base_real}
        found: list[str] = []
        with contextlib.suppress(_Stop):  # the limit: what was found so far, and ``stopped``
            found.extend(self._walk("", parts))
        return sorted(found)

    # -- the walk --

    def _walk(self, folder: str, parts: list[str]) -> Iterator[str]:
        """Files under ``folder`` (relative, "" for the base) matching ``parts``."""
        if not parts:
            return
        head, rest = parts[0], parts[1:]
        if head == RECURSIVE:
            yield from self._recursive(folder, rest)
            return
        if not _MAGIC.search(head):  # a plain name: no listing needed
            path = _join(folder, head)
            if rest:
                if self._enterable(path, once=False):
                    yield from self._walk(path, rest)
            elif self._is_file(path):
                yield path
            return
        matcher = _matcher(head)
        for name, is_dir in self._entries(folder, hidden=head.startswith(".")):
            if not matcher(name):
                continue
            path = _join(folder, name)
            if rest:
                if is_dir and self._enterable(path, once=False):
                    yield from self._walk(path, rest)
            elif self._is_file(path):
                yield path

    def _recursive(self, folder: str, rest: list[str]) -> Iterator[str]:
        """``**``: ``rest`` matched in ``folder`` and in every folder below it."""
        if not rest:  # a trailing ``**`` matches every file below
            for name, is_dir in self._entries(folder, hidden=False):
                path = _join(folder, name)
                if is_dir:
                    if self._enterable(path, once=True):
                        yield from self._recursive(path, rest)
                elif self._is_file(path):
                    yield path
            return
        yield from self._walk(folder, rest)
        for name, is_dir in self._entries(folder, hidden=False):
            path = _join(folder, name)
            if is_dir and self._enterable(path, once=True):
                yield from self._recursive(path, rest)

    def _entries(self, folder: str, hidden: bool) -> list[tuple[str, bool]]:
        """(name, is a folder) of ``folder``'s entries, counted against the limit."""
        try:
            with os.scandir(os.path.join(self.base, folder)) as listing:
                entries = []
                for entry in listing:
                    self.visited += 1
                    if self.limit is not None and self.visited > self.limit:
                        self.stopped = (
                            f"{self.pattern!r} looked at {self.limit:,} entries without finishing; "
                            "narrow the pattern, or list the files in an items file"
                        )
                        raise _Stop
                    if hidden or not entry.name.startswith("."):
                        entries.append((entry.name, _is_dir(entry)))
                return entries
        except (OSError, ValueError):  # unreadable or vanished: skipped, as glob does
            return []

    def _enterable(self, folder: str, once: bool) -> bool:
        """A folder inside the manifest's folder (links resolved); with ``once`` (a ``**``
        descent, where a link loop would never end) one not walked yet."""
        try:
            real = os.path.realpath(os.path.join(self.base, folder))
        except (OSError, ValueError):
            return False
        if not os.path.isdir(real) or not _within(real, self._base_real):
            return False  # a link leading out is not followed out
        if once:
            if real in self._seen_dirs:
                return False  # a link loop: the folder is walked once
            self._seen_dirs.add(real)
        return True

    def _is_file(self, relative: str) -> bool:
        try:
            return os.path.isfile(os.path.join(self.base, relative))
        except ValueError:
            return False


class _Stop(Exception):
    """The walk reached its limit."""


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


@lru_cache(maxsize=256)
def _matcher(part: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(fnmatch.translate(os.path.normcase(part))).match
