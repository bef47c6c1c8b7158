"""DICOM tags, keywords and VRs: the data dictionary as dicomframes uses it. No I/O here."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cache, lru_cache

from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag, tag_for_keyword

__all__ = [
    "BINARY_VRS",
    "PIXEL_TAGS",
    "STRUCT_CODES",
    "UnknownAttribute",
    "closest_keywords",
    "column_kind",
    "keyword_of",
    "tag_hex",
    "tag_of",
    "vr_of",
]

# VR families (PS3.5 6.2)
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
INT_VRS = frozenset({"IS", "SS", "US", "SL", "UL", "SV", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
NUMBER_STRING_VRS = frozenset({"IS", "DS"})
# Strings whose leading and trailing spaces are insignificant (default repertoire only).
CODE_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
# Strings that may use the Specific Character Set and may hold several values.
TEXT_VRS = frozenset({"SH", "LO", "UC"})
# Strings that always hold one value (a backslash is an ordinary character).
SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
STRING_VRS = CODE_VRS | TEXT_VRS | SINGLE_TEXT_VRS | {"UR"}


def column_kind(vr: str) -> str:
    """What a table column of this VR holds, for every converter (pandas and Arrow types are
    chosen from it): "int", "uint" (UV), "float", "date", "time", "datetime", "person",
    "tag" (AT), "string", "sequence", "binary", or "other" (a VR this list lacks)."""
    return _COLUMN_KINDS.get(vr, "other")


_COLUMN_KINDS = {
    **{vr: "int" for vr in INT_VRS - {"UV"}}, "UV": "uint",
    **{vr: "float" for vr in FLOAT_VRS},
    **{vr: "string" for vr in STRING_VRS},
    "DA": "date", "TM": "time", "DT": "datetime", "PN": "person", "AT": "tag",
    "SQ": "sequence", **{vr: "binary" for vr in BINARY_VRS},
}

STRUCT_CODES = {
    "US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q",
}


class UnknownAttribute(KeyError):
    """A name that is neither a DICOM keyword nor a tag; ``.name`` holds what was given."""

    def __init__(self, name: object) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return (
            f"unknown DICOM attribute {self.name!r}: not a keyword of the DICOM dictionary "
            "nor a tag such as '00100010', '0x00100010' or '(0010,0010)'"
        )


# --------------------------------------------------------------------------- tags and names

_TAG_PAIR_RE = re.compile(
    r"\(?\s*(?:0x)?([0-9A-Fa-f]{4})\s*,\s*(?:0x)?([0-9A-Fa-f]{4})\s*\)?"
)
_TAG_HEX_RE = re.compile(r"(?:0x|0X)?([0-9A-Fa-f]{8})")


def tag_of(name: str | int | tuple[int, int]) -> int:
    """Return the tag (an int such as ``0x00100010``) of a keyword or a tag in any usual form.

    Accepts ``"PatientName"``, ``"00100010"``, ``"0x00100010"``, ``"(0010,0010)"``,
    ``0x00100010`` and ``(0x0010, 0x0010)``. Raises :class:`UnknownAttribute` (a ``KeyError``)
    for anything else.
    """
    if isinstance(name, bool):
        raise UnknownAttribute(name)
    if isinstance(name, int):
        if 0 <= name <= 0xFFFFFFFF:
            return int(name)
        raise UnknownAttribute(name)
    if isinstance(name, tuple):
        if (
            len(name) == 2
            and all(isinstance(x, int) and 0 <= x <= 0xFFFF for x in name)
        ):
            return (name[0] << 16) | name[1]
        raise UnknownAttribute(name)
    if isinstance(name, str):
        return _tag_of_str(name)
    raise UnknownAttribute(name)


@lru_cache(maxsize=4096)
def _tag_of_str(name: str) -> int:
    text = name.strip()
    tag = tag_for_keyword(text) if text else None
    if tag is not None:
        return tag
    match = _TAG_HEX_RE.fullmatch(text)
    if match:
        return int(match.group(1), 16)
    match = _TAG_PAIR_RE.fullmatch(text)
    if match:
        return (int(match.group(1), 16) << 16) | int(match.group(2), 16)
    raise UnknownAttribute(name)


def tag_hex(tag: int) -> str:
    """Return a tag as 8 upper-case hex digits, the form DICOM JSON uses: ``"00100010"``."""
    return f"{tag:08X}"


@cache
def keyword_of(tag: int) -> str:
    """Return the keyword of a tag, or its 8-hex-digit form for private and unknown tags.

    Repeating groups other than the dictionary's own (e.g. overlay group 6002) also get the
    hex form, so that every name maps back to exactly one tag.
    """
    try:
        keyword = keyword_for_tag(tag)
    except Exception:  # pragma: no cover - pydicom raises for odd input
        keyword = ""
    if keyword and tag_for_keyword(keyword) == tag:
        return keyword
    return tag_hex(tag)


def closest_keywords(name: str, first: Iterable[str] = (), n: int = 1) -> list[str]:
    """The DICOM keywords closest to a misspelled ``name`` (difflib, case ignored), for "did
    you mean" messages: those of ``first`` (e.g. the searchable ones) when any is close, else
    any keyword of the dictionary."""
    for pool in (list(first), list(keyword_dict)):
        lowered = {keyword.lower(): keyword for keyword in pool if keyword}
        found = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.75)
        if found:
            return [lowered[match] for match in found]
    return []


@cache
def vr_of(tag: int) -> str:
    """Return the dictionary VR of a tag.

    Ambiguous dictionary VRs resolve to the first one listed ("US or SS" -> "US",
    "OB or OW" -> "OB"). Group lengths are "UL", private creators "LO", and any other
    unknown or private tag "UN".
    """
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        element = tag & 0xFFFF
        if element == 0:
            return "UL"
        if (tag >> 16) % 2 == 1 and 0x0010 <= element <= 0x00FF:
            return "LO"
        return "UN"
    return vr.split(" or ")[0] if vr else "UN"


# --------------------------------------------------------------------------- person names
