"""The archive on disk: DICOM files under a UID-derived layout, indexed in SQLite.

Layout of an archive folder::

    files/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    tmp/        uploads and files being written (wiped at start-up)
    rejected/   files found in files/ without an index row that cannot be stored (kept aside)
    index.sqlite3 (+ -wal, -shm)

Every UID is checked with :func:`dicomframes.uids.validate_uid` before it becomes part of a
path. A stored file is written to ``tmp/``, flushed to disk, then renamed into place inside the
index transaction that adds its row; a crash leaves either a temporary file (removed at start)
or a complete file (whose row is restored at start). The index keeps, per instance, the DICOM
JSON metadata (bulk data as relative BulkDataURIs), the attributes that QIDO searches and
returns, and where each frame lies in the file, so that metadata, search and frames never
re-read a whole file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..standard.dicomjson import dataset_to_json
from ..standard.tags import tag_hex, vr_of
from ..standard.uids import validate_uid
from .pixeldata import PIXEL_TAGS, PixelDataError, PixelLayout, locate_pixel_data

try:  # advisory lock so that only the first server on a folder cleans its tmp/
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

BULK_THRESHOLD = 1024
BULK_PREFIX = '"BulkDataURI":"/'  # how a relative BulkDataURI starts in the stored JSON text

# PS3.4 C.4.1.1.3.1 failure reasons used by STOW-RS (PS3.18 Table 10.5.3-1 and Azure)
PROCESSING_FAILURE = 272  # 0x0110
INVALID = 43264  # 0xA900 (validation failed / wrong study)
ALREADY_EXISTS = 45070  # 0xB00E

LEVELS = ("study", "series", "instance")


@dataclass(frozen=True)
class Attribute:
    """A searchable attribute: its keyword (also its column name), level and kind of matching."""

    keyword: str
    level: str
    kind: str  # uid | str | cs | pn | da | tm | int

    @property
    def tag(self) -> int:
        """The attribute's tag."""
        from ..standard.tags import tag_of

        return tag_of(self.keyword)


_SEARCHABLE: list[Attribute] = [
    Attribute("StudyInstanceUID", "study", "uid"),
    Attribute("PatientName", "study", "pn"),
    Attribute("PatientID", "study", "str"),
    Attribute("PatientBirthDate", "study", "da"),
    Attribute("PatientSex", "study", "cs"),
    Attribute("StudyDate", "study", "da"),
    Attribute("StudyTime", "study", "tm"),
    Attribute("AccessionNumber", "study", "str"),
    Attribute("ReferringPhysicianName", "study", "pn"),
    Attribute("StudyID", "study", "str"),
    Attribute("StudyDescription", "study", "str"),
    Attribute("IssuerOfPatientID", "study", "str"),
    Attribute("SeriesInstanceUID", "series", "uid"),
    Attribute("Modality", "series", "cs"),
    Attribute("SeriesNumber", "series", "int"),
    Attribute("SeriesDescription", "series", "str"),
    Attribute("SeriesDate", "series", "da"),
    Attribute("SeriesTime", "series", "tm"),
    Attribute("PerformedProcedureStepStartDate", "series", "da"),
    Attribute("PerformedProcedureStepStartTime", "series", "tm"),
    Attribute("BodyPartExamined", "series", "cs"),
    Attribute("Manufacturer", "series", "str"),
    Attribute("SOPInstanceUID", "instance", "uid"),
    Attribute("SOPClassUID", "instance", "uid"),
    Attribute("InstanceNumber", "instance", "int"),
    Attribute("ContentDate", "instance", "da"),
    Attribute("ContentTime", "instance", "tm"),
    Attribute("NumberOfFrames", "instance", "int"),
]
SEARCHABLE: dict[str, Attribute] = {a.keyword: a for a in _SEARCHABLE}

# PS3.18 Table 6.7.1-2, -2a, -2b: attributes returned by default (computed ones are added by
# the query module). Present in the answer even when the instance lacks them (empty value),
# except the ones in OPTIONAL_DEFAULTS.
# SpecificCharacterSet and TimezoneOffsetFromUTC belong to every level: they are kept apart
# (COMMON_TAGS) and returned once, from the level searched.
COMMON_TAGS = (0x00080005, 0x00080201)
DEFAULT_TAGS: dict[str, tuple[int, ...]] = {
    "study": (0x00080020, 0x00080030, 0x00080050, 0x00080090, 0x00100010, 0x00100020,
              0x00100030, 0x00100040, 0x0020000D, 0x00200010),
    "series": (0x00080060, 0x0008103E, 0x0020000E, 0x00200011, 0x00400244, 0x00400245,
               0x00400275),
    "instance": (0x00080016, 0x00080018, 0x00200013, 0x00280010, 0x00280011, 0x00280100,
                 0x00280008),
}
OPTIONAL_DEFAULTS = {0x00080005, 0x00080201, 0x00400244, 0x00400245, 0x00400275, 0x00280008,
                     0x00280010, 0x00280011, 0x00280100, 0x0008103E}

# Attributes that belong to the study (with every Patient-group 0010 attribute) or the series:
# what ``includefield=all`` returns at those levels.
STUDY_LEVEL_TAGS = frozenset({
    0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090, 0x00080096,
    0x00080201, 0x00081030, 0x00081032, 0x00081048, 0x00081049, 0x00081060, 0x00081062,
    0x00081080, 0x00081110, 0x0020000D, 0x00200010, 0x00321032, 0x00321033, 0x00321060,
    0x00321064, 0x00380010, 0x00380300, 0x00400275,
})
SERIES_LEVEL_TAGS = frozenset({
    0x00080005, 0x00080021, 0x00080031, 0x00080060, 0x00080064, 0x00080070, 0x00080080,
    0x00080081, 0x00081010, 0x0008103E, 0x00081040, 0x00081050, 0x00081070, 0x00081090,
    0x00081111, 0x00180015, 0x00181000, 0x00181020, 0x00181030, 0x00185100, 0x0020000E,
    0x00200011, 0x00200052, 0x00200060, 0x00201040, 0x00400244, 0x00400245, 0x00400253,
    0x00400254, 0x00400260, 0x00400275, 0x00080201,
})


def level_of_tag(tag: int) -> str:
    """The level an attribute is stored at for ``includefield`` (study, series or instance)."""
    if tag >> 16 == 0x0010 or tag in STUDY_LEVEL_TAGS:
        return "study"
    if tag in SERIES_LEVEL_TAGS:
        return "series"
    return "instance"


class StoreFailure(Exception):
    """An instance was not stored; ``reason`` is the PS3.4 failure reason code."""

    def __init__(self, reason: int, message: str, sop_class: str | None = None,
                 sop_instance: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sop_class = sop_class
        self.sop_instance = sop_instance


@dataclass(frozen=True)
class Stored:
    """An instance that was stored."""

    study: str
    series: str
    sop_instance: str
    sop_class: str


@dataclass(frozen=True)
class InstanceRecord:
    """What the index knows about one stored instance."""

    study: str
    series: str
    sop_instance: str
    transfer_syntax: str
    path: Path
    size: int
    pixels: PixelLayout
    metadata: str  # DICOM JSON text; BulkDataURIs are relative ("/studies/...")


# --------------------------------------------------------------------------------------------
# values for index columns
# --------------------------------------------------------------------------------------------


def _first(value: Any) -> Any:
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return value[0] if len(value) else None
    return value


def normalize_time(text: str, upper: bool = False) -> str:
    """A DICOM TM value as ``HHMMSS.ffffff`` (missing digits as 0, or 9s/59 when ``upper``)."""
    text = text.strip().replace(":", "")
    main, _, frac = text.partition(".")
    if not main.isdigit() or len(main) % 2 or len(main) > 6 or (frac and not frac.isdigit()):
        raise ValueError(f"not a DICOM time: {text!r}")
    filler = "235959" if upper else "000000"
    main = main + filler[len(main):]
    frac = (frac + ("9" if upper and len(main) else "0") * 6)[:6] if frac or upper else "000000"
    return f"{main}.{frac}"


def pn_words(name: str | None) -> str | None:
    """Lower-case words of a person name, space separated with a leading space (fuzzy search)."""
    if not name:
        return None
    words = [w for w in name.replace("^", " ").replace("=", " ").casefold().split() if w]
    return " " + " ".join(words) if words else None


def column_value(obj: dict[str, Any], attr: Attribute) -> Any:
    """The value stored in the index column of ``attr``, read from the instance's DICOM JSON
    (None when absent, empty or unusable)."""
    element = obj.get(tag_hex(attr.tag))
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


# --------------------------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------------------------

_TABLES = {"study": "studies", "series": "series", "instance": "instances"}


def _columns(level: str) -> list[str]:
    cols = []
    for attr in _SEARCHABLE:
        if attr.level != level:
            continue
        sql_type = "INTEGER" if attr.kind == "int" else "TEXT"
        if attr.kind == "uid" and attr.keyword in ("StudyInstanceUID", "SeriesInstanceUID",
                                                   "SOPInstanceUID"):
            cols.append(f"{attr.keyword} TEXT NOT NULL UNIQUE")
        else:
            cols.append(f"{attr.keyword} {sql_type}")
        if attr.kind == "pn":
            cols.append(f"{attr.keyword}_fold TEXT")
            cols.append(f"{attr.keyword}_words TEXT")
    return cols


def _schema() -> str:
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
    ]
    return ";\n".join([
        f"CREATE TABLE IF NOT EXISTS studies ({study})",
        f"CREATE TABLE IF NOT EXISTS series ({series})",
        f"CREATE TABLE IF NOT EXISTS instances ({instance})",
        f"CREATE TABLE IF NOT EXISTS instance_data ({data})",
        *indexes,
    ]) + ";"


SCHEMA_VERSION = 2


def _json_text(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@lru_cache(maxsize=512)
def _empty_element(tag: int) -> str:
    """DICOM JSON of an element without a value (made by dicomjson)."""
    ds = pydicom.Dataset()
    ds.add_new(tag, vr_of(tag), None)
    return _json_text(dataset_to_json(ds)[tag_hex(tag)])


def _subset(obj: dict[str, Any], tags: Any, defaults: tuple[int, ...] = ()) -> dict[str, Any]:
    """The elements of a DICOM JSON object whose tags are in ``tags``, sorted by tag, with an
    empty element for each required default that is missing."""
    out = {key: element for key, element in obj.items() if int(key, 16) in tags}
    for tag in defaults:
        key = tag_hex(tag)
        if key not in out and tag not in OPTIONAL_DEFAULTS:
            out[key] = json.loads(_empty_element(tag))
    return dict(sorted(out.items()))


def _level_subset(obj: dict[str, Any], level: str) -> dict[str, Any]:
    if level == "study":
        tags = {int(k, 16) for k in obj if k.startswith("0010")} | STUDY_LEVEL_TAGS
    else:
        tags = SERIES_LEVEL_TAGS
    return _subset(obj, tags)


# --------------------------------------------------------------------------------------------
# the archive
# --------------------------------------------------------------------------------------------


class _Handle:
    """One thread's SQLite connection; closed when the thread (and its local data) ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __del__(self) -> None:
        self.close()


class Archive:
    """Files and index of one archive folder; safe to use from many threads and processes."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.files = self.root / "files"
        self.tmp = self.root / "tmp"
        self.durable = durable
        self.index_path = self.root / "index.sqlite3"
        for folder in (self.root, self.files, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._lock_file = open(self.root / ".lock", "a+b")  # noqa: SIM115 - held while open
        exclusive = self._take_lock()
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            if not exclusive:
                raise RuntimeError(f"the index of {self.root} has an older layout and another "
                                   "server uses it; stop that server first")
            # the files are the archive: drop the old index, reconcile() rebuilds it from them
            log.warning("rebuilding the index of %s (layout %d -> %d)", self.root, version,
                        SCHEMA_VERSION)
            conn.executescript("DROP TABLE IF EXISTS instance_data; DROP TABLE IF EXISTS "
                               "instances; DROP TABLE IF EXISTS series; "
                               "DROP TABLE IF EXISTS studies;")
        conn.executescript(_schema())
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if exclusive:
            self.reconcile()
        if fcntl is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_SH)

    # -- plumbing ---------------------------------------------------------------------------

    def _take_lock(self) -> bool:
        """True when no other server uses this folder (then start-up may clean it)."""
        if fcntl is None:
            return True
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            fcntl.flock(self._lock_file, fcntl.LOCK_SH)
            return False

    def _conn(self) -> sqlite3.Connection:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            if self._closed:
                raise RuntimeError("the archive is closed")
            conn = sqlite3.connect(self.index_path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            handle = _Handle(conn)
            self._local.handle = handle
            with self._lock:
                self._handles.add(handle)
        return handle.conn

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's SQLite connection (autocommit; use :meth:`transaction` to write)."""
        return self._conn()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: writers are serialised, readers are not)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection and release the folder lock."""
        with self._lock:
            self._closed = True
            for handle in list(self._handles):
                handle.close()
        with contextlib.suppress(OSError):
            self._lock_file.close()

    def temp_path(self, suffix: str = ".part") -> Path:
        """A new, unique path in the archive's tmp/ folder (same file system as files/)."""
        return self.tmp / f"{uuid.uuid4().hex}{suffix}"

    def path_of(self, study: str, series: str, sop: str) -> Path:
        """Where an instance's file lives; every UID is validated first."""
        validate_uid(study, "StudyInstanceUID")
        validate_uid(series, "SeriesInstanceUID")
        validate_uid(sop, "SOPInstanceUID")
        return self.files / study / series / f"{sop}.dcm"

    def _fsync_dir(self, folder: Path) -> None:
        if not self.durable or os.name != "posix":
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- storing ----------------------------------------------------------------------------

    def store_file(self, temp: Path, study: str | None = None) -> Stored:
        """Index the complete DICOM file ``temp`` (in tmp/) and move it into the archive.

        ``study``: the StudyInstanceUID the request is restricted to. Raises
        :class:`StoreFailure` (reason 272 unreadable, 43264 invalid or wrong study, 45070
        already stored); the temporary file is then removed.
        """
        [outcome] = self.store_files([temp], study)
        if isinstance(outcome, StoreFailure):
            raise outcome
        return outcome

    def store_files(self, temps: list[Path], study: str | None = None
                    ) -> list[Stored | StoreFailure]:
        """Store several complete files of tmp/ (one STOW request) in one index transaction.

        Files are flushed and parsed in parallel, then inserted and renamed into place under one
        write lock (one savepoint each, so that a failure stays with its file), each folder is
        flushed once, and the transaction commits. Returns one outcome per file, in order;
        temporary files are always removed.
        """
        from concurrent.futures import ThreadPoolExecutor

        def prepare(temp: Path) -> dict[str, Any] | StoreFailure:
            try:
                if self.durable:
                    with open(temp, "rb+") as fp:
                        os.fsync(fp.fileno())
                return self._prepare(temp, study)
            except StoreFailure as failure:
                return failure

        try:
            if len(temps) > 1:
                with ThreadPoolExecutor(min(4, len(temps)),
                                        thread_name_prefix="dicomframes-store") as pool:
                    prepared = list(pool.map(prepare, temps))
            else:
                prepared = [prepare(t) for t in temps]
            return self._commit(temps, prepared)
        finally:
            for temp in temps:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()

    def _prepare(self, path: Path, study: str | None) -> dict[str, Any]:
        """Parse a file and compute every index value (no lock held)."""
        ds: pydicom.Dataset | None = None
        try:
            with open(path, "rb") as fp:
                size = os.fstat(fp.fileno()).st_size
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
                ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
                if not ts:
                    raise StoreFailure(INVALID, "the file meta information has no "
                                       "TransferSyntaxUID")
                uid = UID(ts)
                if uid.is_deflated or (uid.is_transfer_syntax and not uid.is_little_endian):
                    layout = self._opaque_layout(path, ts)
                else:
                    layout = locate_pixel_data(fp, ds, size)
        except StoreFailure:
            raise
        except (InvalidDicomError, PixelDataError, EOFError, OSError, ValueError, KeyError,
                TypeError, AttributeError, NotImplementedError) as exc:
            # a readable header (e.g. a file cut short in its pixel data) names the instance,
            # so the client can tell which of its files failed
            known = {k: str(ds.get(k, "") or "") for k in ("SOPClassUID", "SOPInstanceUID")} \
                if ds is not None else {}
            raise StoreFailure(PROCESSING_FAILURE, f"not a readable DICOM file: {exc}",
                               known.get("SOPClassUID") or None,
                               known.get("SOPInstanceUID") or None) from exc
        sop_class = str(ds.get("SOPClassUID", "") or "")
        sop = str(ds.get("SOPInstanceUID", "") or "")
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        for value, what in ((sop, "SOPInstanceUID"), (sop_class, "SOPClassUID"),
                            (study_uid, "StudyInstanceUID"), (series_uid, "SeriesInstanceUID")):
            try:
                validate_uid(value, what)
            except ValueError as exc:
                raise StoreFailure(INVALID, str(exc), sop_class or None, sop or None) from exc
        if study is not None and study_uid != study:
            raise StoreFailure(INVALID, f"instance belongs to study {study_uid}, not to {study}",
                               sop_class, sop)
        try:
            if layout.kind != "none" and layout.tag not in ds:
                vr = "OB" if (UID(ts).is_compressed or (layout.tag == 0x7FE00010 and
                              int(ds.get("BitsAllocated", 16) or 16) <= 8)) else "OW"
                if layout.tag != 0x7FE00010:
                    vr = vr_of(layout.tag)
                # a placeholder value: dataset_to_json gives pixel data a BulkDataURI
                ds.add(DataElement(layout.tag, vr, b"\0\0"))
            obj = self._metadata_json(ds, study_uid, series_uid, sop)
            metadata = _json_text(obj)
            qido = {level: _json_text(_subset(obj, set(DEFAULT_TAGS[level]),
                                              DEFAULT_TAGS[level]))[1:-1]
                    for level in LEVELS}
            common = _json_text(_subset(obj, set(COMMON_TAGS)))[1:-1]
            attrs = {level: _json_text(_level_subset(obj, level)) for level in ("study", "series")}
            columns = {level: {a.keyword: column_value(obj, a) for a in _SEARCHABLE
                               if a.level == level} for level in LEVELS}
        except Exception as exc:  # pydicom raises many kinds for malformed values
            raise StoreFailure(PROCESSING_FAILURE, f"cannot read the attributes: {exc}",
                               sop_class, sop) from exc
        for level in LEVELS:
            for attr in _SEARCHABLE:
                if attr.level == level and attr.kind == "pn":
                    name = columns[level][attr.keyword]
                    columns[level][f"{attr.keyword}_fold"] = name.casefold() if name else None
                    columns[level][f"{attr.keyword}_words"] = pn_words(name)
        return {"study": study_uid, "series": series_uid, "sop": sop, "sop_class": sop_class,
                "ts": ts, "size": size, "layout": layout, "metadata": metadata, "qido": qido,
                "common": common, "attrs": attrs, "columns": columns,
                "modality": columns["series"]["Modality"]}

    @staticmethod
    def _opaque_layout(path: Path, ts: str) -> PixelLayout:
        from .pixeldata import number_of_frames

        full = pydicom.dcmread(path)
        for tag in PIXEL_TAGS:
            if tag in full:
                return PixelLayout("opaque", ts, number_of_frames(full), tag=tag)
        return PixelLayout("none", ts)

    @staticmethod
    def _metadata_json(ds: pydicom.Dataset, study: str, series: str,
                       sop: str) -> dict[str, Any]:
        base = f"/studies/{study}/series/{series}/instances/{sop}/bulkdata/"
        nested: dict[int, str] = {}

        def walk(dataset: pydicom.Dataset, prefix: str) -> None:
            # items() gives the elements as read (raw), without decoding their values
            for tag, raw in list(dataset.items()):
                vr = raw.VR
                if vr == "SQ" or (vr is None and vr_of(int(tag)) == "SQ"):
                    for index, item in enumerate(dataset[tag].value or []):
                        walk(item, f"{prefix}{tag_hex(int(tag))}/{index}/")
                elif prefix and vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN", None):
                    nested[id(dataset[tag])] = f"{prefix}{tag_hex(int(tag))}"

        walk(ds, "")

        def bulk_uri(tag: int, elem: DataElement) -> str:
            return base + nested.get(id(elem), tag_hex(tag))

        return dataset_to_json(ds, bulk_uri=bulk_uri, bulk_threshold=BULK_THRESHOLD)

    def _commit(self, temps: list[Path], prepared: list[dict[str, Any] | StoreFailure]
                ) -> list[Stored | StoreFailure]:
        outcomes: list[Stored | StoreFailure] = []
        moved: list[tuple[Path, Path]] = []
        try:
            with self.transaction() as db:
                for temp, p in zip(temps, prepared, strict=True):
                    if isinstance(p, StoreFailure):
                        outcomes.append(p)
                        continue
                    final = self.path_of(p["study"], p["series"], p["sop"])
                    db.execute("SAVEPOINT instance")
                    try:
                        self._check_and_insert(db, p, final.relative_to(self.root).as_posix())
                        final.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(temp, final)
                    except StoreFailure as failure:
                        db.execute("ROLLBACK TO instance")
                        db.execute("RELEASE instance")
                        outcomes.append(failure)
                        continue
                    except BaseException:
                        db.execute("ROLLBACK TO instance")
                        db.execute("RELEASE instance")
                        raise
                    db.execute("RELEASE instance")
                    moved.append((final, temp))
                    outcomes.append(Stored(p["study"], p["series"], p["sop"], p["sop_class"]))
                for folder in {final.parent for final, _ in moved}:
                    self._fsync_dir(folder)
        except BaseException:
            for final, temp in moved:  # nothing was committed: put the files back
                with contextlib.suppress(OSError):
                    os.replace(final, temp)
            raise
        return outcomes

    def _check_and_insert(self, db: sqlite3.Connection, p: dict[str, Any],
                          relative: str) -> None:
        if db.execute("SELECT 1 FROM instances WHERE SOPInstanceUID = ?",
                      (p["sop"],)).fetchone():
            raise StoreFailure(ALREADY_EXISTS, f"instance {p['sop']} is already stored",
                               p["sop_class"], p["sop"])
        row = db.execute("SELECT StudyInstanceUID FROM series WHERE SeriesInstanceUID = ?",
                         (p["series"],)).fetchone()
        if row and row[0] != p["study"]:
            raise StoreFailure(INVALID, f"series {p['series']} belongs to study {row[0]}, "
                               f"not to {p['study']}", p["sop_class"], p["sop"])
        self._insert_rows(db, p, relative)

    def _insert_rows(self, db: sqlite3.Connection, p: dict[str, Any], relative: str) -> None:
        cols = p["columns"]
        study_cols = cols["study"]
        names = list(study_cols)
        db.execute(
            f"INSERT OR IGNORE INTO studies ({', '.join(names)}, attrs, qido, common) "
            f"VALUES ({', '.join('?' * (len(names) + 3))})",
            [*study_cols.values(), p["attrs"]["study"], p["qido"]["study"], p["common"]])
        series_cols = cols["series"]
        names = list(series_cols)
        cursor = db.execute(
            f"INSERT OR IGNORE INTO series (StudyInstanceUID, {', '.join(names)}, attrs, qido, "
            f"common) VALUES ({', '.join('?' * (len(names) + 4))})",
            [p["study"], *series_cols.values(), p["attrs"]["series"], p["qido"]["series"],
             p["common"]])
        if cursor.rowcount:
            db.execute("UPDATE studies SET num_series = num_series + 1 "
                       "WHERE StudyInstanceUID = ?", (p["study"],))
            self._update_modalities(db, p["study"])
        inst_cols = cols["instance"]
        names = list(inst_cols)
        cursor = db.execute(
            f"INSERT INTO instances (StudyInstanceUID, SeriesInstanceUID, {', '.join(names)}, "
            "transfer_syntax, path, size, stored_at, qido, common) "
            f"VALUES ({', '.join('?' * (len(names) + 8))})",
            [p["study"], p["series"], *inst_cols.values(), p["ts"], relative, p["size"],
             time.time(), p["qido"]["instance"], p["common"]])
        db.execute("INSERT INTO instance_data (id, metadata, pixels) VALUES (?, ?, ?)",
                   (cursor.lastrowid, p["metadata"], _json_text(p["layout"].to_json())))
        db.execute("UPDATE series SET num_instances = num_instances + 1 "
                   "WHERE SeriesInstanceUID = ?", (p["series"],))
        db.execute("UPDATE studies SET num_instances = num_instances + 1 "
                   "WHERE StudyInstanceUID = ?", (p["study"],))

    @staticmethod
    def _update_modalities(db: sqlite3.Connection, study: str) -> None:
        rows = db.execute("SELECT DISTINCT Modality FROM series WHERE StudyInstanceUID = ? "
                          "AND Modality IS NOT NULL ORDER BY Modality", (study,)).fetchall()
        db.execute("UPDATE studies SET modalities = ? WHERE StudyInstanceUID = ?",
                   ("\\".join(r[0] for r in rows) or None, study))

    # -- reading ----------------------------------------------------------------------------

    def _record(self, row: sqlite3.Row | tuple) -> InstanceRecord:
        study, series, sop, ts, path, size, pixels, metadata = row
        return InstanceRecord(study, series, sop, ts, self.root / path, size,
                              PixelLayout.from_json(json.loads(pixels)), metadata)

    _RECORD_COLS = ("i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPInstanceUID, "
                    "i.transfer_syntax, i.path, i.size, d.pixels, d.metadata "
                    "FROM instances i JOIN instance_data d ON d.id = i.id")

    def instance(self, study: str, series: str, sop: str) -> InstanceRecord | None:
        """The record of one instance, or None (also when it is not in that study/series)."""
        row = self.db.execute(
            f"SELECT {self._RECORD_COLS} WHERE i.SOPInstanceUID = ? "
            "AND i.SeriesInstanceUID = ? AND i.StudyInstanceUID = ?",
            (sop, series, study)).fetchone()
        return self._record(row) if row else None

    def instances(self, study: str, series: str | None = None) -> list[InstanceRecord]:
        """Records of a study's (or one series') instances, in the order they were stored."""
        if series is None:
            rows = self.db.execute(
                f"SELECT {self._RECORD_COLS} WHERE i.StudyInstanceUID = ? "
                "ORDER BY i.id", (study,)).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {self._RECORD_COLS} WHERE i.StudyInstanceUID = ? "
                "AND i.SeriesInstanceUID = ? ORDER BY i.id", (study, series)).fetchall()
        return [self._record(r) for r in rows]

    def metadata(self, study: str, series: str | None = None,
                 sop: str | None = None) -> list[str]:
        """Stored DICOM JSON texts of the matching instances (relative BulkDataURIs)."""
        sql = ("SELECT d.metadata FROM instances i JOIN instance_data d ON d.id = i.id "
               "WHERE i.StudyInstanceUID = ?")
        args: list[str] = [study]
        if series is not None:
            sql += " AND i.SeriesInstanceUID = ?"
            args.append(series)
        if sop is not None:
            sql += " AND i.SOPInstanceUID = ?"
            args.append(sop)
        return [r[0] for r in self.db.execute(sql + " ORDER BY i.id", args)]

    def count(self) -> int:
        """Number of stored instances."""
        return self.db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]

    # -- deleting ---------------------------------------------------------------------------

    def delete(self, study: str, series: str | None = None, sop: str | None = None) -> int:
        """Delete a study, series or instance: rows and files. Returns how many instances."""
        where = "StudyInstanceUID = ?"
        args: list[str] = [study]
        if series is not None:
            where += " AND SeriesInstanceUID = ?"
            args.append(series)
        if sop is not None:
            where += " AND SOPInstanceUID = ?"
            args.append(sop)
        with self.transaction() as db:
            rows = db.execute(f"SELECT path, SeriesInstanceUID FROM instances WHERE {where}",
                              args).fetchall()
            if not rows:
                return 0
            db.execute(f"DELETE FROM instance_data WHERE id IN (SELECT id FROM instances "
                       f"WHERE {where})", args)
            db.execute(f"DELETE FROM instances WHERE {where}", args)
            for series_uid in {r[1] for r in rows}:
                self._recount_series(db, series_uid)
            self._recount_study(db, study)
            moved: list[tuple[Path, Path]] = []
            try:
                for relative, _ in rows:
                    target = self.temp_path(".deleted")
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self.root / relative, target)
                        moved.append((self.root / relative, target))
            except BaseException:
                for original, target in moved:
                    os.replace(target, original)
                raise
            trash = [target for _, target in moved]
        for target in trash:
            with contextlib.suppress(OSError):
                target.unlink()
        self._remove_empty_dirs({(self.root / r).parent for r, _ in rows})
        return len(rows)

    def _remove_empty_dirs(self, folders: set[Path]) -> None:
        for folder in folders:
            for candidate in (folder, folder.parent):
                if candidate == self.files or self.files not in candidate.parents:
                    break
                try:
                    candidate.rmdir()
                except OSError:
                    break

    def _recount_series(self, db: sqlite3.Connection, series: str) -> None:
        n = db.execute("SELECT COUNT(*) FROM instances WHERE SeriesInstanceUID = ?",
                       (series,)).fetchone()[0]
        if n:
            db.execute("UPDATE series SET num_instances = ? WHERE SeriesInstanceUID = ?",
                       (n, series))
        else:
            db.execute("DELETE FROM series WHERE SeriesInstanceUID = ?", (series,))

    def _recount_study(self, db: sqlite3.Connection, study: str) -> None:
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
        self._update_modalities(db, study)

    # -- start-up consistency ---------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Make index and files agree after a crash: wipe tmp/, drop rows whose file is gone,
        index complete files that have no row (a crash between rename and commit), and fix
        the study/series counters. Returns what was done."""
        report = {"temporary": 0, "missing": 0, "restored": 0, "discarded": 0}
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    import shutil

                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                report["temporary"] += 1
        db = self.db
        known: dict[str, tuple[str, str]] = {
            path: (study, series) for path, study, series in db.execute(
                "SELECT path, StudyInstanceUID, SeriesInstanceUID FROM instances")}
        on_disk: set[str] = set()
        for dirpath, _dirs, names in os.walk(self.files):
            for name in names:
                on_disk.add((Path(dirpath) / name).relative_to(self.root).as_posix())
        missing = [p for p in known if p not in on_disk]
        if missing:
            with self.transaction() as tx:
                touched: set[tuple[str, str]] = set()
                for path in missing:
                    tx.execute("DELETE FROM instance_data WHERE id IN (SELECT id FROM instances "
                               "WHERE path = ?)", (path,))
                    tx.execute("DELETE FROM instances WHERE path = ?", (path,))
                    touched.add(known[path])
                for _study, series in touched:
                    self._recount_series(tx, series)
                for study in {s for s, _ in touched}:
                    self._recount_study(tx, study)
            report["missing"] = len(missing)
            log.warning("index rows without their file removed: %d", len(missing))
        for path in sorted(on_disk - set(known)):
            source = self.root / path
            temp = self.temp_path(".restore")
            try:
                os.link(source, temp)  # a second name in tmp/: store_file moves it into place
                stored = self.store_file(temp)
                if self.path_of(stored.study, stored.series, stored.sop_instance) != source:
                    source.unlink()  # it was in the wrong place
                report["restored"] += 1
            except (StoreFailure, OSError) as exc:
                rejected = self.root / "rejected" / path
                log.warning("moved %s, which has no index row and cannot be stored (%s), to %s",
                            path, exc, rejected)
                with contextlib.suppress(OSError):
                    rejected.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(source, rejected)
                report["discarded"] += 1
        if on_disk - set(known):
            self._remove_empty_dirs({(self.root / p).parent for p in on_disk - set(known)})
        return report
