"""DataFrame rows back to DICOM: pydicom Datasets and QIDO-RS query filters.

The inverse of :func:`dicomframes.convert.tables.to_dataframe`: typed cells (timestamps, timedeltas,
readable names, numbers) go back to their DICOM forms through the standard layer's formatters,
and the numbered columns of ``split_multivalued`` and the "Sequence.Keyword" columns of
``flatten_sequences`` are put back together. No HTTP here.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence

from ..standard.attributes import NOT_FILTERS
from ..standard.dicomjson import ds_string, json_to_dataset
from ..standard.personname import join_person_name, parse_person_name
from ..standard.tags import (
    BINARY_VRS,
    STRUCT_CODES,
    UnknownAttribute,
    keyword_of,
    tag_hex,
    tag_of,
    vr_of,
)
from ..standard.temporal import format_dt, format_tm, query_date
from .link import link_of

__all__ = ["is_missing"]


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and pd.NA; lists, dicts and bytes are values, never missing."""
    if value is None:
        return True
    if isinstance(value, str | int | list | tuple | dict | np.ndarray | bytes):
        return False  # str and int first: the common cells, answered without pandas
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain_python(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (others as they are)."""
    return value.item() if isinstance(value, np.generic) else value


def _dicom_text(value: Any, vr: str) -> Any:
    """One typed cell value -> the value pydicom expects for that VR."""
    value = _plain_python(value)
    if is_missing(value):
        return "" if vr not in STRUCT_CODES else None
    if vr == "DA":
        if isinstance(value, _dt.date | pd.Timestamp | np.datetime64):
            return query_date(value)
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
            return join_person_name(value)
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
        if keep_empty or not is_missing(value):
            _add(ds, name, value, vrs or {})
    return ds


def _unsplit(values: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Undo split_multivalued: the values with each base column holding its list, and the
    numbered and Multi* columns to skip."""
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
            present = [p for p in parts if not is_missing(p)]
            values = {**values, base: present if len(present) > 1 else values[base]}
    return values, skip


def _sequence_items(fields: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The items of one flattened sequence from its "Sequence.Keyword" cells (None: empty)."""
    present = {k: v for k, v in fields.items() if not is_missing(v)}
    if not present:
        return None
    lengths = {len(v) for v in present.values() if isinstance(v, list)}
    if lengths and all(isinstance(v, list) for v in present.values()):
        return [{k: v[i] for k, v in present.items() if i < len(v)} for i in range(max(lengths))]
    return [present]


def _merged(values: dict[str, Any]) -> dict[str, Any]:
    """Undo split_multivalued and flatten_sequences: one entry per top-level attribute."""
    values, skip = _unsplit(values)
    out: dict[str, Any] = {}
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
        items = _sequence_items(fields)
        if items is not None:
            out[seq] = items
    return out


def _row_vrs(row: pd.Series) -> dict[str, str]:
    link = link_of(row)
    return link.vrs if link is not None else {}


def row_to_dataset(row: pd.Series) -> pydicom.Dataset:
    """Return a pydicom Dataset made from one DataFrame row (from :func:`to_dataframe`).

    VRs come from the DICOM dictionary (or from the JSON, for private tags, when the row's
    DataFrame still carries it); typed values go back to their DICOM forms (dates as
    YYYYMMDD, names in "^" form, ...). Numbered columns of ``split_multivalued`` and
    "Sequence.Keyword" columns of ``flatten_sequences`` are put back together. Missing
    values, columns that are not DICOM attributes (e.g. "fname") and BulkDataURI values
    (the bytes are not in the table) are left out.
    """
    return _dict_to_dataset(dict(row.items()), _row_vrs(row), keep_empty=False)


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
        wanted = [k for k in values if k not in NOT_FILTERS]
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
        if value is None or is_missing(value) or vr == "SQ" or vr in BINARY_VRS:
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
