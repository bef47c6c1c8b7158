"""Archive-sized reads, planned: the query space split into partitions, one schema for all.

:func:`plan_partitions` lists the studies of an archive without deep offsets: by StudyDate
ranges, each range halved until its studies fit one page (a full page means "maybe more"),
then the studies without a StudyDate. It groups the studies into :class:`Partition` objects
(picklable: UIDs and query parameters only). :func:`fetch_partition` fetches one partition's
rows (QIDO-RS, or WADO-RS metadata per series) as a DataFrame typed like
:func:`dicomframes.convert.tables.to_dataframe` and conformed to one Arrow schema
(:func:`schema_for`; :func:`empty_frame` is the typed empty frame, e.g. a Dask ``meta``).
:mod:`dicomframes.client.harvest` writes partitions to Parquet; ``dicomframes.dask`` reads
them on workers.

Servers that cap ``limit`` (Azure: 200) or ignore ``offset`` are detected from their answers
(:class:`Reader`) and still give every row; no request goes deeper than a page or two of
offset, except the listing of studies that have no StudyDate (QIDO has no "is empty" match:
they are what a plain listing of studies holds beyond the dated ones).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DICOMwebError
from ..standard.attributes import DEFAULT_TAGS, UID_KEYWORDS, level_name, level_of_tag
from ..standard.mediatypes import DICOM_JSON
from ..standard.paths import ResourcePath
from ..standard.tags import tag_hex, tag_of
from .exchange import redact_url
from .limits import parse_json
from .qido import qido_params, refused_limit
from .surface import DicomwebClient

__all__ = [
    "Partition",
    "Reader",
    "fetch_objects",
    "list_studies",
    "plan_partitions",
    "split_filters",
]

_STUDY_UID = tag_hex(tag_of("StudyInstanceUID"))
_SERIES_UID = tag_hex(tag_of("SeriesInstanceUID"))
_STUDY_DATE = tag_hex(tag_of("StudyDate"))
_N_INSTANCES = tag_hex(tag_of("NumberOfStudyRelatedInstances"))
_N_SERIES = tag_hex(tag_of("NumberOfStudyRelatedSeries"))
_ABOVE = {"study": (), "series": ("study",), "instance": ("study", "series")}
_UID_TAGS = {level: tag_hex(tag_of(keyword)) for level, keyword in UID_KEYWORDS.items()}
#: StudyDate ranges searched: one from 1800 to 2199 (halved as needed) and two open ends.
_FIRST_DAY = _dt.date(1800, 1, 1)
_LAST_DAY = _dt.date(2199, 12, 31)
#: UIDs per list-matching request (keeps the URL under about 4 KB).
_UIDS_PER_REQUEST = 40


@dataclass(frozen=True)
class Partition:
    """One unit of an archive read: some studies, fetched and written together.

    ``key`` is unique within a plan and stable across plans of an unchanged archive (a hash
    of the level and the study UIDs); ``study_uids`` the studies; ``rows`` the expected number
    of rows (from the studies' counts; None when the server gave none); ``counts`` the
    expected rows of each study (same order); ``params`` the QIDO parameters of the
    per-study queries (the filters below study level, ``includefield``).
    """

    key: str
    study_uids: tuple[str, ...]
    rows: int | None = None
    counts: tuple[int | None, ...] = ()
    params: tuple[tuple[str, str], ...] = ()


class Reader:
    """Fetches QIDO pages and learns the server's paging quirks from its answers.

    ``page_size`` rows are asked per request; a server that answers fewer rows although more
    exist caps ``limit`` (then ``cap`` is its page size), and one that answers an ``offset``
    with rows it already sent ignores ``offset`` (``offset_ignored``). ``requests`` counts the
    requests made. Safe to share between threads.
    """

    def __init__(self, client: DicomwebClient, page_size: int = 1000) -> None:
        self.client = client
        self.page_size = max(1, int(page_size))
        self.cap: int | None = None
        self.limit_ok = False
        self.offset_ignored = False
        self.uid_lists = True
        self.max_seen = 0
        self.learned = False
        self.requests = 0
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        """Rows to ask for in one request."""
        return min(self.page_size, self.cap) if self.cap else self.page_size

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` as DICOM JSON; the parsed answer (``[]`` for 204 or an empty body)."""
        response = self.client.request("GET", path, params=params,
                                       headers={"Accept": DICOM_JSON})
        with self._lock:
            self.requests += 1
        if response.status_code == 204 or not response.content.strip():
            return []
        data = parse_json(response.content, "GET", redact_url(response.url or ""),
                          response.headers.get("Content-Type", ""))
        return [data] if isinstance(data, dict) else data

    def page(self, path: str, params: Mapping[str, str], offset: int = 0,
             limit: int | None = None) -> list[dict]:
        """One page of a search."""
        asked = limit or self.limit
        query = {**params, "limit": str(asked)}
        if offset:
            query["offset"] = str(offset)
        while True:
            try:
                rows = self.get(path, query)
                break
            except DICOMwebError as exc:  # a limit the server refuses (Azure: over 200)
                smaller = refused_limit(exc, int(query["limit"]))
                if smaller is None:
                    raise
                with self._lock:
                    self.cap = smaller if self.cap is None else min(self.cap, smaller)
                query["limit"] = str(smaller)
        with self._lock:
            if len(rows) >= asked:  # (a limit lowered above says nothing of the one asked)
                self.limit_ok = True
            self.max_seen = max(self.max_seen, len(rows))
        return rows

    def learn(self) -> None:
        """Once: ask for a page of instances (the level with the most rows) to learn how many
        rows the server gives in one answer at most."""
        if self.learned:
            return
        self.learned = True
        self.page("instances", {})

    def short_is_complete(self, count: int) -> bool:
        """Whether an answer of ``count`` rows, fewer than asked, holds every match: the server
        honours our page size, or has given more rows than that to another request (so it
        does not cap at ``count``)."""
        return self.limit_ok or count < self.max_seen

    def fits(self, path: str, params: Mapping[str, str], uid_tag: str) -> list[dict] | None:
        """Every row of a search when they fit one page, else None ("maybe more").

        An answer shorter than the page is checked once with the next offset unless it is
        known complete (:meth:`short_is_complete`): rows there mean the server caps
        ``limit`` (learned), repeats that it ignores ``offset`` (then a page of instances
        tells how many rows it gives at most); "maybe more" unless that settles it.
        """
        limit = self.limit
        rows = self.page(path, params, 0, limit)
        if len(rows) >= limit:
            return None
        if not rows or self.short_is_complete(len(rows)):
            return rows
        if self.offset_ignored:
            self.learn()
            return rows if self.short_is_complete(len(rows)) else None
        more = self.page(path, params, len(rows), limit)
        if not more:
            return rows
        seen = {_first(r, uid_tag) for r in rows}
        if all(_first(r, uid_tag) in seen for r in more):
            self.offset_ignored = True
            self.learn()
            return rows if self.short_is_complete(len(rows)) else None
        with self._lock:
            if self.cap is None or len(rows) < self.cap:
                self.cap = len(rows)
        return None

    def every(self, path: str, params: Mapping[str, str], uid_tag: str,
              expected: int | None = None) -> tuple[list[dict], bool]:
        """Every row of a search, page by page (rows deduplicated by ``uid_tag``); and
        whether the answer is known complete (False when the server ignores ``offset`` and
        more rows may exist than it gives in one answer). ``expected``: the number of rows
        the search has (from the counts of a search above), when known."""
        out: list[dict] = []
        seen: set[Any] = set()
        offset = 0
        first = 0
        while True:
            limit = self.limit
            rows = self.page(path, params, offset, limit)
            if offset == 0:
                first = len(rows)
            fresh = [r for r in rows if _first(r, uid_tag) not in seen]
            seen.update(_first(r, uid_tag) for r in fresh)
            out.extend(fresh)
            if expected is not None and len(out) >= expected:
                return out, True
            if rows and not fresh:  # the same rows again: the server ignores offset
                self.offset_ignored = True
                if expected is not None:
                    return out, False
                self.learn()
                return out, first < limit and self.short_is_complete(first)
            if not rows:
                return out, True
            if len(rows) < limit:
                if expected is None and self.short_is_complete(len(rows)):
                    return out, True
                if self.offset_ignored:
                    self.learn()
                    return out, expected is None and self.short_is_complete(first)
                if offset == 0 and expected is not None:
                    # fewer rows than asked and more expected: the server caps limit
                    with self._lock:
                        if self.cap is None or len(rows) < self.cap:
                            self.cap = len(rows)
            offset += len(rows)


def _first(obj: Mapping[str, Any], key: str) -> Any:
    element = obj.get(key)
    if isinstance(element, Mapping):
        values = element.get("Value")
        if values:
            return values[0]
    return None


def _count(obj: Mapping[str, Any], key: str) -> int | None:
    value = _first(obj, key)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- planning

def split_filters(level: str, filters: Mapping[str, Any]) -> tuple[dict, dict]:
    """(filters of the study listing, filters of the per-study queries) for ``level``.

    Study-level attributes (and ModalitiesInStudy) select studies; the others, with
    ``includefield``, go to the queries below the study.
    """
    level = level_name(level)
    if level == "study":
        return dict(filters), {}
    upper: dict[str, Any] = {}
    lower: dict[str, Any] = {}
    for key, value in filters.items():
        if key.lower() in ("limit", "offset"):
            raise ValueError("harvest reads every row: limit and offset are not filters here")
        if key.lower() in ("includefield", "fuzzymatching"):
            lower[key] = value
            continue
        try:
            tag = tag_of(key.split(".")[0])
        except KeyError:
            lower[key] = value
            continue
        if tag == tag_of("ModalitiesInStudy") or level_of_tag(tag) == "study":
            upper[key] = value
        else:
            lower[key] = value
    if "fuzzymatching" in lower:
        upper["fuzzymatching"] = lower["fuzzymatching"]
    return upper, lower


def _date_text(day: _dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def list_studies(reader: Reader, filters: Mapping[str, Any]) -> list[dict]:
    """Every study matching ``filters`` (study-level), by StudyDate ranges halved until each
    fits a page, plus the studies without StudyDate; one JSON object each, date order."""
    params = qido_params(filters)
    params["includefield"] = ",".join(filter(None, [
        params.get("includefield"), "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries"]))
    if params["includefield"].startswith("all"):
        params["includefield"] = "all"
    found: list[dict] = []
    seen: set[str] = set()

    def add(rows: Iterable[dict]) -> None:
        for row in rows:
            uid = _first(row, _STUDY_UID)
            if uid is not None and uid not in seen:
                seen.add(uid)
                found.append(row)

    dated = {k: v for k, v in params.items() if k not in ("StudyDate", _STUDY_DATE)}
    if len(dated) != len(params):  # the caller's own StudyDate filter: one range, no undated
        add(_whole(reader, "studies", params))
        return found
    add(_whole(reader, "studies", {**dated, "StudyDate": f"-{_date_text(_FIRST_DAY - _ONE)}"}))
    stack = [(_FIRST_DAY, _LAST_DAY)]
    while stack:
        first, last = stack.pop()
        query = {**dated, "StudyDate": f"{_date_text(first)}-{_date_text(last)}"}
        if first == last:
            query["StudyDate"] = _date_text(first)
            add(_whole(reader, "studies", query))
            continue
        rows = reader.fits("studies", query, _STUDY_UID)
        if rows is None:
            middle = first + (last - first) // 2
            stack.append((middle + _ONE, last))  # popped second: date order kept
            stack.append((first, middle))
        else:
            add(sorted(rows, key=lambda r: str(_first(r, _STUDY_DATE) or "")))
    add(_whole(reader, "studies", {**dated, "StudyDate": f"{_date_text(_LAST_DAY + _ONE)}-"}))
    # studies without StudyDate: what a plain listing holds beyond the dated ones
    rows, complete = reader.every("studies", dated, _STUDY_UID)
    add(r for r in rows if _first(r, _STUDY_DATE) is None)
    if not complete:
        warnings.warn(
            f"the server at {reader.client.url} ignores 'offset': studies without a StudyDate "
            f"beyond the first {len(rows)} listed may be missing", RuntimeWarning, stacklevel=3)
    return found


_ONE = _dt.timedelta(days=1)


def _whole(reader: Reader, path: str, params: Mapping[str, str]) -> list[dict]:
    rows, complete = reader.every(path, params, _STUDY_UID)
    if not complete:
        warnings.warn(
            f"the server at {reader.client.url} ignores 'offset' and more studies match "
            f"{dict(params)} than one page: some may be missing", RuntimeWarning, stacklevel=3)
    return rows


def plan_partitions(client: DicomwebClient, level: str = "instances", *, metadata: bool = False,
                    rows_per_partition: int = 5000, page_size: int = 1000,
                    reader: Reader | None = None, balance: int = 1,
                    studies: list[dict] | None = None, **filters: Any) -> list[Partition]:
    """Split an archive (or the part of it ``filters`` select) into partitions at ``level``.

    ``level``: "studies", "series" or "instances" ("study", "instance" also work). Each
    partition holds whole studies, at most about ``rows_per_partition`` rows (a bigger study
    is a partition of its own). ``balance``: make the number of partitions a multiple of this
    (the workers that fetch them), the rows shared evenly, so that the last round keeps every
    worker busy. Filters are QIDO filters as for ``client.search_*``: study-level ones select
    the studies, the others go to the queries within each study. ``studies``: the study rows
    (with their counts) already listed by the caller, in place of :func:`list_studies`.
    """
    level = level_name(level)
    reader = reader or Reader(client, page_size)
    upper, lower = split_filters(level, filters)
    if studies is None:
        studies = list_studies(reader, upper)
    below = qido_params(lower)
    if below.get("includefield") != "all":  # the attributes of the levels above, as every
        # server returns them for a plain search (Orthanc leaves them out within a study)
        upper_tags = [t for up in _ABOVE[level] for t in DEFAULT_TAGS[up]]
        below["includefield"] = ",".join(filter(None, [below.get("includefield"), *(
            tag_hex(t) for t in upper_tags)]))
    params = tuple(sorted(below.items()))
    if level == "study":
        params = tuple(sorted(qido_params(filters).items()))
    count_tag = {"study": None, "series": _N_SERIES, "instance": _N_INSTANCES}[level]
    partitions: list[Partition] = []
    chunk: list[tuple[str, int | None]] = []
    size = 0

    def close() -> None:
        nonlocal chunk, size
        if chunk:
            uids = tuple(uid for uid, _ in chunk)
            counts = tuple(n for _, n in chunk)
            known = None if any(n is None for n in counts) else sum(n or 0 for n in counts)
            if level == "study":
                known = len(uids)
            digest = hashlib.sha1(
                "\n".join((level, str(metadata), repr(params), *uids)).encode()).hexdigest()
            partitions.append(Partition(f"{level}-{digest[:20]}", uids, known, counts, params))
        chunk, size = [], 0

    weighed: list[tuple[str, int | None, int]] = []
    for row in studies:
        n = 1 if count_tag is None else _count(row, count_tag)
        if n == 0:
            continue  # an empty study has no rows at this level
        weight = n if n is not None else max(1, rows_per_partition // 20)
        weighed.append((str(_first(row, _STUDY_UID)), n, weight))
    total = sum(w for _, _, w in weighed)
    parts = -(-total // max(1, rows_per_partition))
    if balance > 1:
        parts = -(-parts // balance) * balance
    # study i joins part floor(rows before it * parts / total): even parts, whole studies
    before = 0
    current = 0
    for uid, n, weight in weighed:
        part = before * parts // max(1, total)
        if chunk and part != current:
            close()
        current = part
        chunk.append((uid, n))
        size += weight
        before += weight
    close()
    return partitions


# --------------------------------------------------------------------------- fetching

def _fetch_qido(reader: Reader, partition: Partition, level: str) -> list[dict]:
    """The QIDO rows of a partition: several studies per request when their counts fit a
    page (UID list matching), else per study, page by page (a study too big for a few pages
    goes per series)."""
    params = dict(partition.params)
    uid_tag = _UID_TAGS[level]
    if level == "study":
        out: list[dict] = []
        uids = list(partition.study_uids)
        for start in range(0, len(uids), _UIDS_PER_REQUEST):
            chunk = uids[start:start + _UIDS_PER_REQUEST]
            rows, _ = reader.every("studies", {**params, "StudyInstanceUID": ",".join(chunk)},
                                   uid_tag, len(chunk))
            out.extend(rows)
        return out
    path = "series" if level == "series" else "instances"
    counts = partition.counts or (None,) * len(partition.study_uids)
    filtered = any(key != "includefield" for key in params)
    out = []
    group: list[str] = []
    expected = 0

    def flush() -> None:
        nonlocal group, expected
        if len(group) > 1 and reader.uid_lists:
            try:
                rows, complete = reader.every(
                    path, {**params, "StudyInstanceUID": ",".join(group)}, uid_tag,
                    None if filtered else expected)
            except DICOMwebError:
                rows, complete = [], False
            if complete and (len(rows) >= expected or (filtered and rows)):
                out.extend(rows)
                group, expected = [], 0
                return
            reader.uid_lists = False  # the server does not match UID lists: one study each
        for uid in group:
            out.extend(_one_study(reader, uid, level, params, None))
        group, expected = [], 0

    for uid, n in zip(partition.study_uids, counts, strict=True):
        if n is None or n > reader.limit:
            flush()
            out.extend(_one_study(reader, uid, level, params, None if filtered else n))
            continue
        if expected + n > reader.limit or len(group) >= _UIDS_PER_REQUEST:
            flush()
        group.append(uid)
        expected += n
    flush()
    return out


def _one_study(reader: Reader, study: str, level: str, params: Mapping[str, str],
               expected: int | None) -> list[dict]:
    uid_tag = _UID_TAGS[level]
    path = ResourcePath().search(level)
    params = {**params, "StudyInstanceUID": study}
    if expected is not None and expected > 2 * reader.limit and level == "instance":
        return _per_series(reader, study, params)
    rows, complete = reader.every(path, params, uid_tag, expected)
    if complete:
        return _with_uid(rows, _STUDY_UID, study)
    if level == "instance":
        return _per_series(reader, study, params)
    warnings.warn(f"study {study}: the server ignores 'offset' and caps 'limit'; "
                  f"{len(rows)} series read, more may exist", RuntimeWarning, stacklevel=4)
    return _with_uid(rows, _STUDY_UID, study)


def _with_uid(rows: list[dict], key: str, uid: str) -> list[dict]:
    """``rows`` with the UID ``key`` set where the answer left it out (answers within a study
    or series need not repeat its UID)."""
    for row in rows:
        if not _first(row, key):
            row[key] = {"vr": "UI", "Value": [uid]}
    return rows


def _per_series(reader: Reader, study: str, params: Mapping[str, str]) -> list[dict]:
    series_rows, _ = reader.every(ResourcePath(study).search("series"), {}, _SERIES_UID)
    out: list[dict] = []
    for row in series_rows:
        series = _first(row, _SERIES_UID)
        if series is None:
            continue
        expected = _count(row, tag_hex(tag_of("NumberOfSeriesRelatedInstances")))
        rows, complete = reader.every(ResourcePath().search("instance"),
                                      {**params, "StudyInstanceUID": study,
                                       "SeriesInstanceUID": str(series)},
                                      _UID_TAGS["instance"],
                                      None if params else expected)
        if not complete:
            warnings.warn(f"series {series}: the server ignores 'offset' and caps 'limit'; "
                          f"{len(rows)} instances read, more may exist", RuntimeWarning,
                          stacklevel=4)
        out.extend(_with_uid(_with_uid(rows, _SERIES_UID, str(series)), _STUDY_UID, study))
    return out


def _fetch_metadata(reader: Reader, partition: Partition) -> list[dict]:
    """WADO-RS metadata of a partition's instances, one request per series."""
    params = dict(partition.params)
    params.pop("includefield", None)
    out: list[dict] = []
    for study in partition.study_uids:
        series_rows, _ = reader.every(ResourcePath(study).search("series"), params, _SERIES_UID)
        for row in series_rows:
            series = _first(row, _SERIES_UID)
            if series is not None:
                out.extend(reader.get(ResourcePath(study, str(series)).child("metadata")))
    return out


def fetch_objects(client: DicomwebClient, partition: Partition, level: str = "instances",
                  metadata: bool = False, reader: Reader | None = None) -> list[dict]:
    """The DICOM JSON objects of one partition: its QIDO rows at ``level``, or with
    ``metadata=True`` the WADO-RS metadata of its instances (one request per series)."""
    reader = reader or Reader(client)
    if metadata:
        return _fetch_metadata(reader, partition)
    return _fetch_qido(reader, partition, level_name(level))

