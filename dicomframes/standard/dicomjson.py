"""The DICOM JSON model (PS3.18 Annex F.2): tags, keywords, VRs and values. No I/O here.

This is the one place in dicomframes that knows DICOM JSON. The embedded server uses
:func:`dataset_to_json` to answer metadata and QIDO requests; the client and
:mod:`dicomframes.convert.tables` read the answers with :func:`python_value` and friends.

A DICOM JSON object maps 8-hex-digit tags to elements::

    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
     "00280030": {"vr": "DS", "Value": [0.5, 0.5]},
     "7FE00010": {"vr": "OW", "BulkDataURI": "http://.../bulk/7FE00010"}}

Conventions followed when writing (F.2.3-F.2.7): an element without a value has no
"Value" key; empty values inside a multi-valued element are ``null``; IS and DS are JSON
numbers (a value that is not a valid number goes out empty, as Orthanc sends it: a string
there breaks strict readers); AT values are 8-hex-digit strings; PN values are objects with
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
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName, format_number_as_ds

try:  # an optional, faster parser (the parquet extra)
    import orjson as _orjson
except ImportError:  # pragma: no cover - without the extra
    _orjson = None  # type: ignore[assignment]  # a module or None

from .personname import PN_GROUPS, person_name, person_name_parts, pn_groups
from .tags import (
    BINARY_VRS,
    CODE_VRS,
    FLOAT_VRS,
    INT_VRS,
    NUMBER_STRING_VRS,
    PIXEL_TAGS,
    SINGLE_TEXT_VRS,
    STRING_VRS,
    STRUCT_CODES,
    keyword_of,
    tag_hex,
    vr_of,
)
from .temporal import format_dt, format_tm, parse_da, parse_dt, parse_tm

__all__ = [
    "dataset_to_json",
    "ds_string",
    "element_to_json",
    "first_value",
    "gc_paused",
    "json_to_dataset",
    "loads",
    "python_value",
    "sequence_item",
]

# Single-byte and multi-byte character sets that decode without ISO 2022 code extensions.
# Anything else (ISO 2022 escapes, several values) goes through pydicom's own decoder.
_SIMPLE_CHARSETS = {
    "": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8",
    "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7",
    "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9", "ISO_IR 203": "iso8859_15",
    "ISO_IR 166": "tis_620", "GB18030": "gb18030", "GBK": "gbk",
}

# --------------------------------------------------------------------------- Dataset -> JSON

def _number(text: str, vr: str) -> int | float | None:
    """IS/DS text -> JSON number; None (an empty value) for text that is not a finite number.

    PS3.18 F.2.3.1 makes IS and DS JSON numbers: a value that is not one cannot be sent as
    such, and sending it as a string breaks strict readers (pydicom's ``Dataset.from_json``).
    Like Orthanc, the value is left empty.
    """
    try:
        if vr == "IS":
            return int(text)
        number = float(text)
    except ValueError:
        if vr == "IS":
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if number.is_integer() else None
        return None
    return number if math.isfinite(number) else None


def _dicom_string(value: Any, vr: str) -> str:
    """A pydicom value of a string VR -> its DICOM string form."""
    if isinstance(value, str):
        return value
    original = getattr(value, "original_string", None)
    if original:
        return str(original)
    if isinstance(value, _dt.datetime):
        return format_dt(value) if vr == "DT" else value.strftime("%Y%m%d")
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, _dt.time):
        return format_tm(value)
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
            out[f"{tag:08X}"] = self.element(ds, tag, elem, codec)
        return out

    def element(self, ds: pydicom.Dataset, tag: int, elem: DataElement | RawDataElement,
                codec: str | None) -> dict[str, Any]:
        """One element of ``ds``, raw or decoded."""
        result = None
        if isinstance(elem, RawDataElement):
            result = self._raw(ds, tag, elem, codec)
        if result is None:
            result = self._element(ds, tag, ds[tag], codec)
        return result

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
    def _raw(self, ds: pydicom.Dataset, tag: int, raw: RawDataElement,
             codec: str | None) -> dict[str, Any] | None:
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
        if vr in STRING_VRS or vr == "PN":
            if vr in CODE_VRS or vr in NUMBER_STRING_VRS or vr == "UR":
                text = data.decode("latin_1")
            else:
                if codec is None:
                    return None
                try:
                    text = data.decode(codec)
                except UnicodeDecodeError:
                    return None
            return self._strings(vr, text)
        if vr in NUMBER_STRING_VRS:
            return self._strings(vr, data.decode("latin_1"))
        code = STRUCT_CODES.get(vr)
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
        if vr in BINARY_VRS:
            return self._binary(ds, tag, vr, data)
        return None

    def _strings(self, vr: str, text: str) -> dict[str, Any]:
        if vr in SINGLE_TEXT_VRS or vr == "UR":
            text = text.rstrip(" \0")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        text = text.rstrip(" \0")
        if vr in CODE_VRS or vr in NUMBER_STRING_VRS:
            text = text.lstrip(" ")
        if not text:
            return {"vr": vr}
        parts = text.split("\\")
        if vr == "PN":
            values: list[Any] = [pn_groups(p.rstrip(" ")) or None for p in parts]
        elif vr in NUMBER_STRING_VRS:
            values = [_number(s, vr) if (s := p.strip(" \0")) else None for p in parts]
            if all(v is None for v in values):
                return {"vr": vr}
        elif vr in CODE_VRS:
            values = [p.strip(" \0") or None for p in parts]
        else:
            values = [p.rstrip(" \0") or None for p in parts]
        return {"vr": vr, "Value": values}

    def _binary(self, ds: pydicom.Dataset, tag: int, vr: str, data: bytes) -> dict[str, Any]:
        if self.bulk_uri is not None and (tag in PIXEL_TAGS or len(data) > self.threshold):
            return {"vr": vr, "BulkDataURI": self.bulk_uri(tag, ds[tag])}
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}

    # decoded elements: pydicom already made Python values
    def _element(self, ds: pydicom.Dataset, tag: int, elem: DataElement,
                 codec: str | None) -> dict[str, Any]:
        vr = str(elem.VR)
        if " or " in vr:
            vr = vr.split(" or ")[0]
        value = elem.value
        if vr == "SQ":
            items = [self.dataset(item, codec) for item in (value or [])]
            return {"vr": vr, "Value": items} if items else {"vr": vr}
        if _is_empty(value):
            return {"vr": vr}
        if vr in BINARY_VRS:
            data = value if isinstance(value, bytes) else bytes(value)
            return self._binary(ds, tag, vr, data)
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        if vr == "PN":
            out: list[Any] = [pn_groups(str(v)) or None for v in values]
        elif vr == "AT":
            out = [tag_hex(int(v)) for v in values]
        elif vr in NUMBER_STRING_VRS:
            out = [self._number_value(v, vr) for v in values]
        elif vr in STRING_VRS:
            if vr in SINGLE_TEXT_VRS or vr == "UR":
                values = ["\\".join(_dicom_string(v, vr) for v in values)]
            out = [_dicom_string(v, vr) or None for v in values]
        elif vr in ("FL", "FD"):
            out = [float(v) for v in values]
        elif vr in STRUCT_CODES:
            out = [int(v) for v in values]
        else:
            out = [v if isinstance(v, str | int | float) else str(v) for v in values]
        if all(v is None for v in out):
            return {"vr": vr}
        return {"vr": vr, "Value": out}

    @staticmethod
    def _number_value(value: Any, vr: str) -> int | float | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return _number(value.strip(), vr)
        try:
            if vr == "IS":
                return int(value)
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None


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


def element_to_json(ds: pydicom.Dataset, tag: int) -> dict[str, Any] | None:
    """The DICOM JSON of the top-level element ``tag`` of ``ds`` as :func:`dataset_to_json`
    gives it (binary values inline), None when ``ds`` has no such element. A raw element is
    decoded without pydicom's conversion, and stays raw in ``ds``."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    encoder = _Encoder(None, 0)
    return encoder.element(ds, tag, elem, encoder._codec(ds, None))


# --------------------------------------------------------------------------- JSON -> Dataset

def ds_string(value: float) -> str:
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
            groups = pn_groups(v)
            parts = [groups.get(g, "") for g in PN_GROUPS]
            while parts and not parts[-1]:
                parts.pop()
            out.append("=".join(parts))
    elif vr == "AT":
        out = [int(v, 16) if isinstance(v, str) else int(v) for v in values if v is not None]
    elif vr == "DS":
        out = ["" if v is None else v if isinstance(v, str) else ds_string(v) for v in values]
    elif vr == "IS":
        out = ["" if v is None else str(int(v)) if isinstance(v, float) else str(v) for v in values]
    elif vr in STRUCT_CODES:
        out = [v for v in values if v is not None]
    else:
        out = ["" if v is None else v if isinstance(v, str) else str(v) for v in values]
    if not out:
        return None
    return out[0] if len(out) == 1 else out


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def json_to_dataset(obj: dict[str, Any]) -> pydicom.Dataset:
    """Return a pydicom Dataset made from a DICOM JSON object.

    "InlineBinary" values are decoded; elements given by "BulkDataURI" are **skipped**
    (fetch them with ``client.bulkdata(uri)`` if needed), since an empty value would look
    like real, empty data. Elements without a value are kept, empty.
    """
    ds = pydicom.Dataset()
    for key, elem in obj.items():
        if not (isinstance(key, str) and len(key) == 8 and _HEX_DIGITS.issuperset(key)):
            raise ValueError(f"not a DICOM JSON attribute tag: {key!r} (8 hex digits expected)")
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
        return person_name_parts(value) if pn_components else person_name(value)
    if vr in INT_VRS:
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
    if vr in FLOAT_VRS:
        try:
            return float(value)
        except (TypeError, ValueError):
            _warn_bad(tag, vr, value)
            return None
    if vr in ("DA", "DT", "TM"):
        if not isinstance(value, str):
            value = str(value)
        parsed = {"DA": parse_da, "DT": parse_dt, "TM": parse_tm}[vr](value)
        if parsed is None:
            _warn_bad(tag, vr, value)
        return parsed
    if vr == "AT" and isinstance(value, int):
        return tag_hex(value)
    if vr == "SQ":
        return sequence_item(value, pn_components)
    return value


def sequence_item(obj: dict[str, Any] | None, pn_components: bool = False) -> dict[str, Any]:
    """A sequence item -> {keyword: python value}, in tag order.

    An item that is not an object gives {}, and keys that are not 8-hex-digit tags are left
    out, each with a warning: a malformed item never costs the whole table.
    """
    if not isinstance(obj, dict):
        if obj is not None:
            warnings.warn(f"sequence item {obj!r:.60} is not a DICOM JSON object; left out",
                          UserWarning, stacklevel=2)
        return {}
    tags = {}
    for key in obj:
        if isinstance(key, str) and len(key) == 8 and _HEX_DIGITS.issuperset(key):
            tags[int(key, 16)] = key
        else:
            warnings.warn(f"sequence item key {key!r:.40} is not a DICOM tag; left out",
                          UserWarning, stacklevel=2)
    out: dict[str, Any] = {}
    for tag in sorted(tags):
        element = obj[tags[tag]]
        value = python_value(element, tag, pn_components=pn_components) if isinstance(
            element, dict) else None
        out[keyword_of(tag)] = value
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
        return [sequence_item(item, pn_components) for item in (values or [])]
    if not values:
        return None
    if not isinstance(values, list):
        values = [values]
    out = [_scalar(vr, v, tag, pn_components) for v in values]
    return out[0] if len(out) == 1 else out


def first_value(obj: Mapping[str, Any], tag: int | str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object, typed by its VR (None when absent or
    empty). ``tag`` is an int or 8 hex digits; lower-case keys are found too."""
    key = tag_hex(tag) if isinstance(tag, int) else tag.upper()
    element = obj.get(key)
    if element is None:
        element = obj.get(key.lower())
    if not isinstance(element, Mapping):
        return None
    value = python_value(dict(element), int(key, 16))
    if isinstance(value, list):
        return value[0] if value else None
    return value


_pause_lock = threading.Lock()
_pauses = 0  # blocks inside gc_paused, in every thread
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that builds many small containers.

    Parsed DICOM JSON holds no reference cycles, yet every few hundred thousand new containers
    the collector re-scans all of them: on a 250 MB metadata body that is most of the time.
    Blocks may overlap, in several threads: the collector runs again (if it ran before the
    first) once the last one ends.
    """
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def loads(body: bytes | str, fast: bool = True) -> Any:
    """Parse a DICOM JSON body, with the garbage collector paused: by orjson when it is
    installed and ``fast`` (the ``parquet`` extra; about 1.6 times faster on QIDO answers),
    else by ``json.loads``, which also takes what orjson refuses (NaN, integers beyond 64 bits)
    and refuses deep nesting with a RecursionError where orjson may crash the process."""
    with gc_paused():
        if _orjson is not None and fast:
            try:
                return _orjson.loads(body)
            except _orjson.JSONDecodeError:
                pass  # json gives the same answer, or the usual error message
        return json.loads(body)
