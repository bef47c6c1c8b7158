"""The change feed's table in the SQLite index: written in the transactions that change the
index, read by :mod:`.changefeed` (the routes).

One row per event: ``seq`` (the Sequence; AUTOINCREMENT, so a number is never used twice),
the UIDs, the action, the time (integer microseconds since the POSIX epoch, never before the
previous row's) and, for a
delete, the Sequence of the create whose instance it removed. An instance's *version* is the
Sequence of the create that stored it; an entry's State is computed from the instance's last
event (:func:`dicomframes.standard.changefeed.state_of`), so earlier entries read "replaced"
or "deleted" without ever being rewritten: the log stays immutable.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..standard.changefeed import CREATE, DELETE, state_of

TABLE = (
    "CREATE TABLE IF NOT EXISTS changefeed (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "study TEXT NOT NULL, series TEXT NOT NULL, sop TEXT NOT NULL, action TEXT NOT NULL, "
    "ts INTEGER NOT NULL, version INTEGER)")
INDEXES = (
    "CREATE INDEX IF NOT EXISTS changefeed_sop ON changefeed(sop, seq)",
    "CREATE INDEX IF NOT EXISTS changefeed_ts ON changefeed(ts)",
)
DROP = "DROP TABLE IF EXISTS changefeed"


def feed_missing(db: sqlite3.Connection) -> bool:
    """True when the index has no change feed table yet (a read only)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                      "AND name = 'changefeed'").fetchone() is None


def create_table(db: sqlite3.Connection) -> None:
    """Create the table; an archive indexed before it existed gets one create per stored
    instance (in the order they were stored, at their storage time), so that the feed and
    the archive agree from the start."""
    missing = feed_missing(db)
    db.execute(TABLE)
    for statement in INDEXES:
        db.execute(statement)
    if missing:
        db.execute("INSERT INTO changefeed (study, series, sop, action, ts) "
                   "SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, ?, "
                   "CAST(stored_at * 1000000 AS INTEGER) "
                   "FROM instances ORDER BY id", (CREATE,))


def _now(db: sqlite3.Connection) -> int:
    """Now in microseconds, or the last entry's time when the clock went back: time never
    decreases along the Sequence, so that a time window is a range of Sequences."""
    last = db.execute("SELECT MAX(ts) FROM changefeed").fetchone()[0]
    now = time.time_ns() // 1000
    return max(now, last) if last is not None else now


def record_creates(db: sqlite3.Connection,
                   instances: Iterable[tuple[str, str, str]]) -> None:
    """One create per (study, series, sop) stored; call it in the storing transaction."""
    rows = list(instances)
    if rows:
        ts = _now(db)
        db.executemany("INSERT INTO changefeed (study, series, sop, action, ts) "
                       "VALUES (?, ?, ?, ?, ?)", [(*r, CREATE, ts) for r in rows])


def record_deletes(db: sqlite3.Connection, where: str, args: Sequence[str]) -> None:
    """One delete per instance row matching ``where`` (on ``instances``); call it in the
    deleting transaction, before the rows go."""
    db.execute(
        "INSERT INTO changefeed (study, series, sop, action, ts, version) "
        "SELECT i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPInstanceUID, ?, ?, "
        "(SELECT MAX(c.seq) FROM changefeed c WHERE c.sop = i.SOPInstanceUID "
        f"AND c.action = ?) FROM instances i WHERE {where} ORDER BY i.id",
        [DELETE, _now(db), CREATE, *args])


@dataclass(frozen=True)
class Entry:
    """One entry of the feed, its State computed."""

    sequence: int
    study: str
    series: str
    sop: str
    action: str
    timestamp: int  # microseconds since the POSIX epoch
    state: str


_SELECT = ("SELECT c.seq, c.study, c.series, c.sop, c.action, c.ts, "
           "COALESCE(c.version, c.seq), l.action, COALESCE(l.version, l.seq) "
           "FROM changefeed c JOIN changefeed l ON l.seq = "
           "(SELECT MAX(seq) FROM changefeed WHERE sop = c.sop)")


def _entries(rows: Iterable[tuple]) -> list[Entry]:
    out = []
    for seq, study, series, sop, action, ts, version, last_action, last_version in rows:
        current = last_version if last_action != DELETE else None
        out.append(Entry(seq, study, series, sop, action, ts, state_of(version, current)))
    return out


def after_sequence(db: sqlite3.Connection, offset: int, span: int) -> list[Entry]:
    """The entries with ``offset`` < Sequence <= ``offset + span`` (API v1 paging)."""
    return _entries(db.execute(f"{_SELECT} WHERE c.seq > ? AND c.seq <= ? ORDER BY c.seq",
                               (offset, offset + span)))


def in_window(db: sqlite3.Connection, start: int | None, end: int | None, offset: int,
              limit: int) -> list[Entry]:
    """Entries with ``start`` <= time < ``end`` (None: open), ``offset`` of them skipped, at
    most ``limit`` (API v2 paging)."""
    where, args = [], []
    if start is not None:
        where.append("c.ts >= ?")
        args.append(start)
    if end is not None:
        where.append("c.ts < ?")
        args.append(end)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    if not where and offset:  # Sequences are dense here unless rows were lost: seek, then
        first = db.execute("SELECT seq FROM changefeed ORDER BY seq LIMIT 1 OFFSET ?",
                           (offset,)).fetchone()  # skip by the index rather than the join
        if first is None:
            return []
        return _entries(db.execute(f"{_SELECT} WHERE c.seq >= ? ORDER BY c.seq LIMIT ?",
                                   (first[0], limit)))
    return _entries(db.execute(f"{_SELECT} {clause}ORDER BY c.seq LIMIT ? OFFSET ?",
                               (*args, limit, offset)))


def latest(db: sqlite3.Connection) -> Entry | None:
    """The last entry, or None when the feed is empty."""
    return next(iter(_entries(db.execute(
        f"{_SELECT} WHERE c.seq = (SELECT MAX(seq) FROM changefeed)"))), None)


def current_metadata(db: sqlite3.Connection, sops: Iterable[str]) -> dict[str, str]:
    """The stored DICOM JSON text (relative BulkDataURIs) of the instances ``sops`` that
    exist."""
    out: dict[str, str] = {}
    ordered = sorted(set(sops))
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        out.update(db.execute(
            "SELECT i.SOPInstanceUID, d.metadata FROM instances i JOIN instance_data d "
            f"ON d.id = i.id WHERE i.SOPInstanceUID IN ({', '.join('?' * len(chunk))})",
            chunk).fetchall())
    return out
