"""The DICOM JSON model (PS3.18 Annex F.2): tags, keywords, VRs and values. No I/O here.

This is the one place in dicomframes that knows DICOM JSON. The embedded server uses
:func:`dataset_to_json` to answer metadata and QIDO requests; the client and
:mod:`dicomframes.tables` read the answers with :func:`python_value` and friends.

A DICOM JSON object maps 8-hex-digit tags to elements::

    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
     "00280030": {"vr": "DS", "Value": [0.5, 0.5]},
     "7FE00010": {"vr": "OW", "BulkDataURI": "http://.../bulk/7FE00010"}}

Conventions followed when writing (F.2.3-F.2.7): an element without a value has no
"Value" key; empty values inside a multi-valued element are ``null``; IS and DS are JSON
numbers (a value that is not a valid number is kept as a string, rather than failing the
whole response); AT values are 8-hex-digit strings; PN values are objects with
"Alphabetic", "Ideographic" and "Phonetic" groups; sequences nest objects; binary values
are "InlineBinary" (base64) or "BulkDataURI". Group length elements (gggg,0000) and file
meta elements (0002,eeee) are not part of the model and are left out.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gc
import json
import math
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName, format_number_as_ds

__all__ = [
    "UnknownAttribute",
    "dataset_to_json",
    "json_to_dataset",
    "keyword_of",
    "parse_person_name",
    "person_name",
    "python_value",
    "tag_hex",
    "tag_of",
    "vr_of",
]

# VR families (module-private; dicomframes.tables imports them).
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_INT_VRS = frozenset({"IS", "SS", "US", "SL", "UL", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_NUMBER_STRING_VRS = frozenset({"IS", "DS"})
# Strings whose leading and trailing spaces are insignificant (default repertoire only).
_CODE_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
# Strings that may use the Specific Character Set and may hold several values.
_TEXT_VRS = frozenset({"SH", "LO", "UC"})
# Strings that always hold one value (a backslash is an ordinary character).
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_STRING_VRS = _CODE_VRS | _TEXT_VRS | _SINGLE_TEXT_VRS | {"UR"}
_STRUCT_CODES = {
    "US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q",
}

# Single-byte and multi-byte character sets that decode without ISO 2022 code extensions.
# Anything else (ISO 2022 escapes, several values) goes through pydicom's own decoder.
_SIMPLE_CHARSETS = {
    "": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8",
    "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7",
    "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9", "ISO_IR 203": "iso8859_15",
    "ISO_IR 166": "tis_620", "GB18030": "gb18030", "GBK": "gbk",
}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


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

def _pn_groups(value: Any) -> dict[str, str]:
    """PN JSON value (object or "a=b=c" string) -> {"Alphabetic": ..., ...}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, PersonName):
        value = str(value)
    if not isinstance(value, str):
        return {}
    return {g: part for g, part in zip(_PN_GROUPS, value.split("="), strict=False) if part}


def _readable(group: str) -> str:
    if "^" not in group:
        return group
    parts = [p.strip() for p in group.split("^")]
    parts += [""] * (5 - len(parts))
    family, given, middle, prefix, suffix = parts[:5]
    first = " ".join(p for p in (given, middle) if p)
    text = ", ".join(p for p in (family, first) if p)
    if prefix:
        text = f"{prefix} {text}" if text else prefix
    if suffix:
        text = f"{text}, {suffix}" if text else suffix
    return text


def person_name(value: dict | str | None) -> str | None:
    """Return a person name in readable form, from a PN JSON value or a "^" string.

    The Alphabetic group is used (the Ideographic, then the Phonetic group when it is
    empty): family + ", " + given and middle names; a prefix is prepended with a space and a
    suffix appended with ", ". ``"Doe^John^A"`` -> ``"Doe, John A"``, ``"Doe"`` -> ``"Doe"``,
    ``"Doe^John^^Dr.^Jr."`` -> ``"Dr. Doe, John, Jr."``; a value without "^" stays as it is
    (``"Anony Mous"``). Returns None for an empty value.
    """
    if value is None:
        return None
    groups = _pn_groups(value)
    for name in _PN_GROUPS:
        group = groups.get(name)
        if group:
            return _readable(group)
    return None


def parse_person_name(readable: str) -> str:
    """Return the DICOM "^" form of a readable name made by :func:`person_name`.

    ``"Doe, John A"`` -> ``"Doe^John^A"``; ``"Doe, John, Jr."`` -> ``"Doe^John^^^Jr."``; a
    string without ", " (``"Anony Mous"``, ``"Doe*"``) or already holding "^" or "=" is
    returned unchanged. A prefix cannot be told from the family name and stays in it.
    """
    text = readable.strip()
    if "^" in text or "=" in text or ", " not in text:
        return text
    family, rest = text.split(", ", 1)
    suffix = ""
    if ", " in rest:
        rest, suffix = rest.split(", ", 1)
    words = rest.split()
    given = words[0] if words else ""
    middle = " ".join(words[1:])
    parts = [family.strip(), given, middle, "", suffix.strip()]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def _pn_components(value: Any) -> dict[str, str] | None:
    groups = _pn_groups(value)
    if not groups:
        return None

    def split(group: str) -> dict[str, str]:
        parts = group.split("^") + [""] * 5
        return dict(zip(("family", "given", "middle", "prefix", "suffix"), parts[:5], strict=True))

    out = split(groups.get("Alphabetic", ""))
    for name in ("Ideographic", "Phonetic"):
        if groups.get(name):
            out[name.lower()] = split(groups[name])  # type: ignore[assignment]
    return out


# --------------------------------------------------------------------------- Dataset -> JSON

def _number(text: str, vr: str) -> int | float | str:
    """IS/DS text -> JSON number; a value that is not a number stays a string."""
    try:
        if vr == "IS":
            return int(text)
        number = float(text)
    except ValueError:
        if vr == "IS":
            try:
                number = float(text)
            except ValueError:
                return text
            return int(number) if number.is_integer() else text
        return text
    return number if math.isfinite(number) else text


def _dicom_string(value: Any, vr: str) -> str:
    """A pydicom value of a string VR -> its DICOM string form."""
    if isinstance(value, str):
        return value
    original = getattr(value, "original_string", None)
    if original:
        return str(original)
    if isinstance(value, _dt.datetime):
        return _format_dt(value) if vr == "DT" else value.strftime("%Y%m%d")
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, _dt.time):
        return _format_tm(value)
    return str(value)


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes | bytearray | list | tuple | MultiValue):
        return len(value) == 0
    if isinstance(value, PersonName):
        return not str(value)
    return False


class _Encoder:
    """Dataset -> DICOM JSON. Reads pydicom's raw elements directly where that is safe."""

    def __init__(self, bulk_uri: Callable[[int, DataElement], str] | None, threshold: int):
        self.bulk_uri = bulk_uri
        self.threshold = threshold

    def dataset(self, ds: pydicom.Dataset, codec: str | None) -> dict[str, Any]:
        codec = self._codec(ds, codec)
        out: dict[str, Any] = {}
        # items() gives raw elements without decoding them; usually already in tag order
        items = [(int(tag), elem) for tag, elem in ds.items()]
        tags = [tag for tag, _ in items]
        if tags != sorted(tags):
            items.sort(key=lambda pair: pair[0])
        for tag, elem in items:
            if tag & 0xFFFF == 0 or tag >> 16 == 0x0002 or elem is None:
                continue
            result = None
            if isinstance(elem, RawDataElement):
                result = self._raw(ds, tag, elem, codec)
            if result is None:
                result = self._element(ds, tag, ds[tag], codec)
            out[f"{tag:08X}"] = result
        return out

    @staticmethod
    def _codec(ds: pydicom.Dataset, inherited: str | None) -> str | None:
        """Python codec for text VRs, "" before any charset was seen, None for pydicom's own."""
        elem = ds.get_item(0x00080005)
        if elem is None:
            return "latin_1" if inherited is None else inherited
        value = elem.value
        if not value:
            return "latin_1" if inherited is None else inherited
        if isinstance(value, bytes):
            terms = [t.strip(" \0") for t in value.decode("latin_1").split("\\")]
        elif isinstance(value, str):
            terms = [value.strip()]
        else:
            terms = [str(t).strip() for t in value]
        if len(terms) != 1:
            return None
        return _SIMPLE_CHARSETS.get(terms[0])

    # raw (undecoded) elements: the fast path
    def _raw(self, ds: pydicom.Dataset, tag: int, raw: RawDataElement, codec: str | None):
        vr = raw.VR
        data = raw.value
        if data is None or vr == "UN" or vr == "SQ":
            return None
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return None
            if " or " in vr or vr == "SQ":
                return None
        if raw.length == 0 or not data:
            return {"vr": vr}
        if vr in _STRING_VRS or vr == "PN":
            if vr in _CODE_VRS or vr in _NUMBER_STRING_VRS or vr == "UR":
                text = data.decode("latin_1")
            else:
                if codec is None:
                    return None
                try:
                    text = data.decode(codec)
                except UnicodeDecodeError:
                    return None
            return self._strings(vr, text)
        if vr in _NUMBER_STRING_VRS:
            return self._strings(vr, data.decode("latin_1"))
        code = _STRUCT_CODES.get(vr)
        if code is not None:
            size = struct.calcsize(code)
            if len(data) % size:
                return None
            order = "<" if raw.is_little_endian else ">"
            numbers = struct.unpack(f"{order}{len(data) // size}{code}", data)
            return {"vr": vr, "Value": list(numbers)}
        if vr == "AT":
            if len(data) % 4:
                return None
            order = "<" if raw.is_little_endian else ">"
            pairs = struct.unpack(f"{order}{len(data) // 2}H", data)
            tags = zip(pairs[::2], pairs[1::2], strict=True)
            return {"vr": vr, "Value": [f"{g:04X}{e:04X}" for g, e in tags]}
        if vr in _BINARY_VRS:
            return self._binary(ds, tag, vr, data)
        return None

    def _strings(self, vr: str, text: str) -> dict[str, Any]:
        if vr in _SINGLE_TEXT_VRS or vr == "UR":
            text = text.rstrip(" \0")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        text = text.rstrip(" \0")
        if vr in _CODE_VRS or vr in _NUMBER_STRING_VRS:
            text = text.lstrip(" ")
        if not text:
            return {"vr": vr}
        parts = text.split("\\")
        if vr == "PN":
            values: list[Any] = [_pn_groups(p.rstrip(" ")) or None for p in parts]
        elif vr in _NUMBER_STRING_VRS:
            values = [_number(s, vr) if (s := p.strip(" \0")) else None for p in parts]
        elif vr in _CODE_VRS:
            values = [p.strip(" \0") or None for p in parts]
        else:
            values = [p.rstrip(" \0") or None for p in parts]
        return {"vr": vr, "Value": values}

    def _binary(self, ds: pydicom.Dataset, tag: int, vr: str, data: bytes) -> dict[str, Any]:
        if self.bulk_uri is not None and (tag in _PIXEL_TAGS or len(data) > self.threshold):
            return {"vr": vr, "BulkDataURI": self.bulk_uri(tag, ds[tag])}
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}

    # decoded elements: pydicom already made Python values
    def _element(self, ds: pydicom.Dataset, tag: int, elem: DataElement, codec: str | None):
        vr = str(elem.VR)
        if " or " in vr:
            vr = vr.split(" or ")[0]
        value = elem.value
        if vr == "SQ":
            items = [self.dataset(item, codec) for item in (value or [])]
            return {"vr": vr, "Value": items} if items else {"vr": vr}
        if _is_empty(value):
            return {"vr": vr}
        if vr in _BINARY_VRS:
            data = value if isinstance(value, bytes) else bytes(value)
            return self._binary(ds, tag, vr, data)
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        if vr == "PN":
            out: list[Any] = [_pn_groups(str(v)) or None for v in values]
        elif vr == "AT":
            out = [tag_hex(int(v)) for v in values]
        elif vr in _NUMBER_STRING_VRS:
            out = [self._number_value(v, vr) for v in values]
        elif vr in _STRING_VRS:
            if vr in _SINGLE_TEXT_VRS or vr == "UR":
                values = ["\\".join(_dicom_string(v, vr) for v in values)]
            out = [_dicom_string(v, vr) or None for v in values]
        elif vr in ("FL", "FD"):
            out = [float(v) for v in values]
        elif vr in _STRUCT_CODES:
            out = [int(v) for v in values]
        else:
            out = [v if isinstance(v, str | int | float) else str(v) for v in values]
        if all(v is None for v in out):
            return {"vr": vr}
        return {"vr": vr, "Value": out}

    @staticmethod
    def _number_value(value: Any, vr: str) -> int | float | str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return _number(value.strip(), vr)
        try:
            if vr == "IS":
                return int(value)
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        return number if math.isfinite(number) else str(value)


def dataset_to_json(
    ds: pydicom.Dataset,
    *,
    bulk_uri: Callable[[int, DataElement], str] | None = None,
    bulk_threshold: int = 1024,
) -> dict[str, Any]:
    """Return the DICOM JSON object (PS3.18 F.2) of a pydicom Dataset.

    Binary values (VR OB, OD, OF, OL, OV, OW, UN) longer than ``bulk_threshold`` bytes,
    and pixel data (7FE0,0010), (7FE0,0008), (7FE0,0009) whatever their size, become
    ``{"vr": ..., "BulkDataURI": bulk_uri(tag, element)}`` when ``bulk_uri`` is given;
    otherwise every binary value is "InlineBinary" (base64). ``bulk_uri`` is also called for
    elements inside sequence items, with the same arguments.

    Elements still in their raw form (as :func:`pydicom.dcmread` leaves them) are decoded here
    directly, several times faster than pydicom's own ``to_json_dict``; sequences, ISO 2022
    character sets, ambiguous VRs and anything unusual go through pydicom's decoding. Group
    lengths and file meta elements are left out. The dataset is not modified, except that
    pydicom may cache the decoded elements it was asked for.
    """
    return _Encoder(bulk_uri, bulk_threshold).dataset(ds, None)


# --------------------------------------------------------------------------- JSON -> Dataset

def _ds_string(value: float) -> str:
    text = repr(float(value))
    if text.endswith(".0"):
        text = text[:-2]
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def _element_value(vr: str, values: list[Any]) -> Any:
    if vr == "SQ":
        return Sequence([json_to_dataset(item or {}) for item in values])
    if vr == "PN":
        out: list[Any] = []
        for v in values:
            groups = _pn_groups(v)
            parts = [groups.get(g, "") for g in _PN_GROUPS]
            while parts and not parts[-1]:
                parts.pop()
            out.append("=".join(parts))
    elif vr == "AT":
        out = [int(v, 16) if isinstance(v, str) else int(v) for v in values if v is not None]
    elif vr == "DS":
        out = ["" if v is None else v if isinstance(v, str) else _ds_string(v) for v in values]
    elif vr == "IS":
        out = ["" if v is None else str(int(v)) if isinstance(v, float) else str(v) for v in values]
    elif vr in _STRUCT_CODES:
        out = [v for v in values if v is not None]
    else:
        out = ["" if v is None else v if isinstance(v, str) else str(v) for v in values]
    if not out:
        return None
    return out[0] if len(out) == 1 else out


def json_to_dataset(obj: dict[str, Any]) -> pydicom.Dataset:
    """Return a pydicom Dataset made from a DICOM JSON object.

    "InlineBinary" values are decoded; elements given by "BulkDataURI" are **skipped**
    (fetch them with ``client.bulkdata(uri)`` if needed), since an empty value would look
    like real, empty data. Elements without a value are kept, empty.
    """
    ds = pydicom.Dataset()
    for key, elem in obj.items():
        tag = int(key, 16)
        vr = (elem or {}).get("vr") or vr_of(tag)
        if not elem or "BulkDataURI" in elem:
            if elem and "BulkDataURI" in elem:
                continue
            value: Any = None
        elif "InlineBinary" in elem:
            data = elem["InlineBinary"]
            if isinstance(data, list):
                data = "".join(data)
            value = base64.b64decode(data)
        elif "Value" in elem:
            value = _element_value(vr, elem["Value"] or [])
        else:
            value = None
        if value is None and vr == "SQ":
            value = Sequence([])
        try:
            ds.add(DataElement(tag, vr, value))
        except (ValueError, TypeError, OverflowError):
            # A value pydicom refuses (an IS "1A"): keep its text undecoded, as a file would.
            text = "\\".join(map(str, value)) if isinstance(value, list) else str(value)
            data = text.encode("utf-8")
            if len(data) % 2:
                data += b" "
            ds[tag] = RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)
    return ds


# --------------------------------------------------------------------------- JSON -> Python

_DA_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM_RE = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6})\d*)?)?)?")
_DT_RE = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6})\d*)?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)


def _parse_da(text: str) -> _dt.date | None:
    match = _DA_RE.fullmatch(text.strip())
    if not match:
        return None
    try:
        return _dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _tm_microseconds(text: str) -> int | None:
    """TM text -> microseconds since midnight (None when invalid). 60 s allowed (leap)."""
    match = _TM_RE.fullmatch(text.strip())
    if not match:
        return None
    hh, mm, ss = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    if hh > 23 or mm > 59 or ss > 60:
        return None
    frac = match[4] or ""
    micro = int(frac.ljust(6, "0")) if frac else 0
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + micro


def _parse_tm(text: str) -> _dt.timedelta | None:
    micro = _tm_microseconds(text)
    return None if micro is None else _dt.timedelta(microseconds=micro)


def _parse_dt(text: str) -> _dt.datetime | None:
    match = _DT_RE.fullmatch(text.strip())
    if not match:
        return None
    year = int(match[1])
    month, day = int(match[2] or 1), int(match[3] or 1)
    hour, minute, second = int(match[4] or 0), int(match[5] or 0), int(match[6] or 0)
    micro = int((match[7] or "0").ljust(6, "0"))
    tz = None
    if match[8]:
        offset = _dt.timedelta(hours=int(match[9]), minutes=int(match[10]))
        if offset > _dt.timedelta(hours=14):
            return None
        tz = _dt.timezone(-offset if match[8] == "-" else offset)
    try:
        return _dt.datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except ValueError:
        return None


def _format_tm(value: _dt.time | _dt.timedelta) -> str:
    if isinstance(value, _dt.timedelta):
        micro = (value // _dt.timedelta(microseconds=1)) % 86_400_000_000
        seconds, micro = divmod(micro, 1_000_000)
        minutes, ss = divmod(seconds, 60)
        hh, mm = divmod(minutes, 60)
    else:
        hh, mm, ss, micro = value.hour, value.minute, value.second, value.microsecond
    text = f"{hh:02d}{mm:02d}{ss:02d}"
    return f"{text}.{micro:06d}" if micro else text


def _format_dt(value: _dt.datetime) -> str:
    text = value.strftime("%Y%m%d%H%M%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    offset = value.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        hh, mm = divmod(abs(minutes), 60)
        text += f"{sign}{hh:02d}{mm:02d}"
    return text


def _warn_bad(tag: int | None, vr: str, value: Any) -> None:
    where = f"{keyword_of(tag)} ({tag_hex(tag)}) " if tag is not None else ""
    warnings.warn(
        f"{where}value {value!r} is not a valid {vr}; using None",
        UserWarning,
        stacklevel=3,
    )


def _scalar(vr: str, value: Any, tag: int | None, pn_components: bool) -> Any:
    """One JSON value -> Python, per VR. Bad values -> None with a warning."""
    if value is None:
        return None
    if vr == "PN":
        return _pn_components(value) if pn_components else person_name(value)
    if vr in _INT_VRS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            number = float(value)
            if number.is_integer():
                return int(number)
        except (TypeError, ValueError):
            pass
        _warn_bad(tag, vr, value)
        return None
    if vr in _FLOAT_VRS:
        try:
            return float(value)
        except (TypeError, ValueError):
            _warn_bad(tag, vr, value)
            return None
    if vr in ("DA", "DT", "TM"):
        if not isinstance(value, str):
            value = str(value)
        parsed = {"DA": _parse_da, "DT": _parse_dt, "TM": _parse_tm}[vr](value)
        if parsed is None:
            _warn_bad(tag, vr, value)
        return parsed
    if vr == "AT" and isinstance(value, int):
        return tag_hex(value)
    if vr == "SQ":
        return _item(value, pn_components)
    return value


def _item(obj: dict[str, Any] | None, pn_components: bool = False) -> dict[str, Any]:
    """A sequence item -> {keyword: python value}, in tag order."""
    out: dict[str, Any] = {}
    for key in sorted(obj or {}, key=lambda k: int(k, 16)):
        tag = int(key, 16)
        out[keyword_of(tag)] = python_value(obj[key], tag, pn_components=pn_components)  # type: ignore[index]
    return out


def python_value(
    element: dict[str, Any], tag: int | None = None, *, pn_components: bool = False
) -> Any:
    """Return the Python value of one DICOM JSON element, typed by its VR.

    - DA -> :class:`datetime.date`; DT -> :class:`datetime.datetime` (tz-aware when the value
      has a UTC offset; missing parts default to the first month, day, hour...);
      TM -> :class:`datetime.timedelta` since midnight.
    - IS, SS, US, SL, UL, SV, UV -> int; DS, FL, FD -> float.
    - PN -> readable string (:func:`person_name`), or with ``pn_components=True`` a dict of
      family/given/middle/prefix/suffix (+ "ideographic"/"phonetic" groups when present).
    - AT -> 8-hex-digit string; other string VRs -> str.
    - SQ -> list of dicts {keyword: value} (always a list, possibly empty).
    - BulkDataURI -> the URI string; InlineBinary -> bytes.

    One value gives a scalar, several a list, none ``None``. A value that breaks its VR
    (a date "20201345", an IS "abc") becomes ``None`` with a :class:`UserWarning` naming the
    tag (when ``tag`` is given); no exception.
    """
    if not element:
        return None
    vr = element.get("vr") or (vr_of(tag) if tag is not None else "UN")
    if "BulkDataURI" in element:
        return element["BulkDataURI"]
    if "InlineBinary" in element:
        data = element["InlineBinary"]
        return base64.b64decode("".join(data) if isinstance(data, list) else data)
    values = element.get("Value")
    if vr == "SQ":
        return [_item(item, pn_components) for item in (values or [])]
    if not values:
        return None
    if not isinstance(values, list):
        values = [values]
    out = [_scalar(vr, v, tag, pn_components) for v in values]
    return out[0] if len(out) == 1 else out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that builds many small containers.

    Parsed DICOM JSON holds no reference cycles, yet every few hundred thousand new containers
    the collector re-scans all of them: on a 250 MB metadata body that is most of the time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads(body: bytes | str) -> Any:
    """Parse a DICOM JSON body (``json.loads`` with the garbage collector paused)."""
    with gc_paused():
        return json.loads(body)

