"""The change feed of a DICOM archive (the Azure DICOM service model), written once for the
embedded server and the client.

The model follows the Microsoft Learn page "Change feed overview" (Azure Health Data Services,
DICOM service) and ``docs/concepts/change-feed.md`` of microsoft/dicom-server: an ordered,
immutable log of events, ``GET /changefeed`` (a JSON array) and ``GET /changefeed/latest``
(one JSON object). Each entry has ``Sequence`` (a long, unique and increasing), the three
UIDs (``StudyInstanceUid``, ``SeriesInstanceUid``, ``SopInstanceUid``), ``Action`` ("create",
"update" or "delete"), ``Timestamp`` (UTC), ``State`` (the instance's state now: "current"
this version is the instance, "replaced" a newer version is, "deleted" the instance is gone)
and, when asked (``includeMetadata``, documented default true), ``Metadata``: the current
DICOM JSON of the instance.

Paging differs between API versions (both documented there):

* v1: ``offset`` is the Sequence to start *after* (exclusive, default 0) and ``limit`` the
  span of Sequence numbers after it (default 10, 1..100): ``offset=10&limit=5`` gives the
  entries with Sequence 11 to 15 that exist. No time window.
* v2: ``startTime`` (inclusive) and ``endTime`` (exclusive) select a time window (ISO 8601,
  default: the whole feed), ``offset`` is the number of entries of the window to skip
  (default 0) and ``limit`` the number to return (default 100, 1..200).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

CREATE, UPDATE, DELETE = "create", "update", "delete"
ACTIONS = (CREATE, UPDATE, DELETE)
CURRENT, REPLACED, DELETED = "current", "replaced", "deleted"
STATES = (CURRENT, REPLACED, DELETED)

#: The fields of an entry, in the documented order.
FIELDS = ("Sequence", "StudyInstanceUid", "SeriesInstanceUid", "SopInstanceUid", "Action",
          "Timestamp", "State", "Metadata")


@dataclass(frozen=True)
class Paging:
    """Default and maximum ``limit`` of one API version, and what ``offset`` means."""

    version: int
    default_limit: int
    max_limit: int
    offset_is_sequence: bool  # v1: offset is a Sequence; v2: entries of the window to skip
    windows: bool  # startTime / endTime accepted


V1 = Paging(1, 10, 100, True, False)
V2 = Paging(2, 100, 200, False, True)


def paging_of(version: int) -> Paging:
    """The paging rules of API ``version`` (1 or 2; later versions page like 2)."""
    return V1 if version <= 1 else V2


def version_of_path(path: str) -> int:
    """The API version a service path names (``.../v1`` -> 1, ``.../v2`` -> 2); a path
    without one is served like the latest version (2)."""
    last = path.rstrip("/").rsplit("/", 1)[-1].lower()
    if last.startswith("v") and last[1:].split(".")[0].isdigit():
        return int(last[1:].split(".")[0])
    return 2


def state_of(entry_version: int, current_version: int | None) -> str:
    """The State of an entry about one version of an instance (the Sequence of the create
    that made it), given the instance's current version (None: the instance is gone)."""
    if current_version is None:
        return DELETED
    return CURRENT if entry_version == current_version else REPLACED


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND = _dt.timedelta(microseconds=1)


def format_timestamp(micros: int) -> str:
    """A time in microseconds since the POSIX epoch as the feed writes it: ISO 8601 in UTC
    with microseconds and ``Z`` (integers, so that text and stored time convert exactly)."""
    return (_EPOCH + micros * _MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def microseconds(moment: _dt.datetime) -> int:
    """An aware datetime as microseconds since the POSIX epoch (exact)."""
    return (moment - _EPOCH) // _MICROSECOND


def parse_timestamp(text: str) -> _dt.datetime:
    """An ISO 8601 date-time (``Z`` or an offset; a naive one is taken as UTC) as an aware
    UTC datetime. ValueError when it is not one."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = _dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.astimezone(_dt.UTC)
