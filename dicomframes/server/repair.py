"""Start-up repair of an archive: make index and files agree after a crash or after files were
changed behind the server's back (see :meth:`dicomframes.server.storage.Archive.reconcile`).

Run only by the first server on a folder (it holds the folder's lock exclusively).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from .feedlog import record_deletes
from .index import recount_series, recount_study

log = logging.getLogger(__name__)


class Repairable(Protocol):
    """What repair needs of an archive."""

    root: Path
    files: Path
    tmp: Path

    @property
    def db(self) -> sqlite3.Connection: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def finish_deletions(self, paths: list[str] | None = None) -> int: ...

    def remove_empty_dirs(self, folders: set[Path]) -> None: ...


def reject(archive: Repairable, path: str, why: str) -> None:
    """Move the file at ``path`` (relative to the root) to rejected/, logging why."""
    rejected = archive.root / "rejected" / path
    log.warning("moved %s to %s: %s", path, rejected, why)
    with contextlib.suppress(OSError):
        rejected.parent.mkdir(parents=True, exist_ok=True)
        os.replace(archive.root / path, rejected)


def _files_on_disk(archive: Repairable) -> dict[str, int]:
    """Size of every file under files/, by path relative to the root."""
    on_disk: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(archive.files):
        for name in names:
            full = Path(dirpath) / name
            with contextlib.suppress(OSError):
                on_disk[full.relative_to(archive.root).as_posix()] = full.stat().st_size
    return on_disk


def reconcile_archive(archive: Repairable,
                      restore: Callable[[Path], str | None]) -> dict[str, int]:
    """Wipe tmp/, finish committed deletions (the ``pending_deletions`` journal), drop rows
    whose file is gone, drop rows whose file's size is not the one indexed (the file is moved
    to rejected/), index files that have no row with ``restore`` (it returns None, or why the
    file cannot be stored: it is then moved to rejected/), and fix the counters. Returns how
    many of each were found."""
    report = {"temporary": 0, "deleted": 0, "missing": 0, "damaged": 0, "restored": 0,
              "discarded": 0}
    for dirpath, _dirs, names in os.walk(archive.tmp):
        for name in names:  # files (and links) left by an interrupted upload or import;
            with contextlib.suppress(OSError):  # the folders stay, the server writes there
                os.unlink(os.path.join(dirpath, name))
                report["temporary"] += 1
    # before the scan: files of committed deletions must not be restored as unindexed
    report["deleted"] = archive.finish_deletions()
    known: dict[str, tuple[str, str, int]] = {
        path: (study, series, size) for path, study, series, size in archive.db.execute(
            "SELECT path, StudyInstanceUID, SeriesInstanceUID, size FROM instances")}
    on_disk = _files_on_disk(archive)
    missing = [p for p in known if p not in on_disk]
    damaged = [p for p in known if p in on_disk and on_disk[p] != known[p][2]]
    if missing or damaged:
        with archive.transaction() as tx:
            touched: set[tuple[str, str]] = set()
            for path in missing + damaged:
                record_deletes(tx, "path = ?", (path,))
                tx.execute("DELETE FROM instance_data WHERE id IN (SELECT id FROM instances "
                           "WHERE path = ?)", (path,))
                tx.execute("DELETE FROM instances WHERE path = ?", (path,))
                touched.add(known[path][:2])
            for _study, series in touched:
                recount_series(tx, series)
            for study in {s for s, _ in touched}:
                recount_study(tx, study)
            for path in damaged:  # not the file that was stored: kept aside, never served
                reject(archive, path, f"{on_disk.pop(path)} bytes where {known[path][2]} "
                       "were stored (changed outside the server)")
        report["missing"], report["damaged"] = len(missing), len(damaged)
        if missing:
            log.warning("index rows without their file removed: %d", len(missing))
    unindexed = sorted(set(on_disk) - set(known))
    for path in unindexed:
        why = restore(archive.root / path)
        if why is None:
            report["restored"] += 1
        else:
            reject(archive, path, f"it has no index row and cannot be stored ({why})")
            report["discarded"] += 1
    if unindexed:
        archive.remove_empty_dirs({(archive.root / p).parent for p in unindexed})
    return report
