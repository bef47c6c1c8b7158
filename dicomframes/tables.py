"""DICOM JSON -> pandas DataFrames, rows back to Datasets and query filters, and ``df.dicom``.

:func:`to_dataframe` turns QIDO results or WADO-RS metadata (lists of DICOM JSON objects)
into one DataFrame, one row per object, columns named by keyword (private and unknown tags
by their 8-hex-digit tag) in tag order. Column types follow the VR:

=====================  =====================================================================
VR                     column
=====================  =====================================================================
DA                     ``datetime64`` (dates at midnight)
DT                     ``datetime64``; tz-aware when values carry a UTC offset (one offset:
                       that offset; several: converted to UTC); naive and offset values mixed:
                       an object column of :class:`datetime.datetime`
TM                     ``timedelta64`` since midnight (``df.StudyTime`` + ``df.StudyDate``
                       gives a timestamp); partial times such as "12" are 12:00:00
IS SS US SL UL SV      pandas nullable ``Int64`` (UV: ``UInt64``)
DS FL FD               ``float64`` (missing: NaN)
PN                     readable string, "Doe^John^A" -> "Doe, John A" (a name without "^"
                       stays as it is); ``pn_components=True``: dicts of the components
AT                     8-hex-digit string
other strings          pandas' default string dtype (``str`` in pandas 3, ``object`` before)
SQ                     list of dicts {keyword: value}; ``flatten_sequences=True`` makes
                       columns "Sequence.Keyword" instead (one level deep)
binary (OB, OW, ...)   the BulkDataURI string, or ``bytes`` for InlineBinary
=====================  =====================================================================

Attributes with several values give lists in every non-missing cell of their column (a
column is either all scalars or all lists); ``split_multivalued=True`` instead puts the
first value in the keyword's column, the next ones in numbered columns ``Keyword1``,
``Keyword2``... and adds a ``MultiKeyword`` flag column (1 when the row has several values),
like the tutorial's dicom-metadata.csv. Missing values are NA. A value that breaks its VR
(a date "20201345", an IS "abc") becomes NA and a :class:`UserWarning` names the attribute,
its tag and the rows; the table is never lost to one bad value.

Conversion works column by column with vectorised pandas and numpy calls, never through
pydicom objects: for thousands of instances it costs about as much as ``json.loads``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence

from .errors import DicomFramesError
from .standard.dicomjson import ds_string, gc_paused, json_to_dataset, sequence_item
from .standard.personname import parse_person_name, person_name_parts, pn_groups, readable_group
from .standard.tags import (
    BINARY_VRS,
    FLOAT_VRS,
    INT_VRS,
    STRING_VRS,
    STRUCT_CODES,
    UnknownAttribute,
    keyword_of,
    tag_hex,
    tag_of,
    vr_of,
)
from .standard.temporal import format_dt, format_tm, parse_dt, tm_microseconds

if TYPE_CHECKING:
    from .client import Client

__all__ = ["DicomAccessor", "row_to_dataset", "row_to_filters", "to_dataframe"]

_STRING_DTYPE: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object
_NAT = np.iinfo(np.int64).min

# Attributes a QIDO-RS answer carries by default at each level (PS3.18 tables 10.6.3-3, -4,
# -5), plus the UIDs of the levels above that the df.dicom accessor needs.
_LEVEL_TAGS: dict[str, tuple[int, ...]] = {
    "study": (
        0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090,
        0x00080201, 0x00081190, 0x00100010, 0x00100020, 0x00100030, 0x00100040,
        0x0020000D, 0x00200010, 0x00201206, 0x00201208,
    ),
    "series": (
        0x00080060, 0x00080201, 0x0008103E, 0x00081190, 0x0020000D, 0x0020000E,
        0x00200011, 0x00201209, 0x00400244, 0x00400245, 0x00400275,
    ),
    "instance": (
        0x00080016, 0x00080018, 0x00080056, 0x00080201, 0x00081190, 0x0020000D,
        0x0020000E, 0x00200013, 0x00280008, 0x00280010, 0x00280011, 0x00280100,
    ),
}
# Return-only attributes that QIDO servers refuse as matching keys.
_NOT_FILTERS = frozenset({
    "RetrieveURL", "InstanceAvailability", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
    "NumberOfPatientRelatedStudies", "TimezoneOffsetFromUTC", "SpecificCharacterSet",
})
_UID_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_RETRIEVE_URL_RE = re.compile(
    r"/studies/([0-9.]+)(?:/series/([0-9.]+)(?:/instances/([0-9.]+))?)?/?$"
)


class _Link:
    """What a DataFrame keeps in ``attrs["dicomframes"]``: its Client and non-dictionary VRs.

    A reference only: copies of the DataFrame share it, and pickling drops the client.
    """

    __slots__ = ("client", "vrs")

    def __init__(self, client: Any = None, vrs: dict[str, str] | None = None) -> None:
        self.client = client
        self.vrs = vrs or {}

    def __deepcopy__(self, memo: dict) -> _Link:
        return self

    def __copy__(self) -> _Link:
        return self

    def __reduce__(self) -> tuple:
        return (_Link, (None, self.vrs))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Link) and other.client is self.client and other.vrs == self.vrs

    def __hash__(self) -> int:
        return id(self.client)

    def __repr__(self) -> str:
        return f"<dicomframes link: {type(self.client).__name__}>"


# --------------------------------------------------------------------------- converters
# Each takes a list of JSON scalars (None for missing) and returns (array, bad positions).

def _strings(values: list[Any]) -> tuple[Any, list[int]]:
    if _STRING_DTYPE is object:
        return _objects(values), []
    return pd.array(values, dtype=_STRING_DTYPE), []


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _ints(values: list[Any], vr: str) -> tuple[Any, list[int]]:
    dtype = np.uint64 if vr == "UV" else np.int64
    masked = "UInt64" if vr == "UV" else "Int64"
    missing = values.count(None)
    try:
        if missing == 0:
            data = np.array(values, dtype=dtype)
            return pd.arrays.IntegerArray(data, np.zeros(len(data), dtype=bool)), []
        return pd.array(values, dtype=masked), []
    except (TypeError, ValueError, OverflowError):
        pass
    out: list[Any] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
            continue
        try:
            number = float(v)
            if not number.is_integer():
                raise ValueError(v)
            out.append(int(number))
        except (TypeError, ValueError, OverflowError):
            out.append(None)
            bad.append(i)
    try:
        return pd.array(out, dtype=masked), bad
    except (TypeError, ValueError, OverflowError):  # pragma: no cover - beyond 64 bits
        return _objects(out), bad


def _floats(values: list[Any]) -> tuple[Any, list[int]]:
    try:
        return np.array(values, dtype=np.float64), []
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.nan)
    bad: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            bad.append(i)
    return out, bad


def _as_text(values: list[Any]) -> list[Any]:
    return [v if v is None or isinstance(v, str) else str(v) for v in values]


def _dates(values: list[Any]) -> tuple[Any, list[int]]:
    values = _as_text(values)
    raw = _objects(values)
    if any(v is not None and "." in v for v in values):  # ACR-NEMA "2020.09.22"
        raw = _objects([v.replace(".", "") if v is not None else None for v in values])
    out = pd.to_datetime(raw, format="%Y%m%d", errors="coerce").astype("datetime64[us]")
    return out.array, _bad_positions(values, out.isna())


def _times(values: list[Any]) -> tuple[Any, list[int]]:
    cache: dict[Any, int | None] = {}
    micros = np.empty(len(values), dtype=np.int64)
    bad: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            micros[i] = _NAT
            continue
        if v not in cache:
            cache[v] = tm_microseconds(v if isinstance(v, str) else str(v))
        m = cache[v]
        if m is None:
            micros[i] = _NAT
            bad.append(i)
        else:
            micros[i] = m
    return pd.array(micros.view("m8[us]")), bad


def _datetimes(values: list[Any]) -> tuple[Any, list[int]]:
    cache: dict[Any, _dt.datetime | None] = {}
    parsed: list[_dt.datetime | None] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            parsed.append(None)
            continue
        if v not in cache:
            cache[v] = parse_dt(v if isinstance(v, str) else str(v))
        p = cache[v]
        if p is None:
            bad.append(i)
        parsed.append(p)
    offsets = {p.utcoffset() for p in parsed if p is not None}
    if None in offsets and len(offsets) > 1:
        return _objects(parsed), bad
    stamps = pd.to_datetime(_objects(parsed), utc=len(offsets) > 1)
    unit = "datetime64[us]" if stamps.tz is None else f"datetime64[us, {stamps.tz}]"
    return pd.array(stamps.astype(unit)), bad


def _names(values: list[Any], pn_components: bool) -> tuple[Any, list[int]]:
    if pn_components:
        return _objects([person_name_parts(v) if v is not None else None for v in values]), []
    cache: dict[str, str | None] = {}
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        groups = pn_groups(v)
        group = groups.get("Alphabetic") or groups.get("Ideographic") or groups.get("Phonetic")
        if not group:
            out.append(None)
            continue
        if group not in cache:
            cache[group] = readable_group(group)
        out.append(cache[group])
    return _strings(out)


def _tags(values: list[Any]) -> tuple[Any, list[int]]:
    return _strings([
        None if v is None else tag_hex(v) if isinstance(v, int) else str(v).upper()
        for v in values
    ])


def _convert(vr: str, values: list[Any], tag: int, pn_components: bool) -> tuple[Any, list[int]]:
    """Convert one column's scalar JSON values by VR."""
    if vr in INT_VRS:
        return _ints(values, vr)
    if vr in FLOAT_VRS:
        return _floats(values)
    if vr == "DA":
        return _dates(values)
    if vr == "TM":
        return _times(values)
    if vr == "DT":
        return _datetimes(values)
    if vr == "PN":
        return _names(values, pn_components)
    if vr == "AT":
        return _tags(values)
    if vr in STRING_VRS:
        return _strings(values)
    return _objects(values), []


def _bad_positions(values: list[Any], isna: Any) -> list[int]:
    isna = np.asarray(isna)
    if not isna.any():
        return []
    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    return np.flatnonzero(isna & present).tolist()


def _warn(name: str, tag: int, vr: str, bad: list[int], values: list[Any], rows: Any) -> None:
    shown = ", ".join(f"row {rows[i]} {values[i]!r}" for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    warnings.warn(
        f"{name} ({tag_hex(tag)}, VR {vr}): {len(bad)} value(s) are not valid for the VR "
        f"and became NA: {shown}{more}",
        UserWarning,
        stacklevel=4,
    )


# --------------------------------------------------------------------------- columns

class _Binary:
    """Marks an element given by BulkDataURI or InlineBinary in the row pass."""

    __slots__ = ("value",)

    def __init__(self, elem: dict[str, Any]) -> None:
        if "BulkDataURI" in elem:
            self.value: Any = elem["BulkDataURI"]
        else:
            data = elem["InlineBinary"]
            self.value = base64.b64decode("".join(data) if isinstance(data, list) else data)


def _collect(objs: list[dict[str, Any]], raw: bool) -> tuple[dict, dict, set, set]:
    """One pass over the objects, row by row (memory order: several times faster than
    looking each tag up in every object). Per tag: a list with, for each row, None
    (absent or empty), the single value, a list of 2+ values, or a _Binary."""
    n = len(objs)
    columns: dict[str, list[Any]] = {}
    vrs: dict[str, str | None] = {}
    multi: set[str] = set()
    binary: set[str] = set()
    for i, obj in enumerate(objs):
        if not obj:
            continue
        for key, elem in obj.items():
            if raw:
                value = elem
            elif elem is None:
                continue
            else:
                value = elem.get("Value")
                if value is not None and len(value) == 1:
                    value = value[0]
                elif value is None:
                    if "BulkDataURI" in elem or "InlineBinary" in elem:
                        value = _Binary(elem)
                        binary.add(key)
                elif value:
                    multi.add(key)
                else:
                    value = None
            try:
                columns[key][i] = value
            except KeyError:
                columns[key] = [None] * n
                columns[key][i] = value
                vrs[key] = elem.get("vr") if isinstance(elem, dict) else None
    return columns, vrs, multi, binary


class _Builder:
    def __init__(self, *, raw: bool, split: bool, flatten: bool, pn_components: bool) -> None:
        self.raw = raw
        self.split = split
        self.flatten = flatten
        self.pn = pn_components
        self.vrs: dict[str, str] = {}

    def columns(self, objs: list[dict[str, Any]], rows: Any) -> dict[str, Any]:
        collected, json_vrs, multi, binary = _collect(objs, self.raw)
        main: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for tag, key in _ordered_keys(collected):
            values = collected.pop(key)
            name = keyword_of(tag)
            vr = json_vrs.get(key) or vr_of(tag)
            if vr != vr_of(tag):
                self.vrs[name] = vr
            if self.raw:
                main[name] = _objects(values)
            elif key in binary:
                main[name] = _convert(
                    "", [v.value if isinstance(v, _Binary) else v for v in values], tag, False
                )[0]
            elif vr == "SQ":
                items = [None if v is None else [v] if isinstance(v, dict) else v for v in values]
                if self.flatten:
                    self._flatten(name, items, rows, main)
                else:
                    main[name] = _objects([
                        None if v is None else [sequence_item(i, self.pn) for i in v] for v in items
                    ])
            elif key in multi:
                self._multi(name, tag, vr, values, rows, main, extra)
            else:
                main[name] = self._typed(name, tag, vr, values, rows)
        main.update(extra)
        return main

    def _multi(
        self, name: str, tag: int, vr: str, values: list[Any], rows: Any,
        main: dict[str, Any], extra: dict[str, Any],
    ) -> None:
        lists = [v if v is None or isinstance(v, list) else [v] for v in values]
        if self.split:
            longest = max(len(v) for v in lists if v)
            main[name] = self._typed(name, tag, vr, [v[0] if v else None for v in lists], rows)
            extra[f"Multi{name}"] = pd.array(
                [None if not v else int(len(v) > 1) for v in lists], dtype="Int64"
            )
            for k in range(1, longest):
                kth = [v[k] if v and len(v) > k else None for v in lists]
                extra[f"{name}{k}"] = self._typed(name, tag, vr, kth, rows)
            return
        # lists in cells: convert all values at once, then regroup them by row
        counts = [len(v) if v else 0 for v in lists]
        flat = [x for v in lists if v for x in v]
        flat_rows = np.repeat(np.asarray(rows), counts)
        converted = pd.Series(self._typed(name, tag, vr, flat, flat_rows)).tolist()
        cells: list[Any] = []
        start = 0
        for count in counts:
            cells.append(converted[start:start + count] if count else None)
            start += count
        main[name] = _objects(cells)

    def _typed(self, name: str, tag: int, vr: str, values: list[Any], rows: Any) -> Any:
        array, bad = _convert(vr, values, tag, self.pn)
        if bad:
            _warn(name, tag, vr, bad, values, rows)
        return array

    def _flatten(self, name: str, values: list[Any], rows: Any, main: dict[str, Any]) -> None:
        counts = [len(v) if v else 0 for v in values]
        inner = _Builder(raw=False, split=self.split, flatten=False, pn_components=self.pn)
        if max(counts, default=0) <= 1:
            sub = inner.columns([v[0] if v else {} for v in values], rows)
            if not sub:
                main[name] = _objects([None] * len(values))
            for key, column in sub.items():
                main[f"{name}.{key}"] = column
            self.vrs.update({f"{name}.{k}": vr for k, vr in inner.vrs.items()})
            return
        items = [item for v in values if v for item in v]
        sub = inner.columns(items, np.repeat(np.asarray(rows), counts))
        self.vrs.update({f"{name}.{k}": vr for k, vr in inner.vrs.items()})
        for key, column in sub.items():
            flat = pd.Series(column).tolist()
            cells: list[Any] = []
            start = 0
            for count in counts:
                part = flat[start:start + count]
                cells.append(None if count == 0 else part[0] if count == 1 else part)
                start += count
            main[f"{name}.{key}"] = _objects(cells)


def _ordered_keys(columns: dict[str, Any]) -> list[tuple[int, str]]:
    out = []
    for key in list(columns):
        try:
            out.append((int(key, 16), key))
        except (TypeError, ValueError):
            columns.pop(key)
            warnings.warn(f"ignoring {key!r}: not a DICOM JSON tag", UserWarning, stacklevel=4)
    out.sort()
    return out


def _empty_column(tag: int, pn_components: bool) -> Any:
    vr = vr_of(tag)
    if vr == "SQ" or (vr == "PN" and pn_components) or vr in BINARY_VRS:
        return np.empty(0, dtype=object)
    return _convert(vr, [], tag, pn_components)[0]


def to_dataframe(
    objs: Iterable[dict[str, Any]],
    level: str | None = None,
    *,
    raw: bool = False,
    split_multivalued: bool = False,
    flatten_sequences: bool = False,
    pn_components: bool = False,
    client: Client | None = None,
) -> pd.DataFrame:
    """Return a DataFrame of DICOM JSON objects (QIDO results or metadata), one row each.

    Column names, types and options are described in this module's docstring.
    ``level`` ("study", "series" or "instance") gives the columns of an empty answer (204 or
    ``[]``): the attributes QIDO-RS returns by default at that level. ``raw=True`` keeps
    each cell as its JSON element dict. ``client`` is kept by reference for the ``df.dicom``
    accessor (``df.dicom.studies()``, ``.series()``...).
    """
    objs = list(objs)
    if level is not None and level not in _LEVEL_TAGS:
        raise ValueError(f"level must be one of {sorted(_LEVEL_TAGS)} or None, not {level!r}")
    builder = _Builder(
        raw=raw, split=split_multivalued, flatten=flatten_sequences, pn_components=pn_components
    )
    if objs:
        # Millions of small objects are made and dropped here, none in reference cycles: the
        # cyclic garbage collector would only re-scan the parsed JSON again and again.
        with gc_paused():
            columns = builder.columns(objs, range(len(objs)))
    elif level is not None:
        columns = {
            keyword_of(tag): (
                np.empty(0, dtype=object) if raw else _empty_column(tag, pn_components)
            )
            for tag in sorted(_LEVEL_TAGS[level])
        }
    else:
        columns = {}
    df = pd.DataFrame(columns, index=pd.RangeIndex(len(objs)), copy=False)
    if client is not None or builder.vrs:
        df.attrs["dicomframes"] = _Link(client, builder.vrs)
    return df


# --------------------------------------------------------------------------- rows back

def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, list | tuple | dict | np.ndarray | bytes):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _dicom_text(value: Any, vr: str) -> Any:
    """One typed cell value -> the value pydicom expects for that VR."""
    value = _scalar(value)
    if _missing(value):
        return "" if vr not in STRUCT_CODES else None
    if vr == "DA":
        if isinstance(value, _dt.date | pd.Timestamp | np.datetime64):
            return pd.Timestamp(value).strftime("%Y%m%d")
        return str(value)
    if vr == "DT":
        if isinstance(value, _dt.datetime | np.datetime64):
            return format_dt(pd.Timestamp(value).to_pydatetime())
        return str(value)
    if vr == "TM":
        if isinstance(value, _dt.timedelta | np.timedelta64):
            return format_tm(pd.Timedelta(value).to_pytimedelta())
        if isinstance(value, _dt.time):
            return format_tm(value)
        return str(value)
    if vr == "PN":
        if isinstance(value, dict):
            if "Alphabetic" in value or "Ideographic" in value or "Phonetic" in value:
                groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
            else:
                groups = [_components_to_pn(value)]
                groups += [_components_to_pn(value[g]) for g in ("ideographic", "phonetic")
                           if g in value]
            while groups and not groups[-1]:
                groups.pop()
            return "=".join(groups)
        return parse_person_name(str(value))
    if vr == "IS":
        return str(int(value)) if isinstance(value, int | float) else str(value)
    if vr == "DS":
        return ds_string(value) if isinstance(value, int | float) else str(value)
    if vr in ("FL", "FD"):
        return float(value)
    if vr in STRUCT_CODES:
        return int(value)
    if vr == "AT":
        return int(value, 16) if isinstance(value, str) else int(value)
    return value if isinstance(value, str | bytes) else str(value)


def _components_to_pn(parts: dict[str, str]) -> str:
    names = [parts.get(k, "") or "" for k in ("family", "given", "middle", "prefix", "suffix")]
    while names and not names[-1]:
        names.pop()
    return "^".join(names)


def _element_value(value: Any, vr: str) -> Any:
    if vr == "SQ":
        items = value if isinstance(value, list | tuple) else [value]
        return DicomSequence([_dict_to_dataset(item) for item in items if isinstance(item, dict)])
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        out = [_dicom_text(v, vr) for v in value]
        out = [v for v in out if v is not None]
        return out if len(out) != 1 else out[0]
    return _dicom_text(value, vr)


def _add(ds: pydicom.Dataset, name: str, value: Any, vrs: dict[str, str]) -> None:
    try:
        tag = tag_of(name)
    except UnknownAttribute:
        return
    if tag >> 16 == 0x0002 or tag & 0xFFFF == 0:
        return
    if isinstance(value, dict) and "vr" in value:  # raw=True cell: a JSON element
        for elem in json_to_dataset({tag_hex(tag): value}):
            ds.add(elem)
        return
    vr = vrs.get(name) or vr_of(tag)
    if vr in BINARY_VRS:
        if isinstance(value, bytes):
            ds.add(DataElement(tag, vr, value))
        return  # a BulkDataURI: the bytes are not here
    ds.add(DataElement(tag, vr, _element_value(value, vr)))


def _dict_to_dataset(
    item: dict[str, Any], vrs: dict[str, str] | None = None, *, keep_empty: bool = True
) -> pydicom.Dataset:
    """{keyword: value} -> Dataset. In a sequence item a None value is an empty element; in
    a row (``keep_empty=False``) NA may as well mean absent, and is left out."""
    ds = pydicom.Dataset()
    for name, value in _merged(item).items():
        if keep_empty or not _missing(value):
            _add(ds, name, value, vrs or {})
    return ds


def _merged(values: dict[str, Any]) -> dict[str, Any]:
    """Undo split_multivalued and flatten_sequences: one entry per top-level attribute."""
    out: dict[str, Any] = {}
    skip: set[str] = set()
    for name in values:
        if name.startswith("Multi") and name[5:] in values:
            base = name[5:]
            parts = [values[base]]
            k = 1
            while f"{base}{k}" in values:
                parts.append(values[f"{base}{k}"])
                skip.add(f"{base}{k}")
                k += 1
            skip.add(name)
            present = [p for p in parts if not _missing(p)]
            values = {**values, base: present if len(present) > 1 else values[base]}
    sequences: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if name in skip:
            continue
        if "." in name:
            seq, rest = name.split(".", 1)
            sequences.setdefault(seq, {})[rest] = value
            continue
        out[name] = value
    for seq, fields in sequences.items():
        present = {k: v for k, v in fields.items() if not _missing(v)}
        if not present:
            continue
        lengths = {len(v) for v in present.values() if isinstance(v, list)}
        if lengths and all(isinstance(v, list) for v in present.values()):
            count = max(lengths)
            items = [
                {k: v[i] for k, v in present.items() if i < len(v)} for i in range(count)
            ]
        else:
            items = [present]
        out[seq] = items
    return out


def row_to_dataset(row: pd.Series) -> pydicom.Dataset:
    """Return a pydicom Dataset made from one DataFrame row (from :func:`to_dataframe`).

    VRs come from the DICOM dictionary (or from the JSON, for private tags, when the row's
    DataFrame still carries it); typed values go back to their DICOM forms (dates as
    YYYYMMDD, names in "^" form, ...). Numbered columns of ``split_multivalued`` and
    "Sequence.Keyword" columns of ``flatten_sequences`` are put back together. Missing
    values, columns that are not DICOM attributes (e.g. "fname") and BulkDataURI values
    (the bytes are not in the table) are left out.
    """
    vrs = _row_vrs(row)
    return _dict_to_dataset(dict(row.items()), vrs, keep_empty=False)


def _row_vrs(row: pd.Series) -> dict[str, str]:
    link = row.attrs.get("dicomframes") if hasattr(row, "attrs") else None
    return link.vrs if isinstance(link, _Link) else {}


def row_to_filters(row: pd.Series, keys: Sequence[str] | None = None) -> dict[str, str]:
    """Return QIDO-RS query filters ({keyword: DICOM string}) from one DataFrame row.

    Dates become YYYYMMDD, times HHMMSS[.ffffff], names their "^" form, numbers their
    decimal text. ``keys`` picks the attributes (keywords or tags); by default every
    single-valued attribute of the row with a value, except sequences, binary data and the
    return-only attributes servers refuse as matching keys (RetrieveURL,
    NumberOfStudyRelatedInstances...). A key that is not a column of the row raises KeyError
    (dropping it silently would widen the search); a key whose value is missing is left out.
    """
    values = _merged(dict(row.items()))
    vrs = _row_vrs(row)
    wanted: Iterable[str]
    if keys is None:
        wanted = [k for k in values if k not in _NOT_FILTERS]
    else:
        wanted = [keyword_of(tag_of(k)) for k in keys]
        absent = [name for name in wanted if name not in values]
        if absent:
            raise KeyError(f"{', '.join(absent)}: not a column of this row")
    out: dict[str, str] = {}
    for name in wanted:
        value = values.get(name)
        try:
            tag = tag_of(name)
        except UnknownAttribute:
            continue
        vr = vrs.get(name) or vr_of(tag)
        if value is None or _missing(value) or vr == "SQ" or vr in BINARY_VRS:
            if keys is not None and (vr == "SQ" or vr in BINARY_VRS):
                raise ValueError(f"{name} ({vr}) cannot be a QIDO filter")
            continue
        if isinstance(value, list | tuple | np.ndarray):
            if keys is None:
                continue
            out[name] = "\\".join(str(_dicom_text(v, vr)) for v in value)
            continue
        out[name] = str(_dicom_text(value, vr))
    return out


# --------------------------------------------------------------------------- df.dicom

@pd.api.extensions.register_dataframe_accessor("dicom")
class DicomAccessor:
    """``df.dicom``: follow-up DICOMweb calls for the rows of a dicomframes DataFrame.

    ``studies.dicom.series()``, ``series.dicom.instances()``, ``instances.dicom.metadata()``,
    ``instances.dicom.frames()``, ``df.dicom.retrieve()`` and ``df.dicom.delete()`` call the
    :class:`~dicomframes.client.Client` that made the DataFrame with the UIDs of its rows
    (columns StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, or the RetrieveURL column
    when a server leaves a UID out). DataFrames made elsewhere (read from a CSV, say) get a
    client with ``df.dicom.client = client``.
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    @property
    def client(self) -> Client:
        """The Client that made this DataFrame (raises if there is none)."""
        link = self._df.attrs.get("dicomframes")
        client = link.client if isinstance(link, _Link) else link
        if client is None:
            raise DicomFramesError(
                "this DataFrame has no dicomframes client: it was not made by a Client, or "
                "the link was lost (e.g. read back from a file); set one with "
                "df.dicom.client = dicomframes.connect(...)"
            )
        return client

    @client.setter
    def client(self, client: Client) -> None:
        link = self._df.attrs.get("dicomframes")
        vrs = link.vrs if isinstance(link, _Link) else {}
        self._df.attrs["dicomframes"] = _Link(client, vrs)

    # rows -> UIDs
    def _uids(self, depth: int, what: str) -> list[tuple[str, ...]]:
        """Unique UID tuples (study[, series[, instance]]) of the rows, in row order."""
        df = self._df
        columns = _UID_COLUMNS[:depth]
        found: list[list[Any]] = []
        urls = df["RetrieveURL"].tolist() if "RetrieveURL" in df.columns else None
        for i, column in enumerate(columns):
            if column in df.columns:
                found.append(df[column].tolist())
            elif urls is not None:
                found.append([_from_url(u, i) for u in urls])
            else:
                raise DicomFramesError(
                    f"df.dicom.{what}() needs a {column} column (or RetrieveURL); this "
                    f"DataFrame has {list(df.columns)[:8]}..."
                )
        out: list[tuple[str, ...]] = []
        seen: set[tuple[str, ...]] = set()
        for uids in zip(*found, strict=True):
            if any(_missing(u) for u in uids):
                continue
            key = tuple(str(u) for u in uids)
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def _depth(self) -> int:
        """How deep the rows go: 3 instances, 2 series, 1 studies."""
        columns = set(self._df.columns)
        if "SOPInstanceUID" in columns:
            return 3
        if "SeriesInstanceUID" in columns:
            return 2
        if "StudyInstanceUID" in columns:
            return 1
        if "RetrieveURL" in columns and len(self._df):
            depths = {
                sum(1 for i in range(3) if _from_url(u, i)) for u in self._df["RetrieveURL"]
            }
            return max(depths)
        raise DicomFramesError(
            "this DataFrame has no StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID "
            "column (nor RetrieveURL): df.dicom cannot tell which studies it is about"
        )

    def _concat(self, frames: list[pd.DataFrame], level: str) -> pd.DataFrame:
        client = self.client
        frames = [f for f in frames if f is not None]
        if not frames:
            return to_dataframe([], level=level, client=client)
        if len(frames) == 1:
            out = frames[0]
        else:
            with warnings.catch_warnings():
                # all-NA columns of some frames: their dtype does not matter here
                warnings.simplefilter("ignore", FutureWarning)
                out = pd.concat([f for f in frames if len(f.columns)], ignore_index=True)
        link = out.attrs.get("dicomframes")
        out.attrs["dicomframes"] = _Link(client, link.vrs if isinstance(link, _Link) else {})
        return out

    # follow-up calls
    def _with_uids(self, frame: pd.DataFrame, *uids: str) -> pd.DataFrame:
        """Add the UIDs a call was made with as columns when the answer leaves them out
        (QIDO answers within a study or series need not repeat its UID)."""
        for column, uid in zip(_UID_COLUMNS, uids, strict=False):
            if column in frame.columns or not len(frame):
                continue
            tag = tag_of(column)
            position = len(frame.columns)
            for i, name in enumerate(frame.columns):
                try:
                    if tag_of(name) > tag:
                        position = i
                        break
                except UnknownAttribute:
                    continue
            frame = frame.copy()
            frame.insert(position, column, pd.array([uid] * len(frame), dtype=_STRING_DTYPE))
        return frame

    def studies(self, **filters: Any) -> pd.DataFrame:
        """QIDO-RS studies of the rows' StudyInstanceUIDs (one search per study)."""
        client = self.client
        frames = [
            client.search_studies(StudyInstanceUID=study, **filters)
            for (study,) in self._uids(1, "studies")
        ]
        return self._concat(frames, "study")

    def series(self, **filters: Any) -> pd.DataFrame:
        """QIDO-RS series of the rows' studies (``filters`` as for ``search_series``)."""
        client = self.client
        frames = [
            self._with_uids(client.search_series(study=study, **filters), study)
            for (study,) in self._uids(1, "series")
        ]
        return self._concat(frames, "series")

    def instances(self, **filters: Any) -> pd.DataFrame:
        """QIDO-RS instances of the rows' series (or of their studies, for study rows)."""
        client = self.client
        if self._depth() >= 2:
            frames = [
                self._with_uids(
                    client.search_instances(study=study, series=series, **filters), study, series
                )
                for study, series in self._uids(2, "instances")
            ]
        else:
            frames = [
                self._with_uids(client.search_instances(study=study, **filters), study)
                for (study,) in self._uids(1, "instances")
            ]
        return self._concat(frames, "instance")

    def metadata(self, **options: Any) -> pd.DataFrame:
        """WADO-RS metadata of the rows (instances, series or studies), one row per instance.

        Instance rows: each instance's metadata, fetched per series when several instances
        of one series are asked for (then kept to the instances of this DataFrame, in its
        row order).
        """
        client = self.client
        depth = self._depth()
        if depth == 1:
            frames = [client.metadata(study, **options) for (study,) in self._uids(1, "metadata")]
            return self._concat(frames, "instance")
        if depth == 2:
            frames = [
                client.metadata(study, series, **options)
                for study, series in self._uids(2, "metadata")
            ]
            return self._concat(frames, "instance")
        wanted = self._uids(3, "metadata")
        by_series: dict[tuple[str, str], list[str]] = {}
        for study, series, sop in wanted:
            by_series.setdefault((study, series), []).append(sop)
        frames = []
        for (study, series), sops in by_series.items():
            if len(sops) <= 3:
                frames += [client.metadata(study, series, sop, **options) for sop in sops]
                continue
            frame = client.metadata(study, series, **options)
            if "SOPInstanceUID" in frame.columns:
                frame = frame[frame["SOPInstanceUID"].isin(sops)]
            frames.append(frame)
        out = self._concat(frames, "instance")
        if "SOPInstanceUID" in out.columns and len(out):
            order = {sop: i for i, (_, _, sop) in enumerate(wanted)}
            position = out["SOPInstanceUID"].map(lambda s: order.get(s, len(order)))
            out = out.iloc[np.argsort(position.to_numpy(), kind="stable")]
            out = out.reset_index(drop=True)
        return out

    def frames(
        self, frame: int | None = None, *, stack: bool = True, order: str = "slice", **options: Any
    ) -> np.ndarray | list[np.ndarray]:
        """Pixel data of the instance rows.

        ``stack=True`` (default) gives one array: the instances fetched concurrently and ordered
        along the slice normal (ImagePositionPatient), else by InstanceNumber (``order="given"``
        keeps row order); ``frame`` picks one frame of each instance, None takes all. Instances
        of different shapes cannot stack: ``stack=False`` gives a list, one array per row.
        """
        client = self.client
        uids = list(self._uids(3, "frames"))
        if not stack:
            return [client.frames(*row, frames=frame, **options) for row in uids]
        from .frames import fetch_stack

        return fetch_stack(client, uids, frame=frame, order=order, **options)

    def retrieve(self, **options: Any) -> list[pydicom.Dataset]:
        """WADO-RS retrieve of the rows (instances, series or studies) as pydicom Datasets."""
        client = self.client
        depth = self._depth()
        out: list[pydicom.Dataset] = []
        for uids in self._uids(depth, "retrieve"):
            out.extend(client.retrieve(*uids, **options))
        return out

    def delete(self) -> None:
        """Delete the rows' instances, series or studies from the server (not in PS3.18;
        servers without DELETE raise their own error)."""
        client = self.client
        depth = self._depth()
        for uids in self._uids(depth, "delete"):
            client.delete(*uids)


def _from_url(url: Any, part: int) -> str | None:
    if not isinstance(url, str):
        return None
    match = _RETRIEVE_URL_RE.search(url)
    return match.group(part + 1) if match else None

