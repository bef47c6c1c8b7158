"""The archive on disk: DICOM files under a UID-derived layout, indexed in SQLite.

Layout of an archive folder::

    files/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    tmp/0..7/   uploads and files being written (emptied at start-up)
    rejected/   files found in files/ without an index row that cannot be stored (kept aside)
    index.sqlite3 (+ -wal, -shm)

Every UID is checked with :func:`dicomframes.standard.uids.validate_uid` before it becomes part of a
path. A stored file is written to ``tmp/``, flushed to disk, then renamed into place inside the
index transaction that adds its row. The files about to be renamed are listed first in the
journal of intents (:mod:`.journal`): a crash leaves either a temporary file (removed at start)
or a complete file named by an open intent (whose row is restored at start), so start-up never
walks the archive. What the index holds is laid out by :mod:`.index`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..standard.paths import ResourcePath
from ..standard.pixellayout import (
    PixelLayout,
)
from ..standard.stow import ALREADY_EXISTS, INVALID
from ..standard.uids import validate_uid
from . import feedlog
from .budget import DEFAULT_MAX_INFLATED
from .index import (
    DROP_TABLES,
    SCHEMA_VERSION,
    PreparedInstance,
    StoreFailure,
    add_instance_counts,
    insert_rows,
    prepare_files,
    recount_series,
    recount_study,
    schema,
)
from .journal import (
    COMPARE_ALL,
    Recovery,
    close_intent,
    empty_tmp,
    open_intent,
    open_intents,
    predates_journal,
    replay,
)
from .journal import create as create_journal
from .parsers import CHUNK, IMPORT_CHUNK, Batch, Job, ParserPool
from .repair import Difference, reconcile_archive, reject

try:  # advisory lock so that only the first server on a folder cleans its tmp/
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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


TEMP_LANES = 8  # sub-folders of tmp/ that new files are spread over


def _existing(db: sqlite3.Connection, table: str, key: str, columns: str,
              values: set[str]) -> set[Any]:
    """The rows (``columns``; one column: its values) of ``table`` whose ``key`` is one of
    ``values``, asked in chunks (SQLite limits the parameters of a statement)."""
    found: set[Any] = set()
    ordered = sorted(values)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        rows = db.execute(f"SELECT {columns} FROM {table} WHERE {key} IN "
                          f"({', '.join('?' * len(chunk))})", chunk).fetchall()
        found.update(row[0] if len(row) == 1 else tuple(row) for row in rows)
    return found


class Archive:
    """Files and index of one archive folder; safe to use from many threads and processes."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True,
                 parse_workers: int = 0, max_inflated: int = DEFAULT_MAX_INFLATED) -> None:
        """``parse_workers``: processes that parse the files of a large batch (0: parse in
        the storing thread); they start on the first large batch and stop with
        :meth:`close`. ``max_inflated``: bytes a deflated file may inflate to (it is stored
        inflated; larger is refused)."""
        self.max_inflated = int(max_inflated)
        self.root = Path(root).expanduser().resolve()
        self.parsers = ParserPool(parse_workers) if parse_workers > 0 else None
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
        rebuilt = version not in (0, SCHEMA_VERSION)
        if rebuilt:
            if not exclusive:
                raise RuntimeError(f"the index of {self.root} has an older layout and another "
                                   "server uses it; stop that server first")
            # the files are the archive: drop the old index, reconcile() rebuilds it from them
            log.warning("rebuilding the index of %s (layout %d -> %d)", self.root, version,
                        SCHEMA_VERSION)
            conn.executescript(DROP_TABLES)
            conn.execute(feedlog.DROP)  # the rebuild stores every file again: creates anew
        unjournaled = predates_journal(conn)
        conn.executescript(schema())
        create_journal(conn)
        if feedlog.feed_missing(conn):  # the change feed; an older archive's is filled in
            with self.transaction() as tx:
                feedlog.create_table(tx)
        if version != SCHEMA_VERSION:  # a start-up with nothing to do writes nothing (full disk)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for lane in range(TEMP_LANES):
            (self.tmp / str(lane)).mkdir(exist_ok=True)
        #: what start-up did (None: another server had the folder, it did nothing)
        self.recovery: Recovery | None = None
        if exclusive:
            if rebuilt or unjournaled:  # no journal to trust: compare every file, once
                open_intent(conn, COMPARE_ALL, [], durable)
            self.recovery = self.recover()
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
        """Close every connection, stop the parser processes and release the folder lock."""
        if self.parsers is not None:
            self.parsers.close()
        with self._lock:
            self._closed = True
            for handle in list(self._handles):
                handle.close()
        with contextlib.suppress(OSError):
            self._lock_file.close()

    def temp_path(self, suffix: str = ".part") -> Path:
        """A new, unique path in one of the archive's tmp/ folders (same file system as
        files/). The folders are several: processes that create files in one folder at once
        wait for each other (the folder is locked while a name is added)."""
        name = uuid.uuid4().hex
        return self.tmp / str(int(name[:2], 16) % TEMP_LANES) / f"{name}{suffix}"

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
        :class:`StoreFailure` (reason 272 unreadable, 43264 invalid, 43265 not of the study
        in the URL, 45070 already stored); the temporary file is then removed.
        """
        [outcome] = self.store_files([temp], study)
        if isinstance(outcome, StoreFailure):
            raise outcome
        return outcome

    def store_files(self, temps: list[Path], study: str | None = None, *,
                    prepared: list[PreparedInstance | StoreFailure] | None = None
                    ) -> list[Stored | StoreFailure]:
        """Store several complete files of tmp/ (one STOW request, one import batch) with one
        group commit.

        The files are parsed (by the parser processes for a large batch) and flushed to disk
        together, then inserted and renamed into place under one write lock (one savepoint
        each, so that a failure stays with its file); each folder is flushed once, and the one
        transaction commits: an instance is acknowledged only once its file, its folder and its
        row are durable. A temporary file may be a symbolic link (an in-place import): the link
        is what is moved into place. Returns one outcome per file, in order; temporary files
        are always removed. ``prepared``: the files already parsed (:func:`.index.prepare_file`,
        e.g. by worker processes), one per file.
        """
        try:
            if prepared is None:
                prepared = self.parse(temps, study)
            self.fsync_files([t for t, p in zip(temps, prepared, strict=True)
                              if not isinstance(p, StoreFailure) and not t.is_symlink()])
            return self._commit(temps, prepared)
        finally:
            for temp in temps:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()

    def batch(self, study: str | None = None, *, bounded: bool = True,
              chunk: int = CHUNK) -> Batch:
        """The jobs of one request (write or copy, then parse each file), done by the parser
        processes when there are many (see :class:`.parsers.Batch`)."""
        return Batch(self.parsers, study, bounded=bounded, chunk=chunk)

    def parse(self, paths: list[Path], study: str | None = None
              ) -> list[PreparedInstance | StoreFailure]:
        """:func:`.index.prepare_file` of each path (by the parser processes for a large
        batch), the failure in place of a file that fails."""
        if self.parsers is None:
            return prepare_files(paths, study, max_inflated=self.max_inflated)
        batch = self.batch(study, bounded=False, chunk=IMPORT_CHUNK)
        for path in paths:
            batch.add(Job(path, max_inflated=self.max_inflated))
        return batch.outcomes()

    def fsync_files(self, paths: list[Path]) -> None:
        """Flush files to disk, together (concurrent fsyncs share the file system's journal
        commits); nothing when the archive is not durable."""
        def flush(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        if not self.durable or not paths:
            return
        if len(paths) == 1:
            flush(paths[0])
            return
        with ThreadPoolExecutor(min(8, len(paths)), thread_name_prefix="dicomframes-fsync") \
                as pool:
            list(pool.map(flush, paths))

    def _commit(self, temps: list[Path], prepared: list[PreparedInstance | StoreFailure]
                ) -> list[Stored | StoreFailure]:
        outcomes: list[Stored | StoreFailure] = []
        moved: list[tuple[Path, Path]] = []
        folders: set[Path] = set()
        # write-ahead: which files may be renamed into files/ before the rows commit
        finals = [self.path_of(p.study, p.series, p.sop).relative_to(self.root).as_posix()
                  for p in prepared if not isinstance(p, StoreFailure)]
        intent = open_intent(self.db, "store", finals, self.durable) if finals else None
        try:
            with self.transaction() as db:
                ready = [p for p in prepared if not isinstance(p, StoreFailure)]
                # what the index holds already, asked once for the batch
                taken = _existing(db, "instances", "SOPInstanceUID", "SOPInstanceUID",
                                  {p.sop for p in ready})
                owners = dict(_existing(db, "series", "SeriesInstanceUID",
                                        "SeriesInstanceUID, StudyInstanceUID",
                                        {p.series for p in ready}))
                for temp, p in zip(temps, prepared, strict=True):
                    if isinstance(p, StoreFailure):
                        outcomes.append(p)
                        continue
                    # the checks come before any write: a refused instance leaves no row
                    if p.sop in taken:
                        outcomes.append(StoreFailure(ALREADY_EXISTS, f"instance {p.sop} is "
                                                     "already stored", p.sop_class, p.sop))
                        continue
                    owner = owners.get(p.series)
                    if owner is not None and owner != p.study:
                        outcomes.append(StoreFailure(INVALID, f"series {p.series} belongs to "
                                                     f"study {owner}, not to {p.study}",
                                                     p.sop_class, p.sop))
                        continue
                    final = self.path_of(p.study, p.series, p.sop)
                    insert_rows(db, p, final.relative_to(self.root).as_posix(),
                                parents=owner is None)
                    taken.add(p.sop)
                    owners[p.series] = p.study
                    if final.parent not in folders:
                        final.parent.mkdir(parents=True, exist_ok=True)
                        folders.add(final.parent)
                    os.replace(temp, final)  # an OSError rolls the whole batch back
                    moved.append((final, temp))
                    outcomes.append(Stored(p.study, p.series, p.sop, p.sop_class))
                stored = [o for o in outcomes if isinstance(o, Stored)]
                feedlog.record_creates(db, [(o.study, o.series, o.sop_instance) for o in stored])
                add_instance_counts(db, Counter(o.series for o in stored),
                                    Counter(o.study for o in stored))
                for folder in folders:
                    self._fsync_dir(folder)
                if intent is not None:  # done with the rows, atomically
                    close_intent(db, intent)
        except BaseException:
            for final, temp in moved:  # nothing was committed: put the files back
                with contextlib.suppress(OSError):
                    os.replace(final, temp)
            if intent is not None:  # the next start-up would find nothing left to do
                with contextlib.suppress(sqlite3.Error):
                    close_intent(self.db, intent)
            raise
        return outcomes

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
        """Delete a study, series or instance: rows and files. Returns how many instances.

        All or nothing across a crash: the rows go, and the files are listed in the
        ``pending_deletions`` journal, in one transaction; only after it commits are the files
        unlinked (and the journal emptied). A crash before the commit leaves everything; a crash
        after it leaves files that the next start-up (:meth:`recover`) removes.
        """
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
            db.executemany("INSERT OR IGNORE INTO pending_deletions (path) VALUES (?)",
                           [(r[0],) for r in rows])
            feedlog.record_deletes(db, where, args)
            db.execute(f"DELETE FROM instance_data WHERE id IN (SELECT id FROM instances "
                       f"WHERE {where})", args)
            db.execute(f"DELETE FROM instances WHERE {where}", args)
            for series_uid in {r[1] for r in rows}:
                recount_series(db, series_uid)
            recount_study(db, study)
        self.finish_deletions([r[0] for r in rows])
        return len(rows)

    def finish_deletions(self, paths: list[str] | None = None) -> int:
        """Unlink the files of committed deletions (``paths``, or every one in the journal),
        remove the folders they leave empty and clear their journal rows. Returns how many
        files were removed.

        Runs under the index's write lock: a STOW that stores the same instance again (same
        path) does its rename inside its own write transaction, so a file that has an index
        row again is never removed, and a folder is never removed between a STOW's mkdir and
        its rename.
        """
        removed = 0
        while True:
            with self.transaction() as db:
                if paths is None:
                    batch = [r[0] for r in db.execute(
                        "SELECT path FROM pending_deletions LIMIT 500")]
                else:
                    batch, paths = paths[:500], paths[500:]
                if not batch:
                    return removed
                marks = ", ".join("?" * len(batch))
                indexed = {r[0] for r in db.execute(
                    f"SELECT path FROM instances WHERE path IN ({marks})", batch)}
                folders: set[Path] = set()
                for relative in batch:
                    if relative in indexed:  # stored again since: not ours to remove
                        continue
                    target = self.root / relative
                    if self.files not in target.parents:  # never outside files/
                        continue
                    try:
                        os.unlink(target)
                        removed += 1
                    except FileNotFoundError:
                        pass
                    folders.add(target.parent)
                for folder in folders:
                    self._fsync_dir(folder)
                self.remove_empty_dirs(folders)
                db.execute(f"DELETE FROM pending_deletions WHERE path IN ({marks})", batch)

    def remove_empty_dirs(self, folders: set[Path]) -> None:
        """Remove the series folders given and their study folders when empty. Call it inside
        a write transaction (see :meth:`finish_deletions`)."""
        for folder in folders:
            for candidate in (folder, folder.parent):
                if candidate == self.files or self.files not in candidate.parents:
                    break
                try:
                    candidate.rmdir()
                except OSError:
                    break

    # -- start-up consistency ---------------------------------------------------------------

    def recover(self) -> Recovery:
        """Start-up work, proportional to what was in flight when the archive was last used,
        not to its size (see :mod:`.journal`): empty tmp/, finish committed deletions, and
        finish the open intents of interrupted group commits. Run with the folder to itself.
        Returns what was done, and which files of files/ were looked at."""
        recovery = Recovery()
        recovery.counts["temporary"] = empty_tmp(self.tmp)
        # before the intents: files of committed deletions must not be restored
        recovery.counts["deleted"] = self.finish_deletions()
        replay(self.db, self.root, self._restore,
               lambda path, why: reject(self, path, why), recovery)
        for intent, kind, _paths in open_intents(self.db):
            if kind == COMPARE_ALL:  # an index rebuilt or made before the journal
                log.warning("comparing every file of %s with its index (once)", self.root)
                self.reconcile()
                close_intent(self.db, intent)
        done = {k: v for k, v in recovery.counts.items() if v}
        if done:
            log.warning("start-up of %s finished interrupted work: %s", self.root, done)
        return recovery

    def reconcile(self, progress: Callable[[int, int], None] | None = None,
                  on_difference: Callable[[Difference], None] | None = None
                  ) -> dict[str, int]:
        """Compare every file with the index and make them agree (files changed behind the
        server's back; see :func:`.repair.reconcile_archive`): ``dicomframes check --repair``.
        ``progress(studies done, studies)``; ``on_difference`` sees each difference found.
        Returns what was done."""
        return reconcile_archive(self, self._restore, progress, on_difference)

    def _restore(self, source: Path) -> str | None:
        """Index a file of files/ that has no row (a crash between rename and commit); None,
        or why it cannot be stored."""
        temp = self.temp_path(".restore")
        try:
            # a second name in tmp/ (of the link itself for an in-place import): store_file
            # moves it into place
            os.link(source, temp, follow_symlinks=False)
            stored = self.store_file(temp)
            if self.path_of(stored.study, stored.series, stored.sop_instance) != source:
                source.unlink()  # it was in the wrong place
            return None
        except (StoreFailure, OSError) as exc:
            return str(exc)
