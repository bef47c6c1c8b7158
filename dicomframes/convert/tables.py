"""DICOM JSON -> pandas DataFrames: :func:`to_dataframe` and its column builders.

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
pydicom objects: for thousands of instances it costs about as much as ``json.loads``. The
per-value rules (DA/TM/DT parsing, PN groups, VR families) are the standard layer's. Rows go
back to DICOM in :mod:`dicomframes.convert.rows`; ``df.dicom`` lives in :mod:`dicomframes.accessor`.
No HTTP here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..standard.attributes import LEVELS, returned_tags
from ..standard.dicomjson import sequence_item
from ..standard.personname import person_name_parts, readable_group, shown_group
from ..standard.tags import column_kind, keyword_of, tag_hex, vr_of
from ..standard.temporal import parse_da, parse_dt, tm_microseconds
from .link import ATTRS_KEY, TableLink

__all__ = ["STRING_DTYPE", "to_dataframe"]

#: The dtype of text columns: pandas' default string dtype (``str`` in pandas 3, else object).
STRING_DTYPE: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object
_NAT = np.iinfo(np.int64).min
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_DAY_MICROSECONDS = 86_400_000_000


# --------------------------------------------------------------------------- converters
# Each takes a list of JSON scalars (None for missing) and returns (array, bad positions).

def _strings(values: list[Any]) -> tuple[Any, list[int]]:
    if STRING_DTYPE is object:
        return _objects(values), []
    return pd.array(values, dtype=STRING_DTYPE), []


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


def _micros(
    values: list[Any], parse: Callable[[str], int | None]
) -> tuple[np.ndarray, list[int]]:
    """int64 microseconds of each value by ``parse`` (once per distinct value); NaT where
    missing or invalid, with the positions of the invalid ones."""
    cache: dict[Any, int | None] = {}
    micros = np.empty(len(values), dtype=np.int64)
    bad: list[int] = []
    for i, v in enumerate(values):
        if v is None or not isinstance(v, str | int | float):  # a list or an object: bad
            micros[i] = _NAT
            if v is not None:
                bad.append(i)
            continue
        if v not in cache:
            cache[v] = parse(v if isinstance(v, str) else str(v))
        m = cache[v]
        if m is None:
            micros[i] = _NAT
            bad.append(i)
        else:
            micros[i] = m
    return micros, bad


def _da_microseconds(text: str) -> int | None:
    date = parse_da(text)
    return None if date is None else (date.toordinal() - _EPOCH_ORDINAL) * _DAY_MICROSECONDS


def _dates(values: list[Any]) -> tuple[Any, list[int]]:
    micros, bad = _micros(values, _da_microseconds)
    return pd.array(micros.view("M8[us]")), bad


def _times(values: list[Any]) -> tuple[Any, list[int]]:
    micros, bad = _micros(values, tm_microseconds)
    return pd.array(micros.view("m8[us]")), bad


def _datetimes(values: list[Any]) -> tuple[Any, list[int]]:
    cache: dict[Any, _dt.datetime | None] = {}
    parsed: list[_dt.datetime | None] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if v is None or not isinstance(v, str | int | float):  # a list or an object: bad
            parsed.append(None)
            if v is not None:
                bad.append(i)
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
        group = v.get("Alphabetic") if isinstance(v, dict) else None
        if not (group and isinstance(group, str)):  # the common case needs no more
            group = shown_group(v)
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
    """Convert one column's scalar JSON values by VR (its :func:`column_kind`)."""
    kind = column_kind(vr)
    if kind in ("int", "uint"):
        return _ints(values, vr)
    converter = _CONVERTERS.get(kind)
    if converter is not None:
        return converter(values)
    if kind == "person":
        return _names(values, pn_components)
    return _objects(values), []


_CONVERTERS: dict[str, Callable[[list[Any]], tuple[Any, list[int]]]] = {
    "float": _floats, "date": _dates, "time": _times, "datetime": _datetimes, "tag": _tags,
    "string": _strings,
}


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


_NESTED = (list, dict)  # a tuple: isinstance is faster with it than with a union


def _plain(key: str, values: list[Any], vr: str | None) -> list[Any]:
    """``values`` without nested JSON where DICOM has plain values (not a value of any VR;
    a warning says so); PN objects and SQ items are nested by design."""
    if vr in ("SQ", "PN") or not any(isinstance(v, _NESTED) for v in values):
        return values
    warnings.warn(f"{key}: nested JSON values are not DICOM values; left out", UserWarning,
                  stacklevel=5)
    return [None if isinstance(v, _NESTED) else v for v in values]


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
        if not obj or not isinstance(obj, dict):  # a malformed item holds no attributes
            continue
        if raw:
            for key, elem in obj.items():
                try:
                    columns[key][i] = elem
                except KeyError:
                    columns[key] = [None] * n
                    columns[key][i] = elem
                    vrs[key] = elem.get("vr") if isinstance(elem, dict) else None
            continue
        for key, elem in obj.items():
            if not isinstance(elem, dict):  # None, or not a DICOM JSON element
                continue
            value = elem.get("Value")
            if value is None:
                if "BulkDataURI" in elem or "InlineBinary" in elem:
                    value = _Binary(elem)
                    binary.add(key)
            else:
                if not isinstance(value, list):
                    value = [value]
                if len(value) == 1:  # most cells: one plain value, no further test
                    value = value[0]
                    if isinstance(value, _NESTED):
                        value = _plain(key, [value], elem.get("vr"))[0]
                elif value:
                    value = _plain(key, value, elem.get("vr"))
                    multi.add(key)
                else:
                    value = None
            try:
                columns[key][i] = value
            except KeyError:
                columns[key] = [None] * n
                columns[key][i] = value
                vrs[key] = elem.get("vr")
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
    kind = column_kind(vr)
    if kind in ("sequence", "binary") or (kind == "person" and pn_components):
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
    client: Any = None,
) -> pd.DataFrame:
    """Return a DataFrame of DICOM JSON objects (QIDO results or metadata), one row each.

    Column names, types and options are described in this module's docstring.
    ``level`` ("study", "series" or "instance") gives the columns of an empty answer (204 or
    ``[]``): the attributes QIDO-RS returns by default at that level. ``raw=True`` keeps
    each cell as its JSON element dict. ``client`` is kept by reference for the ``df.dicom``
    accessor (``df.dicom.studies()``, ``.series()``...).
    """
    objs = list(objs)
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)} or None, not {level!r}")
    builder = _Builder(
        raw=raw, split=split_multivalued, flatten=flatten_sequences, pn_components=pn_components
    )
    if objs:
        columns = builder.columns(objs, range(len(objs)))
    elif level is not None:
        columns = {
            keyword_of(tag): (
                np.empty(0, dtype=object) if raw else _empty_column(tag, pn_components)
            )
            for tag in returned_tags(level)
        }
    else:
        columns = {}
    df = pd.DataFrame(columns, index=pd.RangeIndex(len(objs)), copy=False)
    if client is not None or builder.vrs:
        df.attrs[ATTRS_KEY] = TableLink(client, builder.vrs)
    return df
