"""Keeping a harvested Parquet dataset current: ``client.harvest(path, ..., update=True)``.

A harvest records in its folder (``_mirror.json``) the archive state it started from, taken
*before* any row is read, so that whatever changes while it reads is seen again later:

* ``changefeed``: the Sequence of the server's latest change feed entry (the Azure DICOM
  service model, :mod:`dicomframes.client.changefeed`);
* ``counts``: for a server without a feed (Orthanc, Google Cloud), every study's
  NumberOfStudyRelatedInstances, NumberOfStudyRelatedSeries and StudyDate.

An update finds the studies that changed since: the studies named by the feed's entries after
the recorded Sequence (requests grow with the changes: one to pin the latest entry, one to
find the start, one per 200 entries), or, without a feed, the studies whose counts or date
differ from the recorded ones, new studies and removed studies (requests grow with the
archive's studies, a page per 1,000, not with its instances). It then fetches those studies'
rows again exactly as a harvest fetches them (same partitions, same queries, same typing),
removes their old rows from the parts and writes the new ones, so the dataset holds what a
fresh harvest would, with the same schema. Studies are the unit: one changed instance fetches
its study's rows again.

The counts comparison cannot see an instance replaced by another with the same UID (delete,
then store) when the study's counts and date stay the same; the feed sees it.

Crash safety: the recorded state advances only after every part is written; an interrupted
update leaves the old state, and the next update finds the same studies (and any newer ones)
and redoes them; rows are removed before they are added, so nothing is counted twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..convert.arrow import conform, ordered_schema, schema_for, unify
from ..errors import ChangeFeedUnavailable, DICOMwebError
from ..standard.tags import tag_hex, tag_of
from .changefeed import FeedReader
from .partitions import Reader, fetch_objects, list_studies, plan_partitions, split_filters
from .parts import (
    Journal,
    arrow_table,
    file_of,
    typed_frame,
    write_part,
    write_state,
)
from .qido import qido_params
from .surface import DicomwebClient

__all__ = []

_STUDY_UID = tag_hex(tag_of("StudyInstanceUID"))
_COUNTED = [tag_hex(tag_of(k)) for k in ("NumberOfStudyRelatedInstances",
                                          "NumberOfStudyRelatedSeries", "StudyDate")]
_STUDIES_PER_PLAN = 40  # study UIDs per planning query (keeps its URL short)


@dataclass(frozen=True)
class Applied:
    """What an update did: ``method`` ("changefeed" or "counts"), studies fetched again,
    parts written, and the dataset's rows and parts afterwards."""

    method: str
    studies: int
    written: int
    rows: int
    parts: int


def _value(row: dict[str, Any], key: str) -> Any:
    values = (row.get(key) or {}).get("Value") or [None]
    return values[0]


def study_counts(reader: Reader) -> dict[str, list[Any]]:
    """Every study of the archive -> [instances, series, StudyDate] as the server counts
    them (one listing of the studies, by StudyDate ranges)."""
    return {str(_value(row, _STUDY_UID)): [_value(row, key) for key in _COUNTED]
            for row in list_studies(reader, {}) if _value(row, _STUDY_UID)}


def pin_archive(client: DicomwebClient, reader: Reader) -> dict[str, Any]:
    """The archive state to record before a harvest reads: the change feed's latest
    Sequence, or (no feed) the studies' counts."""
    feed = FeedReader(client)
    try:
        last = feed.latest()
        return {"method": "changefeed", "sequence": int(last["Sequence"]) if last else 0}
    except ChangeFeedUnavailable:
        return {"method": "counts", "studies": study_counts(reader)}
    finally:
        reader.requests += feed.requests


def _changed(client: DicomwebClient, reader: Reader, pin: dict[str, Any], progress: bool
             ) -> tuple[set[str], dict[str, Any]] | None:
    """(studies changed since ``pin``, the state now); None when they cannot be told (the
    feed was reset or is gone, an unknown record)."""
    if pin.get("method") == "changefeed":
        feed = FeedReader(client)
        try:
            last = feed.latest()
            now = int(last["Sequence"]) if last else 0
            if now < int(pin.get("sequence", 0)):
                return None  # a feed that went back: another archive, or a rebuilt one
            studies: set[str] = set()
            bar = _bar(progress, now - int(pin["sequence"]))
            try:
                for page in feed.entries(int(pin["sequence"]), now, bar=bar):
                    studies.update(str(e["StudyInstanceUid"]) for e in page)
            finally:
                if bar is not None:
                    bar.close()
        except ChangeFeedUnavailable:
            return None
        finally:
            reader.requests += feed.requests
        return studies, {"method": "changefeed", "sequence": now}
    if pin.get("method") == "counts":
        now_counts = study_counts(reader)
        before = pin.get("studies") or {}
        studies = {uid for uid in set(before) | set(now_counts)
                   if before.get(uid) != now_counts.get(uid)}
        return studies, {"method": "counts", "studies": now_counts}
    return None


def _bar(progress: bool, total: int) -> Any:
    if not progress or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=" entries", desc="change feed", leave=False)


def _refetch(client: DicomwebClient, reader: Reader, studies: list[str], level: str,
             metadata: bool, filters: dict[str, Any], rows_per_partition: int
             ) -> dict[str, list[dict[str, Any]]]:
    """The objects of ``studies`` as a harvest fetches them, per partition key; a study
    that no longer matches the filters (or is gone) has none."""
    row_level = "instance" if metadata else level
    upper = qido_params(split_filters(level, filters)[0])
    upper["includefield"] = ",".join(filter(None, [
        upper.get("includefield"), "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries"]))
    out: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(studies), _STUDIES_PER_PLAN):
        chunk = studies[start:start + _STUDIES_PER_PLAN]
        # one listing of the chunk's studies that still match (a harvest lists them by
        # StudyDate ranges; these are named, so one request holds them all)
        listed = _listed(reader, upper, chunk)
        plan = plan_partitions(client, level, metadata=metadata, reader=reader,
                               rows_per_partition=rows_per_partition, studies=listed,
                               **filters)
        for partition in plan:
            out[partition.key] = fetch_objects(client, partition, row_level, metadata, reader)
    return out


def _listed(reader: Reader, params: dict[str, str], chunk: list[str]) -> list[dict]:
    """The studies of ``chunk`` that exist and match ``params`` (UID list matching; one
    request per study when the server refuses lists)."""
    if reader.uid_lists:
        try:
            return reader.page("studies", {**params, "StudyInstanceUID": ",".join(chunk)},
                               0, max(len(chunk), 1))
        except DICOMwebError:
            reader.uid_lists = False
    return [row for uid in chunk
            for row in reader.page("studies", {**params, "StudyInstanceUID": uid}, 0, 1)]


def update_dataset(client: DicomwebClient, folder: Path, journal: Journal,
                   state: dict[str, Any], *, level: str, metadata: bool,
                   filters: dict[str, Any], reader: Reader, rows_per_partition: int = 2000,
                   progress: bool = True) -> Applied | None:
    """Apply to the complete harvest in ``folder`` what changed in the archive since its
    recorded state (see this module's docstring). None: the change cannot be told (the
    caller harvests again)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if "StudyInstanceUID" in filters:
        raise ValueError("harvest(update=True) selects studies itself: a StudyInstanceUID "
                         "filter cannot be updated; harvest without update=True")
    found = _changed(client, reader, state.get("pin") or {}, progress)
    if found is None:
        return None
    studies, pin = found
    method = str(pin["method"])
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        return None
    schema = pq.read_schema(files[0]).remove_metadata()
    written = 0
    if studies:
        fetched = _refetch(client, reader, sorted(studies), level, metadata, filters,
                           rows_per_partition)
        row_level = "instance" if metadata else level
        frames = {}
        for key, objs in fetched.items():
            frame = typed_frame(objs, row_level)
            schema = unify(schema, frame)
            frames[f"u{hashlib.sha1(key.encode()).hexdigest()[:16]}"] = frame
        # old rows out first (an interruption then loses rows the next update fetches
        # again; never rows counted twice)
        wanted = sorted(studies)
        values = _string_array(wanted)
        for target in files:
            if "StudyInstanceUID" not in pq.read_schema(target).names:
                continue
            column = pq.read_table(target, columns=["StudyInstanceUID"]).column(0)
            if not len(column) or not pc.any(pc.is_in(column, value_set=values)).as_py():
                continue  # untouched: only its UID column was read
            table = pq.read_table(target)
            hit = pc.is_in(table.column("StudyInstanceUID"), value_set=values)
            kept = table.filter(pc.invert(hit))
            if kept.num_rows:
                write_part(kept, target)
            else:
                target.unlink()
        for key, frame in frames.items():
            if len(frame):
                write_part(arrow_table(conform(frame, schema), schema), folder / file_of(key))
                written += 1
    row_level = "instance" if metadata else level
    base = schema_for(row_level, metadata, includefield=filters.get("includefield"),
                      filters=[k for k in filters if k != "includefield"])
    rows, parts = _settle(folder, journal, base, schema)
    write_state(folder, {"pin": pin, "complete": True, "updated": True})
    return Applied(method, len(studies), written, rows, parts)


def _string_array(values: list[str]) -> Any:
    import pyarrow as pa

    return pa.array(values, type=pa.string())


def _settle(folder: Path, journal: Journal, base: Any, schema: Any) -> tuple[int, int]:
    """Every part in the schema a fresh harvest would have (an empty dataset keeps one empty
    part, as a harvest does), and the journal listing the parts as they are. (rows, parts).

    A fresh harvest's schema is ``base`` plus the columns its rows hold: a column beyond
    ``base`` stays while a row has a value in it (one whose rows were all removed goes)."""
    import pyarrow.parquet as pq

    files = sorted(folder.glob("part-*.parquet"))
    if len(files) > 1:
        for target in files:
            if pq.read_metadata(target).num_rows == 0:
                target.unlink()
        files = sorted(folder.glob("part-*.parquet"))
    extras = [f.name for f in schema if f.name not in base.names]
    used: set[str] = set()
    for target in files:
        wanted = [name for name in extras if name not in used]
        if not wanted:
            break
        table = pq.read_table(target, columns=wanted)
        used.update(name for name in wanted
                    if table.column(name).null_count < table.num_rows)
    schema = ordered_schema([*base, *(f for f in schema if f.name in used)])
    entries = []
    rows = 0
    for target in files:
        if not pq.read_schema(target).remove_metadata().equals(schema):
            frame = pq.read_table(target).to_pandas()
            write_part(arrow_table(conform(frame, schema), schema), target)
        count = pq.read_metadata(target).num_rows
        rows += count
        entries.append({"key": target.name[5:-8], "file": target.name, "rows": count})
    if not files:
        key = "empty"
        import pandas as pd

        write_part(arrow_table(conform(pd.DataFrame(), schema), schema), folder / file_of(key))
        entries.append({"key": key, "file": file_of(key), "rows": 0})
    journal.rewrite(entries)
    return rows, len(entries)
