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

import gc
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..convert.arrow import conform, schema_for, unify
from ..standard.attributes import level_name
from .concurrency import cpu_default, throttled_so_far, workers_for
from .mirror import pin_archive, update_dataset
from .partitions import Partition, Reader, fetch_objects, plan_partitions
from .parts import (
    JOURNAL,
    MIRROR,
    Journal,
    arrow_table,
    file_of,
    finish_parts,
    intact,
    merge_schema,
    read_state,
    typed_frame,
    write_part,
    write_state,
)
from .surface import DicomwebClient

__all__ = ["JOURNAL", "MIRROR", "HarvestSummary", "fetch_partition", "harvest"]

_FORMAT = 1


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
    frame = typed_frame(fetch_objects(client, partition, level, metadata, reader), level)
    if schema is None:
        params = dict(partition.params)
        schema = unify(schema_for(level, metadata, includefield=params.get("includefield"),
                                  filters=list(params)), frame)
    return conform(frame, schema)


# --------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class HarvestSummary:
    """What a harvest did: rows and parts in the dataset, parts fetched by this run (the
    others were done by an earlier run), HTTP requests, seconds, the dataset's folder, the
    requests the server throttled (429/503, each waited for and sent again), the requests
    kept in flight, and how the dataset was brought up to date."""

    rows: int
    parts: int
    fetched: int
    requests: int
    seconds: float
    path: str
    throttled: int = 0
    workers: int = 0
    #: how the dataset was brought up to date: "harvest" (fetched whole or resumed),
    #: "changefeed" (the server's change feed) or "counts" (studies' counts compared)
    method: str = "harvest"
    #: studies fetched again by an update (0 for a harvest)
    changed_studies: int = 0

    def __str__(self) -> str:
        how = "" if self.method == "harvest" else (
            f", updated by {self.method}: {self.changed_studies} studies fetched again")
        throttled = f", {self.throttled} throttled" if self.throttled else ""
        return (f"{self.rows} rows in {self.parts} parts ({self.fetched} fetched now, "
                f"{self.requests} requests{throttled}, {self.seconds:.1f} s{how}) in "
                f"{self.path}")


_pause_lock = threading.Lock()
_pauses = 0  # harvests running with pause_gc=True, in every thread
_was_enabled = False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (a switch of the whole process,
    thrown only when the caller asks: ``pause_gc=True``). Overlapping blocks in several
    threads turn it back on (if it was on before the first) when the last one ends."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def harvest(client: DicomwebClient, path: str | os.PathLike[str], level: str = "instances",
            metadata: bool = False, *, workers: int | None = None, progress: bool = True,
            rows_per_partition: int = 2000, page_size: int = 1000, update: bool = False,
            pause_gc: bool = False, **filters: Any) -> HarvestSummary:
    """Write the archive (or the part ``filters`` select) at ``level`` as a Parquet dataset
    in the folder ``path``; the parameters are :func:`_harvest`'s, and ``pause_gc=True``
    turns Python's cyclic garbage collector off for the whole process while the harvest runs
    (it re-scans the fetched rows, which hold no cycles, over and over: see
    ``benchmarks/harvest.py`` for what it saves); the default leaves it alone."""
    with _collector_paused() if pause_gc else nullcontext():
        return _harvest(client, path, level, metadata, workers=workers, progress=progress,
                        rows_per_partition=rows_per_partition, page_size=page_size,
                        update=update, **filters)


def _harvest(client: DicomwebClient, path: str | os.PathLike[str], level: str = "instances",
             metadata: bool = False, *, workers: int | None = None, progress: bool = True,
             rows_per_partition: int = 2000, page_size: int = 1000, update: bool = False,
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

    ``update=True`` on a folder holding a complete harvest of the same server, level and
    filters applies only what changed since (see :mod:`dicomframes.client.mirror`: the
    server's change feed, else a comparison of the studies' counts); on any other folder it
    harvests (or resumes) as without it. A rerun *without* ``update`` on a folder that was
    updated harvests again from scratch. Returns a :class:`HarvestSummary`.
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
    journal = Journal(folder, header)
    reader = Reader(client, page_size)
    row_level = "instance" if metadata else level
    state = read_state(folder)
    if update and state.get("complete"):
        applied = update_dataset(client, folder, journal, state, level=level,
                                 metadata=metadata, filters=filters, reader=reader,
                                 rows_per_partition=rows_per_partition, progress=progress)
        if applied is not None:
            return HarvestSummary(applied.rows, applied.parts, applied.written,
                                  reader.requests, round(time.perf_counter() - started, 3),
                                  str(folder), throttled_so_far(client) - throttled_before,
                                  method=applied.method, changed_studies=applied.studies)
        state = {}  # the server's state cannot be compared with the recorded one
    if not state.get("pin") or state.get("updated"):
        # what is there is older than the pin (an updated dataset's parts follow no plan,
        # a harvest from before pins existed has none): fetched anew
        journal.rewrite([])
        state = {"pin": pin_archive(client, reader), "complete": False}
        write_state(folder, state)
    plan = plan_partitions(client, level, metadata=metadata, reader=reader,
                           rows_per_partition=rows_per_partition, balance=workers,
                           **filters)
    keys = {p.key for p in plan}
    for stale in folder.glob("part-*.parquet"):  # parts of an older plan would repeat rows
        if stale.name[5:-8] not in keys:
            stale.unlink()
    todo = [p for p in plan if p.key not in journal.done
            or not intact(folder, journal.done[p.key])]
    for partition in todo:  # fetched again: the journal's line no longer counts
        journal.done.pop(partition.key, None)
    if chosen is None:  # the plan's requests measured the round trip
        workers = workers_for(client, cpu_default(), 8)
    base = schema_for(row_level, metadata, includefield=filters.get("includefield"),
                      filters=list(filters))
    schema = base
    for entry in journal.done.values():
        if entry["key"] in keys and (folder / entry["file"]).exists():
            schema = merge_schema(schema, pq.read_schema(folder / entry["file"]))

    def store(partition: Partition, objs: list[dict[str, Any]]) -> None:
        """Type, conform and write one partition (in this thread: typing holds the
        interpreter lock, so it gains nothing from more threads)."""
        nonlocal schema
        frame = typed_frame(objs, row_level)
        del objs
        schema = unify(schema, frame)
        table = arrow_table(conform(frame, schema), schema, client.url)
        del frame
        write_part(table, folder / file_of(partition.key))
        journal.add({"key": partition.key, "file": file_of(partition.key),
                     "rows": table.num_rows})

    # ``workers`` threads fetch (HTTP and JSON) while this one types and writes: the server
    # is never idle, and at most workers + 1 fetched partitions wait in memory. The garbage
    # collector pauses: it would re-scan those partitions' many objects (no cycles) over
    # and over (a fifth of the time of a 10,000-row harvest here)
    bar = _bar(progress, len(plan), len(plan) - len(todo), row_level)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
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
        write_part(arrow_table(conform(pd.DataFrame(), schema), schema, client.url),
                   folder / file_of(key))
        journal.add({"key": key, "file": file_of(key), "rows": 0})
    rows, parts = finish_parts(folder, schema, [journal.done[k] for k in sorted(keys)]
                               if plan else [journal.done["empty"]])
    write_state(folder, {**state, "complete": True})
    return HarvestSummary(rows, parts, len(todo), reader.requests,
                          round(time.perf_counter() - started, 3), str(folder),
                          throttled_so_far(client) - throttled_before, workers)


def _bar(progress: bool, total: int, initial: int, level: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=" parts", desc=f"harvest {level}",
                leave=False)
