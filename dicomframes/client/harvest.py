"""``client.harvest``: a whole archive (or the part filters select) as a Parquet dataset.

The archive is planned into partitions (:func:`plan_partitions`, in
:mod:`dicomframes.client.partitions`: StudyDate ranges halved until each fits a page, then
groups of whole studies), a few partitions are fetched in parallel, and each is written as
one Parquet file as soon as it arrives, so memory holds a few partitions whatever the size of
the archive. Files are written under a temporary name and renamed; a journal
(``_harvest.jsonl``) lists the partitions done, so a rerun after an interruption fetches only
the others and never writes a row twice. Nothing is flushed with fsync (a flush per part cost
about as much as typing its rows): a rerun checks every part the journal lists (readable, with
its rows) and fetches again any that a power cut left missing or cut short.

The column types are those of :mod:`dicomframes.convert.arrow` (one schema for every file).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..convert.arrow import (
    conform,
    field_for,
    ordered_schema,
    require_pyarrow,
    schema_for,
    unify,
)
from ..convert.link import link_of
from ..convert.tables import to_dataframe
from ..standard.attributes import level_name
from ..standard.dicomjson import gc_paused
from .concurrency import cpu_default, throttled_so_far, workers_for
from .partitions import Partition, Reader, fetch_objects, plan_partitions
from .surface import DicomwebClient

__all__ = ["JOURNAL", "HarvestSummary", "fetch_partition", "harvest"]

JOURNAL = "_harvest.jsonl"
_FORMAT = 1


def _typed(objs: list[dict[str, Any]], level: str) -> pd.DataFrame:
    """``to_dataframe`` of a partition's objects, whose bad values become NA quietly (as
    documented for harvests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return to_dataframe(objs, level=level)


def fetch_partition(client: DicomwebClient, partition: Partition, level: str = "instances",
                    metadata: bool = False, *, schema: Any = None,
                    reader: Reader | None = None) -> pd.DataFrame:
    """The rows of one partition as a DataFrame, typed like ``to_dataframe``.

    With ``schema`` (a ``pyarrow.Schema``, e.g. :func:`schema_for`): exactly its columns,
    missing ones as typed nulls, so every partition has the same dtypes. Without: the
    columns of :func:`schema_for` plus any others the server sent (typed by their VR).
    ``metadata=True`` gives the WADO-RS metadata, one row per instance.
    """
    level = "instance" if metadata else level_name(level)
    frame = _typed(fetch_objects(client, partition, level, metadata, reader), level)
    if schema is None:
        params = dict(partition.params)
        schema = unify(schema_for(level, metadata, includefield=params.get("includefield"),
                                  filters=[k for k in params if k != "includefield"]), frame)
    return conform(frame, schema)


# --------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class HarvestSummary:
    """What a harvest did: rows and parts in the dataset, parts fetched by this run (the
    others were done by an earlier run), HTTP requests, seconds, the dataset's folder, the
    requests the server throttled (429/503, each waited for and sent again) and the requests
    kept in flight."""

    rows: int
    parts: int
    fetched: int
    requests: int
    seconds: float
    path: str
    throttled: int = 0
    workers: int = 0

    def __str__(self) -> str:
        throttled = f", {self.throttled} throttled" if self.throttled else ""
        return (f"{self.rows} rows in {self.parts} parts ({self.fetched} fetched now, "
                f"{self.requests} requests{throttled}, {self.seconds:.1f} s) in {self.path}")


def _write(table: Any, target: Path) -> None:
    """Write a Parquet file atomically: a temporary name (ignored by readers: it starts with
    ".") then a rename. Not flushed to disk (fsync): a rerun checks the parts instead."""
    import pyarrow.parquet as pq

    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, temp)
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()


def _intact(folder: Path, entry: dict[str, Any]) -> bool:
    """True when the part of a journal entry is there, readable, with the rows it had (after
    a power cut, a part may be missing or cut short although its journal line is there)."""
    import pyarrow.parquet as pq

    try:
        return bool(pq.read_metadata(folder / entry["file"]).num_rows == int(entry["rows"]))
    except (OSError, ValueError, KeyError, TypeError):  # pyarrow's errors are among these
        return False


def _table(frame: pd.DataFrame, schema: Any) -> Any:
    pa = require_pyarrow()
    frame = frame.copy(deep=False)
    frame.attrs = {}  # the link belongs to the process, not to the file
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


class _Journal:
    """``_harvest.jsonl``: a header line, then one line per partition written."""

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.path = folder / JOURNAL
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            first = json.loads(lines[0]) if lines else {}
            if first and first != header:
                raise ValueError(
                    f"{folder} holds a harvest of {first.get('url')} at level "
                    f"{first.get('level')} (metadata={first.get('metadata')}, filters "
                    f"{first.get('filters')}): harvest into another folder")
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption
                self.done[entry["key"]] = entry
        if not self.path.exists() or not self.path.read_text(encoding="utf-8").strip():
            self.path.write_text(json.dumps(header) + "\n", encoding="utf-8")
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            self.done[entry["key"]] = entry


def _file_of(key: str) -> str:
    return f"part-{key}.parquet"


def harvest(client: DicomwebClient, path: str | os.PathLike[str], level: str = "instances",
            metadata: bool = False, *, workers: int | None = None, progress: bool = True,
            rows_per_partition: int = 2000, page_size: int = 1000,
            **filters: Any) -> HarvestSummary:
    """Write the archive (or the part ``filters`` select) at ``level`` as a Parquet dataset
    in the folder ``path``, one file per partition; see this module's docstring.

    ``level``: "studies", "series" or "instances"; ``metadata=True`` writes the full WADO-RS
    metadata of every instance instead. ``workers`` partitions are fetched in parallel
    (default: on a local link one per CPU, from 2 to 4, since the typing of the rows holds
    this process's interpreter lock and more requests in flight only wait; across a network
    more, to hide the round trip measured by the plan's requests, at most 8: see
    :mod:`dicomframes.client.concurrency`); ``progress`` shows a tqdm bar.
    Rerun with the same arguments after an interruption: it continues where it stopped.
    Returns a :class:`HarvestSummary`.
    """
    import pyarrow.parquet as pq

    started = time.perf_counter()
    throttled_before = throttled_so_far(client)
    chosen = workers
    workers = max(1, workers if workers is not None else workers_for(client, cpu_default(), 8))
    level = level_name(level)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    header = {"format": _FORMAT, "url": client.url, "level": level, "metadata": bool(metadata),
              "filters": json.loads(json.dumps(filters, default=str, sort_keys=True))}
    journal = _Journal(folder, header)
    reader = Reader(client, page_size)
    plan = plan_partitions(client, level, metadata=metadata, reader=reader,
                           rows_per_partition=rows_per_partition, balance=workers,
                           **filters)
    keys = {p.key for p in plan}
    for stale in folder.glob("part-*.parquet"):  # parts of an older plan would repeat rows
        if stale.name[5:-8] not in keys:
            stale.unlink()
    todo = [p for p in plan if p.key not in journal.done
            or not _intact(folder, journal.done[p.key])]
    for partition in todo:  # fetched again: the journal's line no longer counts
        journal.done.pop(partition.key, None)
    if chosen is None:  # the plan's requests measured the round trip
        workers = workers_for(client, cpu_default(), 8)
    row_level = "instance" if metadata else level
    base = schema_for(row_level, metadata, includefield=filters.get("includefield"),
                      filters=[k for k in filters if k != "includefield"])
    schema = base
    for entry in journal.done.values():
        if entry["key"] in keys and (folder / entry["file"]).exists():
            schema = _merge(schema, pq.read_schema(folder / entry["file"]))

    def store(partition: Partition, objs: list[dict[str, Any]]) -> None:
        """Type, conform and write one partition (in this thread: typing holds the
        interpreter lock, so it gains nothing from more threads)."""
        nonlocal schema
        frame = _typed(objs, row_level)
        del objs
        extra = [f for f in _fields(frame) if f.name not in schema.names]
        if extra:
            schema = ordered_schema([*schema, *extra])
        table = _table(conform(frame, schema), schema)
        del frame
        _write(table, folder / _file_of(partition.key))
        journal.add({"key": partition.key, "file": _file_of(partition.key),
                     "rows": table.num_rows})

    # ``workers`` threads fetch (HTTP and JSON) while this one types and writes: the server
    # is never idle, and at most workers + 1 fetched partitions wait in memory. The garbage
    # collector pauses: it would re-scan those partitions' many objects (no cycles) over
    # and over (a fifth of the time of a 10,000-row harvest here)
    bar = _bar(progress, len(plan), len(plan) - len(todo), row_level)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, gc_paused():
            queue = iter(todo)
            fetching: deque[tuple[Partition, Future[list[dict[str, Any]]]]] = deque()

            def fetch_next() -> None:
                partition = next(queue, None)
                if partition is not None:
                    fetching.append((partition, pool.submit(
                        fetch_objects, client, partition, row_level, metadata, reader)))

            for _ in range(2 * workers):
                fetch_next()
            try:
                while fetching:
                    partition, future = fetching.popleft()
                    objs = future.result()  # raises what the fetch raised
                    fetch_next()
                    store(partition, objs)
                    if bar is not None:
                        bar.update(1)
            finally:
                for _, future in fetching:
                    future.cancel()
    finally:
        if bar is not None:
            bar.close()
    if not plan:  # an empty answer is still a dataset with the schema
        key = "empty"
        _write(_table(conform(pd.DataFrame(), schema), schema), folder / _file_of(key))
        journal.add({"key": key, "file": _file_of(key), "rows": 0})
    rows, parts = _finish(folder, schema, [journal.done[k] for k in sorted(keys)]
                          if plan else [journal.done["empty"]])
    return HarvestSummary(rows, parts, len(todo), reader.requests,
                          round(time.perf_counter() - started, 3), str(folder),
                          throttled_so_far(client) - throttled_before, workers)


def _fields(frame: pd.DataFrame) -> list[Any]:
    link = link_of(frame)
    vrs = link.vrs if link is not None else {}
    return [field_for(str(c), vrs) for c in frame.columns]


def _merge(schema: Any, other: Any) -> Any:
    extra = [f for f in other if f.name not in schema.names]
    return ordered_schema([*schema, *extra]) if extra else schema


def _bar(progress: bool, total: int, initial: int, level: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=" parts", desc=f"harvest {level}",
                leave=False)


def _finish(folder: Path, schema: Any, entries: list[dict[str, Any]]) -> tuple[int, int]:
    """Rewrite the parts written before the schema grew; (rows, parts)."""
    import pyarrow.parquet as pq

    rows = 0
    for entry in entries:
        target = folder / entry["file"]
        if not pq.read_schema(target).remove_metadata().equals(schema.remove_metadata()):
            frame = pq.read_table(target).to_pandas()
            _write(_table(conform(frame, schema), schema), target)
        rows += int(entry["rows"])
    return rows, len(entries)
