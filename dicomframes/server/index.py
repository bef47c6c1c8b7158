"""The SQLite index of an archive: its schema, and the rows of one instance.

Per instance the index keeps the DICOM JSON metadata (bulk data as relative BulkDataURIs), the
attributes that QIDO searches (one column each) and returns (JSON fragments per level), and
where each frame lies in the file, so that metadata, search and frames never re-read a whole
file. Which attributes these are is the standard layer's business
(:mod:`dicomframes.standard.attributes`); this module only lays them out in tables, and
reads a file into its rows (:func:`prepare_file`, no lock and no database: a batch is parsed
before the one transaction that stores it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..standard.attributes import (
    COMMON_TAGS,
    DEFAULT_TAGS,
    LEVELS,
    OPTIONAL_DEFAULTS,
    SEARCHABLE,
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
    UID_KEYWORDS,
    Attribute,
)
from ..standard.dicomjson import dataset_to_json, element_to_json, first_value
from ..standard.paths import ResourcePath
from ..standard.personname import pn_words
from ..standard.pixellayout import (
    PixelDataError,
    PixelLayout,
    declared_size_problem,
    locate_pixel_data,
    number_of_frames,
)
from ..standard.stow import INVALID, PROCESSING_FAILURE, WRONG_STUDY
from ..standard.tags import BINARY_VRS, PIXEL_TAGS, tag_hex, vr_of
from ..standard.temporal import normalize_time
from ..standard.uids import validate_uid
from .budget import DEFAULT_MAX_INFLATED
from .inflate import InflateError, inflate_if_deflated

BULK_THRESHOLD = 1024
BULK_PREFIX = '"BulkDataURI":"/'  # how a relative BulkDataURI starts in the stored JSON text
SCHEMA_VERSION = 2


def json_text(obj: Any) -> str:
    """Compact JSON text, as the index stores it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------------------------


def _columns(level: str) -> list[str]:
    cols = []
    for attr in SEARCHABLE.values():
        if attr.level != level:
            continue
        sql_type = "INTEGER" if attr.kind == "int" else "TEXT"
        if attr.keyword in UID_KEYWORDS.values():
            cols.append(f"{attr.keyword} TEXT NOT NULL UNIQUE")
        else:
            cols.append(f"{attr.keyword} {sql_type}")
        if attr.kind == "pn":
            cols.append(f"{attr.keyword}_fold TEXT")
            cols.append(f"{attr.keyword}_words TEXT")
    return cols


def schema() -> str:
    """The SQL script that creates the index tables (idempotent)."""
    study = ", ".join(["id INTEGER PRIMARY KEY", *_columns("study"), "modalities TEXT",
                       "num_series INTEGER NOT NULL DEFAULT 0",
                       "num_instances INTEGER NOT NULL DEFAULT 0",
                       "qido TEXT NOT NULL", "common TEXT NOT NULL", "attrs TEXT NOT NULL"])
    series = ", ".join(["id INTEGER PRIMARY KEY", "StudyInstanceUID TEXT NOT NULL",
                        *_columns("series"), "num_instances INTEGER NOT NULL DEFAULT 0",
                        "qido TEXT NOT NULL", "common TEXT NOT NULL", "attrs TEXT NOT NULL"])
    instance = ", ".join(["id INTEGER PRIMARY KEY", "StudyInstanceUID TEXT NOT NULL",
                          "SeriesInstanceUID TEXT NOT NULL", *_columns("instance"),
                          "transfer_syntax TEXT NOT NULL", "path TEXT NOT NULL UNIQUE",
                          "size INTEGER NOT NULL", "stored_at REAL NOT NULL",
                          "qido TEXT NOT NULL", "common TEXT NOT NULL"])
    # large values apart, so that searches scan small rows
    data = "id INTEGER PRIMARY KEY, metadata TEXT NOT NULL, pixels TEXT NOT NULL"
    indexes = [
        "CREATE INDEX IF NOT EXISTS series_study ON series(StudyInstanceUID)",
        "CREATE INDEX IF NOT EXISTS instances_series ON instances(SeriesInstanceUID)",
        "CREATE INDEX IF NOT EXISTS instances_study ON instances(StudyInstanceUID)",
        "CREATE INDEX IF NOT EXISTS studies_patient_id ON studies(PatientID)",
        "CREATE INDEX IF NOT EXISTS studies_patient_name ON studies(PatientName_fold)",
        "CREATE INDEX IF NOT EXISTS studies_date ON studies(StudyDate)",
        "CREATE INDEX IF NOT EXISTS studies_accession ON studies(AccessionNumber)",
        "CREATE INDEX IF NOT EXISTS series_modality ON series(Modality)",
        "CREATE INDEX IF NOT EXISTS instances_class ON instances(SOPClassUID)",
        # ids only: QIDO finds the first row of a deep page by walking these (see query.py)
        "CREATE INDEX IF NOT EXISTS studies_id ON studies(id)",
        "CREATE INDEX IF NOT EXISTS series_id ON series(id)",
        "CREATE INDEX IF NOT EXISTS instances_id ON instances(id)",
    ]
    return ";\n".join([
        f"CREATE TABLE IF NOT EXISTS studies ({study})",
        f"CREATE TABLE IF NOT EXISTS series ({series})",
        f"CREATE TABLE IF NOT EXISTS instances ({instance})",
        f"CREATE TABLE IF NOT EXISTS instance_data ({data})",
        *indexes,
    ]) + ";"


DROP_TABLES = ("DROP TABLE IF EXISTS instance_data; DROP TABLE IF EXISTS instances; "
               "DROP TABLE IF EXISTS series; DROP TABLE IF EXISTS studies;")


# --------------------------------------------------------------------------------------------
# the rows of one instance
# --------------------------------------------------------------------------------------------


def column_value(obj: dict[str, Any], attr: Attribute) -> Any:
    """The value stored in the index column of ``attr``, read from the instance's DICOM JSON
    (None when absent, empty or unusable). Text as sent, not typed: the index compares DA
    text and normalised TM text."""
    element = obj.get(attr.key)
    values = element.get("Value") if element else None
    if not values or values[0] is None:
        return None
    first = values[0]
    try:
        if attr.kind == "int":
            return int(first)
        if attr.kind == "pn":  # the alphabetic group is what queries match
            text = str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)
        else:
            text = str(first)
        text = text.strip()
        if attr.kind == "tm":
            return normalize_time(text)
        return text or None
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=512)
def _empty_element(tag: int) -> str:
    """DICOM JSON of an element without a value (made by dicomjson)."""
    ds = pydicom.Dataset()
    ds.add_new(tag, vr_of(tag), None)
    return json_text(dataset_to_json(ds)[tag_hex(tag)])


# the keys (8 hex digits) of the tags each subset keeps
_DEFAULT_KEYS = {level: frozenset(tag_hex(t) for t in DEFAULT_TAGS[level]) for level in LEVELS}
_COMMON_KEYS = frozenset(tag_hex(t) for t in COMMON_TAGS)
_STUDY_KEYS = frozenset(tag_hex(t) for t in STUDY_LEVEL_TAGS)
_SERIES_KEYS = frozenset(tag_hex(t) for t in SERIES_LEVEL_TAGS)


def _subset(obj: dict[str, Any], keys: frozenset[str],
            defaults: tuple[int, ...] = ()) -> dict[str, Any]:
    """The elements of a DICOM JSON object whose keys are in ``keys``, sorted by tag, with an
    empty element for each required default that is missing."""
    out = {key: element for key, element in obj.items() if key in keys}
    for tag in defaults:
        key = tag_hex(tag)
        if key not in out and tag not in OPTIONAL_DEFAULTS:
            out[key] = json.loads(_empty_element(tag))
    return dict(sorted(out.items()))


def _level_subset(obj: dict[str, Any], level: str) -> dict[str, Any]:
    if level == "study":  # every patient attribute (group 0010) besides the study's own
        return _subset(obj, _STUDY_KEYS | {k for k in obj if k.startswith("0010")})
    return _subset(obj, _SERIES_KEYS)


def metadata_json(ds: pydicom.Dataset, path: ResourcePath) -> dict[str, Any]:
    """The DICOM JSON of an instance with relative BulkDataURIs (``/studies/.../bulkdata/``
    followed by the tag, or the path of tags and item numbers of a nested value)."""
    base = "/" + path.child("bulkdata") + "/"
    nested: dict[int, str] = {}

    def walk(dataset: pydicom.Dataset, prefix: str) -> None:
        # items() gives the elements as read (raw), without decoding their values
        for tag, raw in list(dataset.items()):
            vr = raw.VR
            if vr == "SQ" or (vr is None and vr_of(int(tag)) == "SQ"):
                for index, item in enumerate(dataset[tag].value or []):
                    walk(item, f"{prefix}{tag_hex(int(tag))}/{index}/")
            elif prefix and (vr is None or vr in BINARY_VRS):
                nested[id(dataset[tag])] = f"{prefix}{tag_hex(int(tag))}"

    walk(ds, "")

    def bulk_uri(tag: int, elem: DataElement) -> str:
        return base + nested.get(id(elem), tag_hex(tag))

    return dataset_to_json(ds, bulk_uri=bulk_uri, bulk_threshold=BULK_THRESHOLD)


@dataclass(frozen=True)
class PreparedInstance:
    """Every index value of one instance, computed before the write lock is taken."""

    study: str
    series: str
    sop: str
    sop_class: str
    transfer_syntax: str
    size: int
    layout: PixelLayout
    metadata: str  # DICOM JSON text, relative BulkDataURIs
    qido: dict[str, str]  # level -> JSON fragment of the attributes a search returns
    common: str  # JSON fragment of SpecificCharacterSet and TimezoneOffsetFromUTC
    attrs: dict[str, str]  # "study" / "series" -> JSON of every attribute of that level
    columns: dict[str, dict[str, Any]]  # level -> index column -> value


def _with_pixel_placeholder(obj: dict[str, Any], path: ResourcePath,
                            layout: PixelLayout) -> dict[str, Any]:
    """``obj`` (read without its pixel data) with the pixel data element as a BulkDataURI."""
    key = tag_hex(layout.tag)
    if layout.kind == "none" or key in obj:
        return obj
    if layout.tag != 0x7FE00010:
        vr = vr_of(layout.tag)
    else:
        bits = first_value(obj, 0x00280100)
        small = isinstance(bits, int | float) and bits <= 8
        vr = "OB" if UID(layout.transfer_syntax).is_compressed or small else "OW"
    element = {"vr": vr, "BulkDataURI": "/" + path.child("bulkdata") + "/" + key}
    return dict(sorted({**obj, key: element}.items()))


def prepare_instance(obj: dict[str, Any], path: ResourcePath, sop_class: str,
                     layout: PixelLayout, size: int) -> PreparedInstance:
    """The index values of an instance at ``path`` from ``obj``, the DICOM JSON of its header
    (:func:`metadata_json` of the data set read without its pixel data)."""
    obj = _with_pixel_placeholder(obj, path, layout)
    qido = {level: json_text(_subset(obj, _DEFAULT_KEYS[level], DEFAULT_TAGS[level]))[1:-1]
            for level in LEVELS}
    common = json_text(_subset(obj, _COMMON_KEYS))[1:-1]
    attrs = {level: json_text(_level_subset(obj, level)) for level in ("study", "series")}
    columns: dict[str, dict[str, Any]] = {level: {} for level in LEVELS}
    for attr in SEARCHABLE.values():
        value = column_value(obj, attr)
        columns[attr.level][attr.keyword] = value
        if attr.kind == "pn":
            columns[attr.level][f"{attr.keyword}_fold"] = value.casefold() if value else None
            columns[attr.level][f"{attr.keyword}_words"] = pn_words(value)
    assert path.study and path.series and path.instance
    return PreparedInstance(path.study, path.series, path.instance, sop_class,
                            layout.transfer_syntax, size, layout, json_text(obj), qido, common,
                            attrs, columns)


def _insert_parents(db: sqlite3.Connection, p: PreparedInstance) -> None:
    """The study's and series' rows when new; a new series is counted in its study."""
    study_cols = p.columns["study"]
    names = list(study_cols)
    db.execute(
        f"INSERT OR IGNORE INTO studies ({', '.join(names)}, attrs, qido, common) "
        f"VALUES ({', '.join('?' * (len(names) + 3))})",
        [*study_cols.values(), p.attrs["study"], p.qido["study"], p.common])
    series_cols = p.columns["series"]
    names = list(series_cols)
    cursor = db.execute(
        f"INSERT OR IGNORE INTO series (StudyInstanceUID, {', '.join(names)}, attrs, qido, "
        f"common) VALUES ({', '.join('?' * (len(names) + 4))})",
        [p.study, *series_cols.values(), p.attrs["series"], p.qido["series"], p.common])
    if cursor.rowcount:
        db.execute("UPDATE studies SET num_series = num_series + 1 "
                   "WHERE StudyInstanceUID = ?", (p.study,))
        update_modalities(db, p.study)


def insert_rows(db: sqlite3.Connection, p: PreparedInstance, relative: str, *,
                parents: bool = True) -> None:
    """Add the instance's rows (and its study's and series' when new, counting the series);
    the caller adds the instances to the counters (:func:`add_instance_counts`).
    ``parents=False``: the series is known to be in the index already (not even asked)."""
    if parents:
        _insert_parents(db, p)
    inst_cols = p.columns["instance"]
    names = list(inst_cols)
    cursor = db.execute(
        f"INSERT INTO instances (StudyInstanceUID, SeriesInstanceUID, {', '.join(names)}, "
        "transfer_syntax, path, size, stored_at, qido, common) "
        f"VALUES ({', '.join('?' * (len(names) + 8))})",
        [p.study, p.series, *inst_cols.values(), p.transfer_syntax, relative, p.size,
         time.time(), p.qido["instance"], p.common])
    db.execute("INSERT INTO instance_data (id, metadata, pixels) VALUES (?, ?, ?)",
               (cursor.lastrowid, p.metadata, json_text(p.layout.to_json())))


def add_instance_counts(db: sqlite3.Connection, series: Mapping[str, int],
                        studies: Mapping[str, int]) -> None:
    """Add a batch's new instances (how many per series and per study) to the counters."""
    db.executemany("UPDATE series SET num_instances = num_instances + ? "
                   "WHERE SeriesInstanceUID = ?", [(n, uid) for uid, n in series.items()])
    db.executemany("UPDATE studies SET num_instances = num_instances + ? "
                   "WHERE StudyInstanceUID = ?", [(n, uid) for uid, n in studies.items()])


def update_modalities(db: sqlite3.Connection, study: str) -> None:
    """Recompute a study's ModalitiesInStudy from its series."""
    rows = db.execute("SELECT DISTINCT Modality FROM series WHERE StudyInstanceUID = ? "
                      "AND Modality IS NOT NULL ORDER BY Modality", (study,)).fetchall()
    db.execute("UPDATE studies SET modalities = ? WHERE StudyInstanceUID = ?",
               ("\\".join(r[0] for r in rows) or None, study))


def recount_series(db: sqlite3.Connection, series: str) -> None:
    """Recount a series' instances after a delete; drop the series when none are left."""
    n = db.execute("SELECT COUNT(*) FROM instances WHERE SeriesInstanceUID = ?",
                   (series,)).fetchone()[0]
    if n:
        db.execute("UPDATE series SET num_instances = ? WHERE SeriesInstanceUID = ?",
                   (n, series))
    else:
        db.execute("DELETE FROM series WHERE SeriesInstanceUID = ?", (series,))


def recount_study(db: sqlite3.Connection, study: str) -> None:
    """Recount a study's series and instances after a delete; drop it when empty."""
    n = db.execute("SELECT COUNT(*) FROM instances WHERE StudyInstanceUID = ?",
                   (study,)).fetchone()[0]
    if not n:
        db.execute("DELETE FROM series WHERE StudyInstanceUID = ?", (study,))
        db.execute("DELETE FROM studies WHERE StudyInstanceUID = ?", (study,))
        return
    s = db.execute("SELECT COUNT(*) FROM series WHERE StudyInstanceUID = ?",
                   (study,)).fetchone()[0]
    db.execute("UPDATE studies SET num_instances = ?, num_series = ? "
               "WHERE StudyInstanceUID = ?", (n, s, study))
    update_modalities(db, study)


# --------------------------------------------------------------------------------------------
# reading files into prepared rows (in worker processes for a batch)
# --------------------------------------------------------------------------------------------


class StoreFailure(Exception):
    """An instance was not stored; ``reason`` is the PS3.4 failure reason code."""

    def __init__(self, reason: int, message: str, sop_class: str | None = None,
                 sop_instance: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sop_class = sop_class
        self.sop_instance = sop_instance

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries whole
        return (type(self), (self.reason, str(self), self.sop_class, self.sop_instance))


MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (a DICOMDIR)


def _opaque_layout(path: Path, ts: str) -> PixelLayout:
    full = pydicom.dcmread(path)
    for tag in PIXEL_TAGS:
        if tag in full:
            return PixelLayout("opaque", ts, number_of_frames(full), tag=tag)
    return PixelLayout("none", ts)


def _uid(ds: pydicom.Dataset, tag: int) -> str:
    """A UID of the data set as text, read without pydicom's conversion ("" when absent;
    several values joined, so that validation refuses them)."""
    element = element_to_json(ds, tag)
    values = element.get("Value") if element else None
    return "\\".join(str(v) for v in values if v is not None) if values else ""


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    if _uid(ds.file_meta, 0x00020002) == MEDIA_DIRECTORY:
        raise StoreFailure(INVALID, "a DICOMDIR (an index of a DICOM medium), not an instance")
    ts = _uid(ds.file_meta, 0x00020010)
    if not ts:
        raise StoreFailure(INVALID, "the file meta information has no TransferSyntaxUID")
    return ts


def _unreadable(exc: Exception, sop_class: str = "", sop: str = "") -> StoreFailure:
    # a readable header (e.g. a file cut short in its pixel data) names the instance, so the
    # client can tell which of its files failed
    return StoreFailure(PROCESSING_FAILURE, f"not a readable DICOM file: {exc}",
                        sop_class or None, sop or None)


_READ_ERRORS = (InvalidDicomError, PixelDataError, EOFError, OSError, ValueError, KeyError,
                TypeError, AttributeError, NotImplementedError)


def prepare_file(path: Path, study: str | None = None, *,
                 max_inflated: int = DEFAULT_MAX_INFLATED) -> PreparedInstance:
    """Parse the DICOM file ``path`` and compute every index value (no lock, no database).

    The header is read once (without its pixel data) and turned into DICOM JSON once; UIDs,
    pixel description and index values all come from that JSON, so pydicom never decodes an
    element twice. ``study``: the StudyInstanceUID the instance must belong to. Raises
    :class:`StoreFailure` (272 unreadable, 43264 invalid, a DICOMDIR or sizes that the pixel
    data does not hold, 43265 of another study). A deflated file is first rewritten inflated
    (:mod:`.inflate`; past ``max_inflated`` bytes it is refused as invalid)."""
    try:
        inflate_if_deflated(path, max_inflated)
    except InflateError as exc:
        raise StoreFailure(INVALID, str(exc)) from None
    except OSError as exc:
        raise _unreadable(exc) from exc
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
                ts = _transfer_syntax(ds)
                sop_class, sop = _uid(ds, 0x00080016), _uid(ds, 0x00080018)
            except StoreFailure:
                raise
            except _READ_ERRORS as exc:
                raise _unreadable(exc) from exc
            study_uid, series_uid = _uid(ds, 0x0020000D), _uid(ds, 0x0020000E)
            for value, what in ((sop, "SOPInstanceUID"), (sop_class, "SOPClassUID"),
                                (study_uid, "StudyInstanceUID"),
                                (series_uid, "SeriesInstanceUID")):
                try:
                    validate_uid(value, what)
                except ValueError as exc:
                    raise StoreFailure(INVALID, str(exc), sop_class or None,
                                       sop or None) from exc
            if study is not None and study_uid != study:
                raise StoreFailure(WRONG_STUDY, f"instance belongs to study {study_uid}, not to "
                                   f"{study}", sop_class, sop)
            resource = ResourcePath(study_uid, series_uid, sop)
            try:
                obj = metadata_json(ds, resource)
            except Exception as exc:  # pydicom raises many kinds for malformed values
                raise StoreFailure(PROCESSING_FAILURE, f"cannot read the attributes: {exc}",
                                   sop_class, sop) from exc
            try:
                uid = UID(ts)
                if uid.is_deflated or (uid.is_transfer_syntax and not uid.is_little_endian):
                    layout = _opaque_layout(path, ts)
                else:
                    layout = locate_pixel_data(fp, ds, size, obj)
            except _READ_ERRORS as exc:
                raise _unreadable(exc, sop_class, sop) from exc
            problem = declared_size_problem(layout, obj, size)
            if problem is not None:
                raise StoreFailure(INVALID, problem, sop_class, sop)
    except StoreFailure:
        raise
    except OSError as exc:
        raise _unreadable(exc) from exc
    try:
        return prepare_instance(obj, resource, sop_class, layout, size)
    except Exception as exc:
        raise StoreFailure(PROCESSING_FAILURE, f"cannot read the attributes: {exc}",
                           sop_class, sop) from exc


def prepare_outcome(path: Path, study: str | None = None, *,
                    max_inflated: int = DEFAULT_MAX_INFLATED) -> PreparedInstance | StoreFailure:
    """:func:`prepare_file`, with the failure as the outcome: a file that raises anything
    else (e.g. RecursionError) fails alone, as unreadable."""
    try:
        return prepare_file(path, study, max_inflated=max_inflated)
    except StoreFailure as failure:
        return failure
    except Exception as exc:
        return StoreFailure(PROCESSING_FAILURE, f"not a readable DICOM file: "
                            f"{type(exc).__name__}: {exc}")


def prepare_files(paths: Sequence[Path], study: str | None = None, *,
                  max_inflated: int = DEFAULT_MAX_INFLATED
                  ) -> list[PreparedInstance | StoreFailure]:
    """:func:`prepare_outcome` of each path, in order, in the calling thread
    (:class:`.parsers.ParserPool` spreads a batch over worker processes)."""
    return [prepare_outcome(path, study, max_inflated=max_inflated) for path in paths]
