"""QIDO matching beyond one column: combined date-time ranges and keys inside sequences.

**Combined date-time matching** (PS3.4 C.2.2.2.5): when a date attribute and its time (e.g.
``StudyDate=20200101-20200131&StudyTime=1000-1800``) are both given as ranges, they make one
range of date-times: from 1 January 10:00 to 31 January 18:00 (not "10:00 to 18:00 on each
day"). Pairs: Study, Series, Performed Procedure Step Start and Content Date/Time.

**Sequence matching** (PS3.4 C.2.2.2.6, PS3.18 8.3.4.1): a key ``Sequence.Attribute`` (deeper
paths too, keywords or tags, e.g. ``ReferencedStudySequence.ReferencedSOPInstanceUID`` or
``RequestAttributesSequence.ScheduledProcedureStepID``) matches an entity when one item of the
sequence, in any of its instances, has an attribute that matches: UIDs (a list, no wildcards),
person names (case-insensitive, wildcards) and other strings (wildcards ``*`` ``?``), exact
otherwise. Matched with SQLite's JSON functions on the stored DICOM JSON of each instance.
"""

from __future__ import annotations

import re
from typing import Any

from ..standard.tags import UnknownAttribute, keyword_of, tag_hex, tag_of, vr_of
from ..standard.temporal import normalize_date, normalize_time
from ..standard.uids import validate_uid
from .budget import MAX_QUERY_VALUES, MAX_SEQUENCE_DEPTH

#: date keyword -> its time keyword (PS3.4 C.2.2.2.5 combined datetime matching)
DATE_TIME_PAIRS = {"StudyDate": "StudyTime", "SeriesDate": "SeriesTime",
                   "PerformedProcedureStepStartDate": "PerformedProcedureStepStartTime",
                   "ContentDate": "ContentTime"}
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})


class MatchError(ValueError):
    """A matching key or value that cannot be used (a 400 naming it)."""


def is_range(value: str) -> bool:
    """True when a DA or TM query value is a range (``a-b``, ``a-`` or ``-b``)."""
    return "-" in value


def combined_datetime(date_col: str, time_col: str, date_value: str, time_value: str,
                      names: tuple[str, str]) -> tuple[str, list[Any]]:
    """SQL and arguments of one date-time range made of a date range and a time range (the
    columns hold ``YYYYMMDD`` and normalised ``HHMMSS.ffffff`` text)."""
    d_lo, _, d_hi = (v.strip() for v in date_value.partition("-"))
    t_lo, _, t_hi = (v.strip() for v in time_value.partition("-"))
    if not (d_lo or d_hi) or not (t_lo or t_hi):
        raise MatchError(f"{names[0]}={date_value!r} & {names[1]}={time_value!r}: give ranges "
                         "a-b, a- or -b")
    try:
        date_low = normalize_date(d_lo) if d_lo else None
        date_high = normalize_date(d_hi) if d_hi else None
    except ValueError:
        raise MatchError(f"{names[0]}: {date_value!r} is not a date range "
                         "(YYYYMMDD-YYYYMMDD)") from None
    try:
        time_low = normalize_time(t_lo) if t_lo else normalize_time("00")
        time_high = normalize_time(t_hi, upper=True) if t_hi else normalize_time("23", True)
    except ValueError:
        raise MatchError(f"{names[1]}: {time_value!r} is not a time range "
                         "(HHMMSS-HHMMSS)") from None
    # a missing time counts as any time of its day
    stamp = f"({date_col} || COALESCE({time_col}, ?))"
    clauses, args = [], []
    if date_low is not None:
        clauses.append(f"{stamp} >= ?")
        args += ["235959.999999", date_low + time_low]
    if date_high is not None:
        clauses.append(f"{stamp} <= ?")
        args += ["000000.000000", date_high + time_high]
    return " AND ".join(clauses), args


def sequence_path(key: str) -> list[int]:
    """The tags of a dotted matching key (``Sequence.Attribute``): each but the last must be a
    sequence (SQ), the last must not be (MatchError naming the step)."""
    steps = key.split(".")
    if len(steps) - 1 > MAX_SEQUENCE_DEPTH:
        raise MatchError(f"{key[:80]}...: the key goes through {len(steps) - 1} sequences: at "
                         f"most {MAX_SEQUENCE_DEPTH}")
    tags = []
    for step in steps:
        try:
            tags.append(tag_of(step.strip()))
        except (UnknownAttribute, KeyError, ValueError):
            raise MatchError(f"{key}: {step!r} is not a DICOM keyword or tag") from None
    for tag in tags[:-1]:
        if vr_of(tag) != "SQ":
            raise MatchError(f"{key}: {keyword_of(tag) or tag_hex(tag)} is not a sequence "
                             "(only sequence attributes can hold nested keys)")
    if vr_of(tags[-1]) == "SQ":
        raise MatchError(f"{key}: matching a whole sequence item is not supported; name an "
                         "attribute inside it")
    return tags


def _glob(value: str) -> str:
    return value.replace("[", "[[]")


def sequence_match(key: str, value: str, data_ids: str) -> tuple[str, list[Any]]:
    """SQL (an EXISTS) and arguments matching ``key`` = ``value`` inside sequences, over the
    instances whose ``instance_data`` ids the SQL expression ``data_ids`` gives (a column, or
    a sub-query)."""
    tags = sequence_path(key)
    vr = vr_of(tags[-1])
    joins = ["json_each(d.metadata, '$.\"" + tag_hex(tags[0]) + "\".Value') s0"]
    for depth, tag in enumerate(tags[1:-1], start=1):
        joins.append(f"json_each(s{depth - 1}.value, '$.\"{tag_hex(tag)}\".Value') s{depth}")
    last = len(tags) - 2
    joins.append(f"json_each(s{last}.value, '$.\"{tag_hex(tags[-1])}\".Value') v")
    if vr == "PN":
        item = "lower(COALESCE(json_extract(v.value, '$.Alphabetic'), v.value))"
    else:
        item = "v.value"
    head = f"EXISTS (SELECT 1 FROM instance_data d, {', '.join(joins)} WHERE d.id IN " \
        f"({data_ids}) AND "
    if vr == "UI":
        if "*" in value or "?" in value:
            raise MatchError(f"{key}: wildcards are not allowed in UIDs (use a list a,b,c)")
        uids = [u for u in re.split(r"[,\\]", value) if u]
        if not uids or len(uids) > MAX_QUERY_VALUES:
            raise MatchError(f"{key}: give from 1 to {MAX_QUERY_VALUES} UIDs, not "
                             f"{len(uids)}")
        for uid in uids:
            try:
                validate_uid(uid, key)
            except ValueError as exc:
                raise MatchError(str(exc)) from None
        return head + f"{item} IN ({', '.join('?' * len(uids))}))", uids
    if vr in _NUMBER_VRS:
        try:
            number: Any = float(value) if vr in ("FL", "FD") else int(value)
        except ValueError:
            raise MatchError(f"{key}: {value!r} is not a number") from None
        return head + f"{item} = ?)", [number]
    text = value.split("=")[0].strip().lower() if vr == "PN" else value
    if "*" in text or "?" in text:
        return head + f"{item} GLOB ?)", [_glob(text)]
    return head + f"{item} = ?)", [text]
