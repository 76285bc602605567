"""The name an ICC profile gives itself, read from its ``desc`` tag without a colour engine.

The marketplace checks only need to tell sRGB from anything else, and a profile says which it
is in its description ("sRGB IEC61966-2.1", "sRGB built-in", "Display P3", "Adobe RGB (1998)").
Reading that tag is a few struct unpacks over the profile's tag table; no LittleCMS needed.

Two encodings of the tag exist: ICC v2's ``desc`` type (a counted ASCII string) and v4's
``mluc`` (UTF-16BE records, one per language; Apple writes it into v2 profiles as well). The
first record is taken: descriptions do not differ by language in practice.
"""

from __future__ import annotations

import struct

ICC_HEADER_BYTES = 128
ICC_TAG_ENTRY_BYTES = 12  # signature, offset, size
ICC_MAX_TAGS = 1000  # more than any real profile carries: a larger count is a corrupt table
DESCRIPTION_TAG = b"desc"


def profile_description(profile: bytes) -> str | None:
    """The profile's description, or None when the profile has none or cannot be read."""
    try:
        tag = _tag(profile, DESCRIPTION_TAG)
        if tag is None:
            return None
        text = _text(tag)
    except (struct.error, UnicodeDecodeError, IndexError):
        return None
    text = text.strip("\x00 ").strip()
    return text or None


def _tag(profile: bytes, signature: bytes) -> bytes | None:
    """The bytes of one tag (type signature first), found through the tag table."""
    (count,) = struct.unpack_from(">I", profile, ICC_HEADER_BYTES)
    if count > ICC_MAX_TAGS:
        return None
    table = ICC_HEADER_BYTES + 4
    for index in range(count):
        entry = table + index * ICC_TAG_ENTRY_BYTES
        name, offset, size = struct.unpack_from(">4sII", profile, entry)
        if name == signature and offset + size <= len(profile):
            return profile[offset : offset + size]
    return None


def _text(tag: bytes) -> str:
    kind = tag[:4]
    if kind == b"desc":  # v2: type, reserved, ASCII count (NUL included), ASCII
        (length,) = struct.unpack_from(">I", tag, 8)
        return tag[12 : 12 + length].decode("latin-1")
    if kind == b"mluc":  # v4: type, reserved, record count, record size, records
        (records,) = struct.unpack_from(">I", tag, 8)
        if records == 0:
            return ""
        length, offset = struct.unpack_from(">II", tag, 16 + 4)
        return tag[offset : offset + length].decode("utf-16-be")
    return ""
