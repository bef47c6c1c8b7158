"""QIDO-RS: query parameters -> SQL over the index -> DICOM JSON (PS3.18 8.3.4, 10.6;
matching per PS3.4 C.2.2.2).

Supported matching: single value (case-sensitive; person names case-insensitive), wildcards
``*`` and ``?``, UID lists (``,`` or ``\\``; also for code strings such as Modality), date and
time ranges ``a-b``, ``a-``, ``-b`` on DA and TM attributes, ``fuzzymatching=true`` for person
names (every word of the query must start a word of the name, any order, any case), and empty
values (universal matching: the attribute is returned). Date and time ranges given together
match as one date-time range, and ``Sequence.Attribute`` keys match inside sequence items
(:mod:`.matching`). ``includefield`` takes a comma list, may be repeated, or ``all``.
``limit`` and ``offset`` page the results (no default limit).

A query without a match answers ``200`` with ``[]`` (Orthanc does the same; Azure sends 204).
A parameter that is not an attribute this server can search raises :class:`QueryError` (400).

Results are built from JSON fragments stored at indexing time, so a query never opens a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pydicom

from ..standard.attributes import (
    COMMON_TAGS,
    COMPUTED,
    DEFAULT_TAGS,
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_INSTANCES,
    NUMBER_OF_STUDY_INSTANCES,
    NUMBER_OF_STUDY_SERIES,
    RETRIEVE_URL,
    SEARCHABLE,
    Attribute,
)
from ..standard.dicomjson import dataset_to_json
from ..standard.paths import ResourcePath
from ..standard.tags import UnknownAttribute, keyword_of, tag_hex, tag_of
from ..standard.temporal import normalize_date, normalize_time
from ..standard.uids import validate_uid
from .budget import MAX_QUERY_KEYS, MAX_QUERY_VALUES
from .index import BULK_PREFIX, json_text
from .matching import (
    DATE_TIME_PAIRS,
    MatchError,
    combined_datetime,
    is_range,
    sequence_match,
    sequence_path,
)
from .storage import Archive

STUDY_UID, SERIES_UID = 0x0020000D, 0x0020000E
ALIASES = {"study": "st", "series": "se", "instance": "i"}
_RANK = {"study": 0, "series": 1, "instance": 2}
RESERVED = ("limit", "offset", "includefield", "fuzzymatching")


class QueryError(ValueError):
    """A query the server cannot run (answered with 400 and this message)."""


@dataclass
class Query:
    """A parsed QIDO request at ``level`` ("study", "series" or "instance")."""

    level: str
    study: str | None = None
    series: str | None = None
    where: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    include: set[int] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False

    @property
    def levels(self) -> list[str]:
        """Levels whose attributes each result carries (PS3.18 10.6.3.3)."""
        levels = [self.level]
        if self.level == "instance" and self.series is None:
            levels.append("series")
        if self.level != "study" and self.study is None:
            levels.append("study")
        return levels


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def _searchable_at(level: str) -> list[Attribute]:
    return [a for a in SEARCHABLE.values() if _RANK[a.level] <= _RANK[level]]


def _attribute(key: str, level: str) -> Attribute | int:
    """The searchable attribute named ``key`` (keyword or tag), or ModalitiesInStudy's tag."""
    try:
        tag = tag_of(key)
    except (UnknownAttribute, KeyError, ValueError):
        raise QueryError(f"unknown query parameter {key!r}: not a DICOM keyword or tag, nor "
                         f"one of {', '.join(RESERVED)}") from None
    keyword = keyword_of(tag)
    if tag == MODALITIES_IN_STUDY:  # the study's: matches its series and instances too
        return tag
    attr = SEARCHABLE.get(keyword)
    if attr is None or _RANK[attr.level] > _RANK[level]:
        names = sorted(a.keyword for a in _searchable_at(level))
        names.append("ModalitiesInStudy")
        raise QueryError(f"{keyword} ({tag_hex(tag)}) cannot be searched at the {level} level; "
                         f"searchable attributes: {', '.join(sorted(names))}")
    return attr


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _glob(value: str) -> str:
    return value.replace("[", "[[]")


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _items(value: str, name: str) -> list[str]:
    """The values of a list (``a,b`` or ``a\\b``): 400 when there is none (the value is only
    separators) or more than ``MAX_QUERY_VALUES``."""
    items = [v for v in re.split(r"[,\\]", value) if v != ""]
    if not items:
        raise QueryError(f"{name}={value!r} holds only separators (',' or '\\'): give at "
                         "least one value, or an empty value to match any")
    if len(items) > MAX_QUERY_VALUES:
        raise QueryError(f"{name} lists {len(items)} values: at most {MAX_QUERY_VALUES} in "
                         "one query (split the query)")
    return items


def _date(value: str, name: str) -> str:
    try:
        return normalize_date(value)
    except ValueError:
        raise QueryError(f"{name}: {value!r} is not a date (YYYYMMDD)") from None


def _time(value: str, name: str, upper: bool) -> str:
    try:
        return normalize_time(value, upper=upper)
    except ValueError:
        raise QueryError(f"{name}: {value!r} is not a time (HHMMSS.FFFFFF)") from None


def _range(col: str, value: str, name: str, kind: str) -> tuple[str, list[Any]]:
    def low(v: str) -> str:
        return _date(v, name) if kind == "da" else _time(v, name, False)

    def high(v: str) -> str:
        return _date(v, name) if kind == "da" else _time(v, name, True)

    if "-" in value:
        lo, _, hi = value.partition("-")
        lo, hi = lo.strip(), hi.strip()
        if lo and hi:
            return f"{col} BETWEEN ? AND ?", [low(lo), high(hi)]
        if lo:
            return f"{col} >= ?", [low(lo)]
        if hi:
            return f"{col} <= ?", [high(hi)]
        raise QueryError(f"{name}: {value!r} is not a range (a-b, a- or -b)")
    if kind == "da":
        return f"{col} = ?", [low(value)]
    return f"{col} BETWEEN ? AND ?", [low(value), high(value)]


def _match(attr: Attribute, value: str, fuzzy: bool) -> tuple[str, list[Any]]:
    col = f"{ALIASES[attr.level]}.{attr.keyword}"
    name = attr.keyword
    if attr.kind == "uid":
        if _has_wildcard(value):
            raise QueryError(f"{name}: wildcards are not allowed in UIDs (use a list a,b,c)")
        uids = _items(value, name)
        for uid in uids:
            try:
                validate_uid(uid, name)
            except ValueError as exc:
                raise QueryError(str(exc)) from None
        return f"{col} IN ({', '.join('?' * len(uids))})", uids
    if attr.kind in ("da", "tm"):
        return _range(col, value, name, attr.kind)
    if attr.kind == "int":
        if not re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", value, re.ASCII):
            raise QueryError(f"{name}: {value!r} is not an integer")
        number = int(value)
        if not -MAX_INT64 - 1 <= number <= MAX_INT64:
            raise QueryError(f"{name}: {value} is out of range (a DICOM IS value is between "
                             f"{-2**31} and {2**31 - 1})")
        return f"{col} = ?", [number]
    if attr.kind == "pn":
        folded = value.split("=")[0].strip().casefold()
        if _has_wildcard(folded):
            return f"{col}_fold GLOB ?", [_glob(folded)]
        if fuzzy:
            words = [w for w in re.split(r"[\s^,]+", folded) if w]
            if not words:
                return "1", []
            if len(words) > MAX_QUERY_VALUES:
                raise QueryError(f"{name} has {len(words)} words for fuzzy matching: at most "
                                 f"{MAX_QUERY_VALUES}")
            return " AND ".join(f"{col}_words LIKE ? ESCAPE '\\'" for _ in words), \
                [f"% {_like(w)}%" for w in words]
        return f"{col}_fold = ?", [folded]
    values = _items(value, name) if attr.kind == "cs" else [value]
    return _any_of(col, values)


def _any_of(col: str, values: list[str]) -> tuple[str, list[Any]]:
    """SQL matching ``col`` against any of ``values`` (wildcards as GLOB): the plain values in
    one IN, so that a long list stays one flat expression."""
    plain = [v for v in values if not _has_wildcard(v)]
    clauses = [f"{col} IN ({', '.join('?' * len(plain))})"] if plain else []
    clauses += [f"{col} GLOB ?" for v in values if _has_wildcard(v)]
    args = [*plain, *(_glob(v) for v in values if _has_wildcard(v))]
    return ("(" + " OR ".join(clauses) + ")" if len(clauses) > 1 else clauses[0]), args


def _modalities_match(value: str) -> tuple[str, list[Any]]:
    clause, args = _any_of("m.Modality", _items(value, "ModalitiesInStudy"))
    return ("EXISTS (SELECT 1 FROM series m WHERE m.StudyInstanceUID = st.StudyInstanceUID "
            f"AND {clause})"), args


MAX_INT64 = 2**63 - 1  # SQLite's largest integer

# the instance_data ids of the instances a result row stands for (sequence matching)
_DATA_IDS = {
    "study": "SELECT x.id FROM instances x WHERE x.StudyInstanceUID = st.StudyInstanceUID",
    "series": "SELECT x.id FROM instances x WHERE x.SeriesInstanceUID = se.SeriesInstanceUID",
    "instance": "i.id",
}


def _keyword(key: str) -> str | None:
    """The keyword of a query parameter naming an attribute (keyword or tag), else None."""
    try:
        return keyword_of(tag_of(key))
    except (UnknownAttribute, KeyError, ValueError):
        return None


def _combined_pairs(params: list[tuple[str, str]], level: str) -> list[tuple[str, str]]:
    """The date/time pairs given both as ranges, matched as one date-time range (PS3.4
    C.2.2.2.5)."""
    given = {_keyword(k): v for k, v in params if "." not in k and k not in RESERVED}
    pairs = []
    for date_name, time_name in DATE_TIME_PAIRS.items():
        attr = SEARCHABLE.get(date_name)
        if attr is None or _RANK[attr.level] > _RANK[level]:
            continue
        date_value, time_value = given.get(date_name), given.get(time_name)
        if date_value and time_value and is_range(date_value) and is_range(time_value):
            pairs.append((date_name, time_name))
    return pairs


def _int_param(name: str, value: str, minimum: int) -> int:
    """A whole-number parameter (ASCII digits) from ``minimum`` to 2**63 - 1 (else 400)."""
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text, re.ASCII):
        raise QueryError(f"{name} must be an integer, not {value!r}")
    number = int(text)
    if number < minimum:
        raise QueryError(f"{name} must be at least {minimum}, not {number}")
    if number > MAX_INT64:
        raise QueryError(f"{name} must be at most {MAX_INT64}, not {number}")
    return number


def parse_query(level: str, params: Iterable[tuple[str, str]], study: str | None = None,
                series: str | None = None) -> Query:
    """Parse QIDO query parameters (as given, repeated keys allowed) for ``level``."""
    query = Query(level, study, series)
    params = list(params)
    for key, value in params:
        if key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching must be true or false, not {value!r}")
            query.fuzzy = value.lower() == "true"
    seen: set[str] = set()
    combined = _combined_pairs(params, level)
    for date_name, time_name in combined:
        dates = [v for k, v in params if _keyword(k) == date_name]
        times = [v for k, v in params if _keyword(k) == time_name]
        if len(dates) > 1 or len(times) > 1:
            raise QueryError(f"{date_name if len(dates) > 1 else time_name} is given more "
                             "than once")
        date_attr, time_attr = SEARCHABLE[date_name], SEARCHABLE[time_name]
        alias = ALIASES[date_attr.level]
        try:
            clause, args = combined_datetime(f"{alias}.{date_name}", f"{alias}.{time_name}",
                                             dates[0], times[0], (date_name, time_name))
        except MatchError as exc:
            raise QueryError(str(exc)) from None
        query.where.append(clause)
        query.args.extend(args)
        query.include.update((date_attr.tag, time_attr.tag))
    skip = {name for pair in combined for name in pair}
    for key, value in params:
        if "." in key and key not in RESERVED:
            try:
                clause, args = sequence_match(key, value, _DATA_IDS[level]) if value else \
                    ("1", [])
                query.include.add(sequence_path(key)[0])
            except MatchError as exc:
                raise QueryError(str(exc)) from None
            query.where.append(clause)
            query.args.extend(args)
            continue
        if key not in RESERVED and _keyword(key) in skip:
            continue
        if key == "limit":
            query.limit = _int_param("limit", value, 1)
        elif key == "offset":
            query.offset = _int_param("offset", value, 0)
        elif key == "fuzzymatching":
            continue
        elif key == "includefield":
            for name in value.split(","):
                name = name.strip()
                if not name:
                    continue
                if name.lower() == "all":
                    query.include_all = True
                    continue
                if "." in name:
                    raise QueryError(f"includefield {name!r}: nested attributes are not "
                                     "supported")
                try:
                    query.include.add(tag_of(name))
                except (UnknownAttribute, KeyError, ValueError):
                    raise QueryError(f"includefield {name!r} is not a DICOM keyword or "
                                     "tag") from None
        else:
            attr = _attribute(key, level)
            name = attr.keyword if isinstance(attr, Attribute) else "ModalitiesInStudy"
            if name in seen:
                raise QueryError(f"{name} is given more than once")
            seen.add(name)
            tag = attr.tag if isinstance(attr, Attribute) else attr
            query.include.add(tag)  # matching keys are returned
            if value == "":
                continue  # universal matching
            if isinstance(attr, int):
                clause, args = _modalities_match(value)
            else:
                clause, args = _match(attr, value, query.fuzzy)
            query.where.append(clause)
            query.args.extend(args)
    if study is not None:
        query.where.append("st.StudyInstanceUID = ?" if level == "study"
                           else f"{ALIASES[level]}.StudyInstanceUID = ?")
        query.args.append(study)
    if series is not None:
        query.where.append("i.SeriesInstanceUID = ?")
        query.args.append(series)
    if len(query.where) > MAX_QUERY_KEYS:
        raise QueryError(f"the query has {len(query.where)} matching keys: at most "
                         f"{MAX_QUERY_KEYS}")
    return query


# --------------------------------------------------------------------------------------------
# answering
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _fragment(tag: int, vr: str, value: Any) -> str:
    """``"tag":{...}`` of one computed element, made by dicomjson (cached)."""
    ds = pydicom.Dataset()
    ds.add_new(tag, vr, list(value) if isinstance(value, tuple) else value)
    return json_text(dataset_to_json(ds))[1:-1]


_URL_MARK = "@RETRIEVE-URL@"
_URL_NAMES = ("studies", "series", "instances")


def absolute_bulk_uris(text: str, base: str) -> str:
    """Make the relative BulkDataURIs of stored DICOM JSON text absolute under ``base``."""
    return text.replace(BULK_PREFIX, BULK_PREFIX[:-1] + json.dumps(base)[1:-1] + "/")


_SOURCES = {
    "study": "studies st",
    "series": "series se JOIN studies st ON st.StudyInstanceUID = se.StudyInstanceUID",
    "instance": ("instances i JOIN series se ON se.SeriesInstanceUID = i.SeriesInstanceUID "
                 "JOIN studies st ON st.StudyInstanceUID = i.StudyInstanceUID"),
}
_PRIMARY = {
    "study": "st.id, st.StudyInstanceUID, st.qido, st.common, st.modalities, st.num_series, "
             "st.num_instances",
    "series": "se.id, se.StudyInstanceUID, se.SeriesInstanceUID, se.qido, se.common, "
              "se.num_instances",
    "instance": "i.id, i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPInstanceUID, i.qido, "
                "i.common",
}


def _select(query: Query) -> tuple[str, list[Any]]:
    """SQL and arguments for the matching rows of the searched level (upper tables joined only
    to match), in id order.

    A deep ``offset`` costs no more than the first page: the id of the first row of the page is
    found by a sub-query that walks ids only (on the narrow ``*_id`` indexes, or the index that
    matches the filter), then the page is read from that id on, ``LIMIT`` rows. The rows are
    exactly those of ``LIMIT limit OFFSET offset``.
    """
    alias = ALIASES[query.level]
    where = " AND ".join(query.where)
    source = _SOURCES[query.level]
    if query.level == "instance" and "st." not in where:
        source = source.split(" JOIN studies")[0]
    if query.level != "study" and "se." not in where and "st." not in where:
        source = source.split(" JOIN ")[0]
    sql = f"SELECT {_PRIMARY[query.level]} FROM {source}"
    args = list(query.args)
    clauses = [where] if where else []
    if query.offset:
        first = f"SELECT {alias}.id FROM {source}"
        if where:
            first += f" WHERE {where}"
        first += f" ORDER BY {alias}.id LIMIT 1 OFFSET {int(query.offset)}"
        clauses.append(f"{alias}.id >= ({first})")
        args = [*query.args, *query.args]
    if clauses:
        sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
    sql += f" ORDER BY {alias}.id"
    if query.limit is not None:
        sql += f" LIMIT {int(query.limit)}"
    return sql, args


def _default_tags(query: Query) -> set[int]:
    tags: set[int] = set(COMMON_TAGS)
    for level in query.levels:
        tags.update(DEFAULT_TAGS[level])
    for tag, level in COMPUTED.items():
        if level in query.levels or (tag == INSTANCE_AVAILABILITY and "study" in query.levels):
            tags.add(tag)
    return tags


def _by_uid(archive: Archive, table: str, key: str, columns: str,
            uids: Iterable[str]) -> dict[str, tuple]:
    """Rows of an upper-level table for the given UIDs, fetched in chunks."""
    found: dict[str, tuple] = {}
    uids = list(dict.fromkeys(uids))
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        sql = (f"SELECT {key}, {columns} FROM {table} "
               f"WHERE {key} IN ({', '.join('?' * len(chunk))})")
        for row in archive.db.execute(sql, chunk):
            found[row[0]] = row[1:]
    return found


class _Parts:
    """JSON text pieces shared by the results of one search."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.root = ResourcePath().url(base)
        self.url_head, self.url_tail = _fragment(RETRIEVE_URL, "UR", _URL_MARK).split(_URL_MARK)
        self.online = _fragment(INSTANCE_AVAILABILITY, "CS", "ONLINE")

    @staticmethod
    def uid(tag: int, value: str) -> str:
        """The element of a parent's UID (Study or Series Instance UID)."""
        return _fragment(tag, "UI", value)

    def url(self, *uids: str) -> str:
        """The RetrieveURL element of the study, series or instance ``uids`` (UIDs read from the
        index, validated when they were stored: no :class:`ResourcePath` per row)."""
        path = "".join(f"/{name}/{uid}" for name, uid in zip(_URL_NAMES, uids, strict=False))
        return f"{self.url_head}{json.dumps(self.root + path)[1:-1]}{self.url_tail}"

    @staticmethod
    def study(qido: str, modalities: str | None, n_series: int, n_instances: int) -> str:
        return ",".join(piece for piece in (
            qido,
            _fragment(MODALITIES_IN_STUDY, "CS",
                      tuple(modalities.split("\\")) if modalities else None),
            _fragment(NUMBER_OF_STUDY_SERIES, "IS", n_series),
            _fragment(NUMBER_OF_STUDY_INSTANCES, "IS", n_instances)) if piece)

    @staticmethod
    def series(qido: str, n_instances: int) -> str:
        return ",".join(piece for piece in (
            qido, _fragment(NUMBER_OF_SERIES_INSTANCES, "IS", n_instances)) if piece)


def search(archive: Archive, query: Query, base: str) -> list[str]:
    """Run ``query``; return one DICOM JSON object text per match. ``base`` is the service
    URL that RetrieveURLs and BulkDataURIs start with (e.g. ``http://127.0.0.1:8042/v1``)."""
    sql, args = _select(query)
    rows = archive.db.execute(sql, args).fetchall()
    parts = _Parts(base)
    levels = query.levels
    results: list[str] = []
    if query.level == "study":
        for _id, study, qido, common, modalities, n_series, n_instances in rows:
            computed = parts.study(qido, modalities, n_series, n_instances)
            pieces: tuple[str, ...] = (common, computed, parts.online,
                                       parts.url(study))
            results.append("{" + ",".join(p for p in pieces if p) + "}")
    else:
        studies: dict[str, str] = {}
        if "study" in levels:
            found = _by_uid(archive, "studies", "StudyInstanceUID",
                            "qido, modalities, num_series, num_instances", (r[1] for r in rows))
            studies = {uid: parts.study(*values) for uid, values in found.items()}
        if query.level == "series":
            for _id, study, series, qido, common, n_instances in rows:
                # the parent UID even when the study is in the path (PS3.18 10.6.3.3.2)
                pieces = (common, studies.get(study) or parts.uid(STUDY_UID, study),
                          parts.series(qido, n_instances),
                          parts.url(study, series))
                results.append("{" + ",".join(p for p in pieces if p) + "}")
        else:
            series_parts: dict[str, str] = {}
            if "series" in levels:
                found = _by_uid(archive, "series", "SeriesInstanceUID", "qido, num_instances",
                                (r[2] for r in rows))
                series_parts = {uid: parts.series(*values) for uid, values in found.items()}
            for _id, study, series, sop, qido, common in rows:
                pieces = (common, studies.get(study) or parts.uid(STUDY_UID, study),
                          series_parts.get(series) or parts.uid(SERIES_UID, series), qido,
                          parts.online,
                          parts.url(study, series, sop))
                results.append("{" + ",".join(p for p in pieces if p) + "}")
    if query.include_all or query.include - _default_tags(query):
        results = [_with_extra(archive, query, row, text, base)
                   for row, text in zip(rows, results, strict=True)]
    return results


def _metadata_of(archive: Archive, where: str, arg: Any) -> dict[str, Any] | None:
    row = archive.db.execute(
        "SELECT d.metadata FROM instances i JOIN instance_data d ON d.id = i.id "
        f"WHERE {where} ORDER BY i.id LIMIT 1", (arg,)).fetchone()
    return json.loads(row[0]) if row else None


def _with_extra(archive: Archive, query: Query, row: tuple, text: str, base: str) -> str:
    """Add ``includefield`` attributes (the slow path: parse and re-serialise)."""
    obj = json.loads(text)
    levels = query.levels
    sources: list[dict[str, Any]] = []
    db = archive.db
    if query.level == "instance":
        sources.append(_metadata_of(archive, "i.id = ?", row[0]) or {})
    if "series" in levels:
        series = row[2]
        attrs = db.execute("SELECT attrs FROM series WHERE SeriesInstanceUID = ?",
                           (series,)).fetchone()
        sources.append(json.loads(attrs[0]) if attrs else {})
    if "study" in levels:
        attrs = db.execute("SELECT attrs FROM studies WHERE StudyInstanceUID = ?",
                           (row[1],)).fetchone()
        sources.append(json.loads(attrs[0]) if attrs else {})
    if query.include_all:
        for source in reversed(sources):
            for key, element in source.items():
                obj.setdefault(key, element)
    wanted = [tag_hex(t) for t in sorted(query.include) if tag_hex(t) not in obj]
    missing = [key for key in wanted if not any(key in s for s in sources)]
    if missing and query.level != "instance":
        # an attribute of a lower level: take it from the first instance of this study/series
        first = (_metadata_of(archive, "i.SeriesInstanceUID = ?", row[2])
                 if query.level == "series" else
                 _metadata_of(archive, "i.StudyInstanceUID = ?", row[1]))
        if first:
            sources.append(first)
    for key in wanted:
        for source in sources:
            if key in source:
                obj[key] = source[key]
                break
    return absolute_bulk_uris(json_text(dict(sorted(obj.items()))), base)
