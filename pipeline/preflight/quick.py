"""The nightly re-run's fast path: a row's photo that the stat cache knows, unchanged, told from
one ``lstat`` and one lookup, with none of the per-row objects the full check makes.

A catalog of a million distinct photos re-run every night mostly finds every photo as it was.
For the usual cell (a plain path: no ``~``, no ``.`` or ``..`` part, no NUL byte) the path as
written and its real path are its folder's (resolved once per folder, the folder policy decided
once per folder too) plus its name; the name must be a regular, non-empty file, not a symbolic
link, whose signature the stat cache holds (and not racily). Anything else (a new or changed
photo, a link, a folder outside the policy, a missing file) is left to the full check
(``Preflight.check_local_image``), which says exactly what it always said; this path only ever
answers "unchanged, and here is what was found" or "ask the full check".
"""

from __future__ import annotations

import os
import stat

from pipeline.preflight.files import is_within
from pipeline.preflight.statcache import StatCache

FOLDERS = 4096  # folders remembered; past that the memory starts over (one realpath each again)
# Paths are split and joined on "/" here; elsewhere (a Windows separator) every row takes the
# full check.
POSIX_PATHS = os.sep == "/" and os.altsep is None
_SPECIAL_NAMES = frozenset({"", os.curdir, os.pardir})

# (the folder as written, absolute and normalized, with a trailing separator; its real path,
# likewise), or None: rows in this folder take the full check.
Folder = tuple[str, str] | None
# (the path as written, absolute and normalized; its real path; the sha256 of its bytes; its
# verdict as an image, encoded as ``preflight.reader`` keeps it in the stat cache)
KnownPhoto = tuple[str, str, bytes, bytes]
_DIGEST, _IMAGE = 6, 7  # in a stored row (``StatCache.unchanged``)


class QuickLook:
    """Unchanged photos by their cell: ``known`` (see the module)."""

    def __init__(self, cache: StatCache, folders: int = FOLDERS) -> None:
        self.cache = cache
        self._folders: dict[str, Folder] = {}  # by the cell's folder part, for ``_base``
        self._base = ""
        self._limit = folders
        self._regular = stat.S_ISREG
        # The signature of the photo ``known`` last found unchanged (the plan memo keeps it).
        self.signature: tuple[int, int, int, int, int] | None = None

    def known(self, cell: str, base: str) -> KnownPhoto | None:
        """``(path, real path, digest, encoded image verdict)`` of the file a plain cell
        names, when it is a regular non-empty file (no link) the cache knows unchanged, with an
        image verdict; None: ask the full check. ``base``: the manifest's folder, absolute."""
        if not POSIX_PATHS or "\x00" in cell or cell[:1] == "~" or not self.cache.kept:
            return None
        folder_text, _sep, name = cell.rpartition("/")
        if name in _SPECIAL_NAMES:
            return None
        if base is not self._base and base != self._base:
            self._base = base
            self._folders.clear()
        folder = self._folders.get(folder_text, self)
        if folder is self:
            folder = self._folder(base, folder_text)
        if folder is None:
            return None
        shown, real_folder = folder  # type: ignore[misc]
        real = real_folder + name
        try:
            info = os.lstat(real)
        except (OSError, ValueError):
            return None
        size = info.st_size
        if not size or not self._regular(info.st_mode):
            return None
        signature = (info.st_dev, info.st_ino, size, info.st_mtime_ns, info.st_ctime_ns)
        row = self.cache.unchanged(real, signature)
        if row is None or row[_IMAGE] is None:
            return None
        self.signature = signature
        return shown + name, real, row[_DIGEST], row[_IMAGE]

    def _folder(self, base: str, text: str) -> Folder:
        """The folder's paths, or None when its rows must take the full check: the folder
        policy cannot be decided for the folder as a whole (it is an ancestor of ``base``), or
        it refuses the folder (inside ``base`` as written, outside once links are resolved)."""
        if len(self._folders) >= self._limit:
            self._folders.clear()
        found: Folder = None
        try:
            written = os.path.normpath(os.path.join(base, text))
            real = os.path.realpath(written)
        except ValueError:  # an unencodable character: the full check names it
            written = real = ""
        if written and real:
            base_real = os.path.realpath(base)
            if is_within(written, base):
                allowed = is_within(real, base_real)
            else:  # written outside: taken as written, unless its files could be ``base``
                allowed = not is_within(base, written)
            if allowed:
                found = (_with_separator(written), _with_separator(real))
        self._folders[text] = found
        return found


def _with_separator(folder: str) -> str:
    return folder if folder.endswith("/") else folder + "/"
