"""The Arrow schema of DICOM rows: the column types a harvest writes to Parquet.

Every file has one schema (:func:`schema_for`): columns typed as
:func:`dicomframes.convert.tables.to_dataframe` types them (same VR -> dtype rules), decided
from the
attributes' VRs and value multiplicities, not from the data:

==============================  ===============================================================
attribute                       Arrow type (pandas dtype when read back)
==============================  ===============================================================
DA / TM                         ``timestamp[us]`` / ``duration[us]`` (datetime64 / timedelta64)
DT                              ``timestamp[us, UTC]`` (offsets applied; naive values as UTC)
IS SS US SL UL SV / UV          ``int64`` / ``uint64`` (pandas ``Int64`` / ``UInt64``)
DS FL FD                        ``float64``
PN AT, other strings            ``string`` (readable names, 8-hex-digit tags)
several values by the           ``list<...>`` of the above (a single value is a one-item list)
dictionary's VM (``1-n``, ``2``)
SQ                              ``string``: the items as JSON text
binary (OB, OW, ...)            ``string``: the BulkDataURI (inline bytes as base64)
private and unknown tags        ``string`` (several values joined by ``\\``)
==============================  ===============================================================

Columns a server sends beyond the planned ones (and with ``metadata=True`` every attribute
found) join the schema as they appear; parts written before that are rewritten at the end so
that every file has the final schema. ``dicomframes.dask`` reads the same partitions with
:func:`dicomframes.client.harvest.fetch_partition` and :func:`empty_frame` as ``meta``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydicom.datadict import dictionary_VM

from ..standard.attributes import (
    COMPUTED,
    DEFAULT_TAGS,
    RESERVED_QIDO_KEYS,
    level_name,
    levels_above,
    returned_tags,
)
from ..standard.tags import (
    UnknownAttribute,
    column_kind,
    keyword_of,
    tag_of,
    vr_of,
)
from .link import link_of
from .rows import is_missing
from .tables import STRING_DTYPE

__all__ = [
    "conform",
    "empty_frame",
    "field_for",
    "ordered_schema",
    "require_pyarrow",
    "schema_for",
    "unify",
]


def require_pyarrow() -> Any:
    """The pyarrow module, or an ImportError naming the extra that brings it."""
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("harvest needs pyarrow: pip install dicomframes[parquet]") from None
    return pyarrow


# --------------------------------------------------------------------------- schema

def _arrow_type(vr: str) -> Any:
    pa = require_pyarrow()
    types = {"int": pa.int64(), "uint": pa.uint64(), "float": pa.float64(),
             "date": pa.timestamp("us"), "time": pa.duration("us"),
             "datetime": pa.timestamp("us", tz="UTC")}
    return types.get(column_kind(vr), pa.string())


def field_for(name: str, vrs: Mapping[str, str] | None = None) -> Any:
    """The Arrow field of a column (a keyword or an 8-hex-digit tag), typed by its VR and VM.

    ``vrs`` gives the VRs a JSON answer used where they differ from the dictionary's.
    """
    pa = require_pyarrow()
    try:
        tag = tag_of(name)
    except (UnknownAttribute, KeyError, ValueError):
        return pa.field(name, pa.string())
    vr = (vrs or {}).get(name) or vr_of(tag)
    try:
        vm = dictionary_VM(tag)
    except KeyError:
        vm = None
    if vm is None or column_kind(vr) in ("sequence", "binary"):
        return pa.field(name, pa.string())
    base = _arrow_type(vr)
    return pa.field(name, base if vm == "1" else pa.list_(base))


def _order(name: str) -> tuple[int, int, str]:
    try:
        return (0, tag_of(name), name)
    except (UnknownAttribute, KeyError, ValueError):
        return (1, 0, name)


def ordered_schema(fields: Iterable[Any]) -> Any:
    """A ``pyarrow.Schema`` of ``fields`` (the last of each name), in tag order."""
    pa = require_pyarrow()
    unique = {f.name: f for f in fields}
    return pa.schema([unique[n] for n in sorted(unique, key=_order)])


def schema_for(level: str = "instances", metadata: bool = False, *,
               includefield: str | Iterable[str] | None = None,
               filters: Iterable[str] = ()) -> Any:
    """The ``pyarrow.Schema`` of a harvest at ``level`` (or of its metadata).

    QIDO: the attributes a search at that level returns by default, those of ``filters``
    (keys: matching attributes are returned) and ``includefield`` ("all" adds nothing known
    in advance). ``metadata=True``: the usual attributes of every level, without the ones
    QIDO computes; the metadata's other attributes join as they are found (see :func:`unify`).
    """
    level = level_name(level)
    if metadata:
        tags = {t for level_tags in DEFAULT_TAGS.values() for t in level_tags}
        tags |= {tag_of("StudyInstanceUID"), tag_of("SeriesInstanceUID")}
        tags -= set(COMPUTED)
    else:  # with the attributes of the levels above (asked for with includefield)
        tags = set(returned_tags(level))
        tags |= {t for up in levels_above(level) for t in DEFAULT_TAGS[up]}
    names = sorted(tags)
    extra: list[str] = []
    if isinstance(includefield, str):
        includefield = [] if includefield.lower() == "all" else includefield.split(",")
    for key in [*(includefield or []), *filters]:
        key = str(key).strip().split(".")[0]
        if key and key.lower() not in RESERVED_QIDO_KEYS:
            extra.append(key)
    fields = [field_for(_name(t)) for t in names]
    for key in extra:
        try:
            fields.append(field_for(_name(tag_of(key))))
        except (UnknownAttribute, KeyError, ValueError):
            continue
    return ordered_schema(fields)


def _name(tag: int) -> str:
    return keyword_of(tag)


def unify(schema: Any, frame: pd.DataFrame) -> Any:
    """``schema`` with the columns of ``frame`` it lacks (typed by their VR), in tag order."""
    missing = [c for c in frame.columns if c not in schema.names]
    if not missing:
        return schema
    link = link_of(frame)
    vrs = link.vrs if link is not None else {}
    return ordered_schema([*schema, *(field_for(str(c), vrs) for c in missing)])


def _nulls(kind: Any, n: int) -> Any:
    pa = require_pyarrow()
    if pa.types.is_integer(kind):
        return pd.array([None] * n, dtype="UInt64" if kind == pa.uint64() else "Int64")
    if pa.types.is_floating(kind):
        return np.full(n, np.nan)
    if pa.types.is_timestamp(kind):
        values = np.full(n, np.datetime64("NaT", "us"), dtype="datetime64[us]")
        return pd.array(values) if kind.tz is None else pd.array(values).tz_localize("UTC")
    if pa.types.is_duration(kind):
        return pd.array(np.full(n, np.timedelta64("NaT", "us"), dtype="timedelta64[us]"))
    if pa.types.is_string(kind):
        return pd.array([None] * n, dtype=STRING_DTYPE)
    out = np.empty(n, dtype=object)
    out[:] = None
    return out


def _text(value: Any) -> Any:
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict) or (isinstance(value, list) and value
                                   and isinstance(value[0], dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, list | tuple | np.ndarray):
        return "\\".join("" if is_missing(v) else str(v) for v in value)
    return str(value)


def _first_item(value: Any) -> Any:
    """The first value of a list cell (a server sent several values for a VM-1 attribute)."""
    if isinstance(value, list | tuple | np.ndarray):
        return value[0] if len(value) else None
    return value


def _column(values: pd.Series, kind: Any) -> Any:
    """``values`` as the pandas column of Arrow type ``kind``."""
    pa = require_pyarrow()
    if values.dtype == object and not pa.types.is_list(kind) and not pa.types.is_string(kind):
        values = values.map(_first_item)
    if pa.types.is_integer(kind):
        return values.astype("UInt64" if kind == pa.uint64() else "Int64")
    if pa.types.is_floating(kind):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            return pd.to_datetime(values, errors="coerce").astype("datetime64[us]")
        return pd.to_datetime(values, errors="coerce", utc=True).astype("datetime64[us, UTC]")
    if pa.types.is_duration(kind):
        return pd.to_timedelta(values, errors="coerce").astype("timedelta64[us]")
    if pa.types.is_string(kind):
        if values.dtype != object:
            return values.astype(STRING_DTYPE)
        return pd.array([_text(v) for v in values], dtype=STRING_DTYPE)
    if pa.types.is_list(kind):
        cells = np.empty(len(values), dtype=object)
        cells[:] = [list(v) if isinstance(v, list | tuple | np.ndarray)
                    else None if is_missing(v) else [v] for v in values]
        return cells
    return values


def conform(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """``frame`` with exactly the columns of ``schema``, in its order and types (missing
    columns as typed nulls, others dropped); ``attrs`` kept."""
    n = len(frame)
    columns: dict[str, Any] = {}
    for field in schema:
        if field.name in frame.columns:
            columns[field.name] = _column(frame[field.name], field.type)
        else:
            columns[field.name] = _nulls(field.type, n)
    out = pd.DataFrame(columns, index=pd.RangeIndex(n))
    out.attrs.update(frame.attrs)
    return out


def empty_frame(level: str = "instances", metadata: bool = False, *,
                schema: Any = None, **options: Any) -> pd.DataFrame:
    """The typed empty DataFrame of a harvest at ``level`` (a Dask ``meta``): the columns of
    ``schema`` (default :func:`schema_for` with ``options``)."""
    return conform(pd.DataFrame(), schema or schema_for(level, metadata, **options))
