"""The journal of intents: what a store is about to do to ``files/``, made durable before it
acts and cleared in the transaction that finishes it, so that start-up looks only at what was in
flight when the server stopped, never at the whole archive.

Two journals live in the index database, apart from the index tables (rebuilding the index never
forgets them):

- ``intents``: one row per group commit (a STOW request, an import batch, a restored file),
  listing the files it is about to rename into ``files/``. It is committed (with a flush of the
  write-ahead log on a durable archive) before the first rename, and deleted in the same
  transaction that adds the instances' rows. An intent still open at start-up means that the
  process stopped between the two: each of its files that is in ``files/`` without a row is
  indexed again (as the full comparison would), or set aside when it cannot be. An intent of
  kind :data:`COMPARE_ALL` asks for the full comparison instead (an index being rebuilt).
- ``pending_deletions``: the files of a committed DELETE that may still exist; written in the
  DELETE's transaction and emptied once the files are gone (see ``Archive.delete``).

Temporary files live only in ``tmp/``, which holds nothing but in-flight work: emptying it at
start-up is also proportional to what was in flight.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Committed deletions whose files may still exist.
PENDING_DELETIONS = "CREATE TABLE IF NOT EXISTS pending_deletions (path TEXT PRIMARY KEY)"
#: Group commits that may have renamed files into files/ without committing their rows.
INTENTS = ("CREATE TABLE IF NOT EXISTS intents (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
           "paths TEXT NOT NULL, opened REAL NOT NULL)")


#: The kind of intent that asks for the full comparison (an index rebuilt, or an archive made
#: before the journal): cleared once every file was compared, so a crash during it repeats it.
COMPARE_ALL = "compare every file"


def predates_journal(db: sqlite3.Connection) -> bool:
    """True for an archive made before the intents journal (it has an index but no
    ``intents`` table): its last stop cannot be told from a crash, so its start-up compares
    every file once. Ask before creating the tables."""
    def exists(table: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (table,)).fetchone() is not None

    return exists("instances") and not exists("intents")


def create(db: sqlite3.Connection) -> None:
    """Create the journal tables when missing."""
    db.execute(PENDING_DELETIONS)
    db.execute(INTENTS)


@contextlib.contextmanager
def flushed(db: sqlite3.Connection, durable: bool) -> Iterator[None]:
    """Commits inside flush the write-ahead log to disk (``synchronous=FULL``) on a durable
    archive: an intent must reach the disk before the renames it announces."""
    if not durable:
        yield
        return
    db.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        db.execute("PRAGMA synchronous=NORMAL")


def open_intent(db: sqlite3.Connection, kind: str, paths: list[str], durable: bool) -> int:
    """Record (committed, durable) that ``paths`` (relative to the archive root) are about to
    be renamed into place; returns the intent's id, to clear with :func:`close_intent` in the
    transaction that adds their rows."""
    with flushed(db, durable):
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute("INSERT INTO intents (kind, paths, opened) VALUES (?, ?, ?)",
                                (kind, json.dumps(paths), time.time()))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def close_intent(db: sqlite3.Connection, intent: int) -> None:
    """Clear an intent (inside the transaction that finishes its work, or after giving up)."""
    db.execute("DELETE FROM intents WHERE id = ?", (intent,))


@dataclass
class Recovery:
    """What start-up did: counts of each kind of work, and the files it looked at."""

    counts: dict[str, int] = field(default_factory=lambda: {
        "temporary": 0, "deleted": 0, "intents": 0, "restored": 0, "discarded": 0})
    #: files of files/ looked at (stat, parse): the in-flight ones only
    touched: list[str] = field(default_factory=list)


def empty_tmp(tmp: Path) -> int:
    """Remove the files (and links) under ``tmp/`` left by interrupted uploads and imports;
    the folders stay (the server writes there). Returns how many."""
    removed = 0
    for dirpath, _dirs, names in os.walk(tmp):
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
    return removed


def open_intents(db: sqlite3.Connection) -> list[tuple[int, str, list[str]]]:
    """The intents not cleared: (id, kind, paths)."""
    return [(row[0], row[1], json.loads(row[2])) for row in
            db.execute("SELECT id, kind, paths FROM intents ORDER BY id")]


def replay(db: sqlite3.Connection, root: Path, restore: Callable[[Path], str | None],
           reject: Callable[[str, str], None], recovery: Recovery) -> None:
    """Finish every open intent: each of its files that is in place without an index row (its
    transaction never committed) is indexed with ``restore`` (None, or why it cannot be: it
    is then moved aside with ``reject(path, why)``); then the intent is cleared."""
    for intent, kind, paths in open_intents(db):
        if kind == COMPARE_ALL:
            continue  # the caller's business, once the others are finished
        recovery.counts["intents"] += 1
        for relative in paths:
            target = root / relative
            if not os.path.lexists(target):
                continue  # never renamed, or renamed back when the transaction failed
            if db.execute("SELECT 1 FROM instances WHERE path = ?", (relative,)).fetchone():
                continue  # committed (by this or a later request)
            recovery.touched.append(relative)
            why = restore(target)
            if why is None:
                recovery.counts["restored"] += 1
            else:
                reject(relative, f"it has no index row and cannot be stored ({why})")
                recovery.counts["discarded"] += 1
        try:
            db.execute("DELETE FROM intents WHERE id = ?", (intent,))
        except sqlite3.OperationalError as exc:  # e.g. a full disk: done again next time
            log.warning("an interrupted request's intent stays open (%s)", exc)
