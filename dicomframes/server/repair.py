"""The full comparison of an archive's index with its files (``dicomframes check``), and the
repair that makes them agree: rows whose file is gone or has another size than the one stored,
files that have no row.

Start-up does not run it (the journal of intents, :mod:`.journal`, tells start-up what was in
flight); it runs on demand, and once at the start of an archive whose index was rebuilt or that
predates the journal. The walk goes one study folder at a time, so memory holds one study's
rows and files, not the archive's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .feedlog import record_deletes
from .index import recount_series, recount_study

log = logging.getLogger(__name__)

MISSING, DAMAGED, UNINDEXED = "missing", "damaged", "unindexed"


class Repairable(Protocol):
    """What the comparison and the repair need of an archive."""

    root: Path
    files: Path
    tmp: Path

    @property
    def db(self) -> sqlite3.Connection: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def finish_deletions(self, paths: list[str] | None = None) -> int: ...

    def remove_empty_dirs(self, folders: set[Path]) -> None: ...


@dataclass(frozen=True)
class Difference:
    """One way index and files disagree: ``kind`` is "missing" (a row whose file is gone),
    "damaged" (a row whose file has another size) or "unindexed" (a file without a row);
    ``path`` is relative to the archive root."""

    kind: str
    path: str
    detail: str


def reject(archive: Repairable, path: str, why: str) -> None:
    """Move the file at ``path`` (relative to the root) to rejected/, logging why."""
    rejected = archive.root / "rejected" / path
    log.warning("moved %s to %s: %s", path, rejected, why)
    with contextlib.suppress(OSError):
        rejected.parent.mkdir(parents=True, exist_ok=True)
        os.replace(archive.root / path, rejected)


def _sizes(archive: Repairable, folder: Path) -> dict[str, int]:
    """Size of every file under ``folder``, by path relative to the root (-1: a link whose
    target is gone)."""
    on_disk: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            full = Path(dirpath) / name
            try:
                size = full.stat().st_size
            except OSError:
                size = -1
            on_disk[full.relative_to(archive.root).as_posix()] = size
    return on_disk


def study_folders(archive: Repairable) -> list[str]:
    """Every study, as named by the index or by a folder of files/ (sorted)."""
    names = {r[0] for r in archive.db.execute(
        "SELECT DISTINCT StudyInstanceUID FROM instances")}
    with contextlib.suppress(FileNotFoundError):
        names.update(entry.name for entry in os.scandir(archive.files))
    return sorted(names)


def _in_flight(archive: Repairable) -> set[str]:
    """Paths that a running server is storing or deleting right now (not differences)."""
    from .journal import open_intents

    paths = {r[0] for r in archive.db.execute("SELECT path FROM pending_deletions")}
    for _id, _kind, listed in open_intents(archive.db):
        paths.update(listed)
    return paths


def compare_study(archive: Repairable, study: str) -> list[Difference]:
    """How the index and the files of one study (or a stray entry of files/) disagree."""
    rows = {path: size for path, size in archive.db.execute(
        "SELECT path, size FROM instances WHERE StudyInstanceUID = ?", (study,))}
    folder = archive.files / study
    if folder.is_dir() and not folder.is_symlink():
        on_disk = _sizes(archive, folder)
    elif os.path.lexists(folder):  # a stray file directly in files/
        on_disk = {folder.relative_to(archive.root).as_posix(): -1}
    else:
        on_disk = {}
    found: list[Difference] = []
    for path, size in rows.items():
        actual = on_disk.pop(path, None)
        if actual is None:  # a row may name a file outside its study's folder
            full = archive.root / path
            actual = full.stat().st_size if full.is_file() else -1
        if actual < 0:
            found.append(Difference(MISSING, path, "indexed, but the file is gone"))
        elif actual != size:
            found.append(Difference(DAMAGED, path, f"{actual} bytes where {size} were stored "
                                    "(changed outside the server)"))
    found += [Difference(UNINDEXED, path, "a file without an index row")
              for path in sorted(on_disk)]
    return found


def _still_differs(archive: Repairable, difference: Difference) -> bool:
    """Asked again after the walk: a server may have stored or deleted it meanwhile."""
    row = archive.db.execute("SELECT size FROM instances WHERE path = ?",
                             (difference.path,)).fetchone()
    full = archive.root / difference.path
    size = full.stat().st_size if full.is_file() else -1
    if difference.kind == UNINDEXED:
        return row is None and os.path.lexists(full)
    return row is not None and (size < 0 if difference.kind == MISSING else size != row[0])


def differences(archive: Repairable, progress: Callable[[int, int], None] | None = None
                ) -> Iterator[Difference]:
    """Compare every index row with its file and every file with its row, one study at a
    time (``progress(studies done, studies)`` after each). A difference is confirmed once
    more before it is given, and paths in flight (open intents, pending deletions) are left
    out, so that the comparison may run beside a server."""
    studies = study_folders(archive)
    for done, study in enumerate(studies, 1):
        found = compare_study(archive, study)
        if found:
            busy = _in_flight(archive)
            for difference in found:
                if difference.path not in busy and _still_differs(archive, difference):
                    yield difference
        if progress is not None:
            progress(done, len(studies))


def repair(archive: Repairable, found: list[Difference],
           restore: Callable[[Path], str | None]) -> dict[str, int]:
    """Make index and files agree for the differences ``found``: rows of missing and damaged
    files are dropped (a damaged file is moved to rejected/, never served), files without a
    row are indexed with ``restore`` (None, or why the file cannot be stored: it is then moved
    to rejected/), and the counters are fixed. Run it with the archive to itself."""
    report = {"missing": 0, "damaged": 0, "restored": 0, "discarded": 0}
    gone = [d for d in found if d.kind in (MISSING, DAMAGED)]
    if gone:
        with archive.transaction() as tx:
            touched: set[tuple[str, str]] = set()
            for difference in gone:
                row = tx.execute("SELECT StudyInstanceUID, SeriesInstanceUID FROM instances "
                                 "WHERE path = ?", (difference.path,)).fetchone()
                if row is None:
                    continue
                record_deletes(tx, "path = ?", (difference.path,))
                tx.execute("DELETE FROM instance_data WHERE id IN (SELECT id FROM instances "
                           "WHERE path = ?)", (difference.path,))
                tx.execute("DELETE FROM instances WHERE path = ?", (difference.path,))
                touched.add((row[0], row[1]))
                report[difference.kind] += 1
                if difference.kind == DAMAGED:  # not the file that was stored: kept aside
                    reject(archive, difference.path, difference.detail)
            for _study, series in touched:
                recount_series(tx, series)
            for study in {s for s, _ in touched}:
                recount_study(tx, study)
    unindexed = [d.path for d in found if d.kind == UNINDEXED]
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


def reconcile_archive(archive: Repairable, restore: Callable[[Path], str | None],
                      progress: Callable[[int, int], None] | None = None,
                      on_difference: Callable[[Difference], None] | None = None
                      ) -> dict[str, int]:
    """Compare the whole archive and repair what differs, one study at a time (committed
    deletions are finished first: their files must not be restored as unindexed). Returns
    how many of each were found and done ("deleted", "missing", "damaged", "restored",
    "discarded")."""
    report = {"deleted": archive.finish_deletions(), "missing": 0, "damaged": 0,
              "restored": 0, "discarded": 0}
    batch: list[Difference] = []
    for difference in differences(archive, progress):
        if on_difference is not None:
            on_difference(difference)
        batch.append(difference)
        if len(batch) >= 500:
            for key, value in repair(archive, batch, restore).items():
                report[key] += value
            batch = []
    for key, value in repair(archive, batch, restore).items():
        report[key] += value
    if report["missing"]:
        log.warning("index rows without their file removed: %d", report["missing"])
    return report
