"""The archive on disk: DICOM files under a UID-derived layout, indexed in SQLite.

Layout of an archive folder::

    files/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    tmp/        uploads and files being written (wiped at start-up)
    rejected/   files found in files/ without an index row that cannot be stored (kept aside)
    index.sqlite3 (+ -wal, -shm)

Every UID is checked with :func:`dicomframes.standard.uids.validate_uid` before it becomes part of a
path. A stored file is written to ``tmp/``, flushed to disk, then renamed into place inside the
index transaction that adds its row; a crash leaves either a temporary file (removed at start)
or a complete file (whose row is restored at start). What the index holds is laid out by
:mod:`.index`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..standard.paths import ResourcePath
from ..standard.pixellayout import (
    PixelDataError,
    PixelLayout,
    locate_pixel_data,
    number_of_frames,
)
from ..standard.stow import ALREADY_EXISTS, INVALID, PROCESSING_FAILURE
from ..standard.tags import PIXEL_TAGS
from ..standard.uids import validate_uid
from .index import (
    DROP_TABLES,
    SCHEMA_VERSION,
    PreparedInstance,
    insert_rows,
    prepare_instance,
    recount_series,
    recount_study,
    schema,
)

try:  # advisory lock so that only the first server on a folder cleans its tmp/
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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

    @property
    def resource(self) -> ResourcePath:
        """The instance's resource path."""
        return ResourcePath(self.study, self.series, self.sop_instance)


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
            conn.executescript(DROP_TABLES)
        conn.executescript(schema())
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
        def prepare(temp: Path) -> PreparedInstance | StoreFailure:
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

    def _prepare(self, path: Path, study: str | None) -> PreparedInstance:
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
            return prepare_instance(ds, ResourcePath(study_uid, series_uid, sop), sop_class,
                                    layout, size)
        except Exception as exc:  # pydicom raises many kinds for malformed values
            raise StoreFailure(PROCESSING_FAILURE, f"cannot read the attributes: {exc}",
                               sop_class, sop) from exc

    @staticmethod
    def _opaque_layout(path: Path, ts: str) -> PixelLayout:
        full = pydicom.dcmread(path)
        for tag in PIXEL_TAGS:
            if tag in full:
                return PixelLayout("opaque", ts, number_of_frames(full), tag=tag)
        return PixelLayout("none", ts)

    def _commit(self, temps: list[Path], prepared: list[PreparedInstance | StoreFailure]
                ) -> list[Stored | StoreFailure]:
        outcomes: list[Stored | StoreFailure] = []
        moved: list[tuple[Path, Path]] = []
        try:
            with self.transaction() as db:
                for temp, p in zip(temps, prepared, strict=True):
                    if isinstance(p, StoreFailure):
                        outcomes.append(p)
                        continue
                    final = self.path_of(p.study, p.series, p.sop)
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
                    outcomes.append(Stored(p.study, p.series, p.sop, p.sop_class))
                for folder in {final.parent for final, _ in moved}:
                    self._fsync_dir(folder)
        except BaseException:
            for final, temp in moved:  # nothing was committed: put the files back
                with contextlib.suppress(OSError):
                    os.replace(final, temp)
            raise
        return outcomes

    @staticmethod
    def _check_and_insert(db: sqlite3.Connection, p: PreparedInstance, relative: str) -> None:
        if db.execute("SELECT 1 FROM instances WHERE SOPInstanceUID = ?", (p.sop,)).fetchone():
            raise StoreFailure(ALREADY_EXISTS, f"instance {p.sop} is already stored",
                               p.sop_class, p.sop)
        row = db.execute("SELECT StudyInstanceUID FROM series WHERE SeriesInstanceUID = ?",
                         (p.series,)).fetchone()
        if row and row[0] != p.study:
            raise StoreFailure(INVALID, f"series {p.series} belongs to study {row[0]}, "
                               f"not to {p.study}", p.sop_class, p.sop)
        insert_rows(db, p, relative)

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
                recount_series(db, series_uid)
            recount_study(db, study)
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

    # -- start-up consistency ---------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Make index and files agree after a crash: wipe tmp/, drop rows whose file is gone,
        index complete files that have no row (a crash between rename and commit), and fix
        the study/series counters. Returns what was done."""
        report = {"temporary": 0, "missing": 0, "restored": 0, "discarded": 0}
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
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
                    recount_series(tx, series)
                for study in {s for s, _ in touched}:
                    recount_study(tx, study)
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
