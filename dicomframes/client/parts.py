"""The files of a harvested Parquet dataset folder: its parts, its journal and its mirror
state (shared by :mod:`.harvest`, which writes a dataset, and :mod:`.mirror`, which keeps it
current).

* ``part-<key>.parquet``: one file per partition, written atomically (temporary name, rename;
  not flushed with fsync: a rerun checks the parts instead);
* ``_harvest.jsonl``: a header line (server, level, filters), then one line per part written;
* ``_mirror.json``: the archive state the dataset reflects (the change feed's Sequence, or the
  studies' counts), whether the harvest is complete and whether updates were applied.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ..convert.arrow import conform, ordered_schema, require_pyarrow
from ..convert.link import ATTRS_KEY
from ..convert.tables import to_dataframe

__all__ = []

JOURNAL = "_harvest.jsonl"
MIRROR = "_mirror.json"


def typed_frame(objs: list[dict[str, Any]], level: str) -> pd.DataFrame:
    """``to_dataframe`` of a partition's objects, whose bad values become NA quietly (as
    documented for harvests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return to_dataframe(objs, level=level)


def write_part(table: Any, target: Path) -> None:
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


def intact(folder: Path, entry: dict[str, Any]) -> bool:
    """True when the part of a journal entry is there, readable, with the rows it had (after
    a power cut, a part may be missing or cut short although its journal line is there)."""
    import pyarrow.parquet as pq

    try:
        return bool(pq.read_metadata(folder / entry["file"]).num_rows == int(entry["rows"]))
    except (OSError, ValueError, KeyError, TypeError):  # pyarrow's errors are among these
        return False


def arrow_table(frame: pd.DataFrame, schema: Any, url: str | None = None) -> Any:
    """``frame`` (already conformed to ``schema``) as an Arrow table of that schema; with
    ``url``, carrying the link pandas restores (``pd.read_parquet(folder).attrs`` names the
    server, its URL only, never a credential), so ``df.dicom`` works on the dataset."""
    pa = require_pyarrow()
    frame = frame.copy(deep=False)
    frame.attrs = {}  # the live client belongs to the process, not to the file
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    if url is None:
        return table
    attrs = json.dumps({ATTRS_KEY: {"url": url}}).encode()
    return table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          b"PANDAS_ATTRS": attrs})


class Journal:
    """``_harvest.jsonl``: a header line, then one line per partition written."""

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.path = folder / JOURNAL
        self.header = header
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
        """Append the line of a part written."""
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            self.done[entry["key"]] = entry

    def rewrite(self, entries: list[dict[str, Any]]) -> None:
        """Replace every part line at once (temporary file, rename)."""
        temp = self.path.with_name(f".{self.path.name}.tmp")
        temp.write_text("".join(json.dumps(line) + "\n" for line in [self.header, *entries]),
                        encoding="utf-8")
        os.replace(temp, self.path)
        self.done = {entry["key"]: entry for entry in entries}


def file_of(key: str) -> str:
    """The file name of the part ``key``."""
    return f"part-{key}.parquet"


def merge_schema(schema: Any, other: Any) -> Any:
    """``schema`` with the fields of ``other`` it lacks, in the canonical order."""
    extra = [f for f in other if f.name not in schema.names]
    return ordered_schema([*schema, *extra]) if extra else schema


def finish_parts(folder: Path, schema: Any, entries: list[dict[str, Any]]) -> tuple[int, int]:
    """Rewrite the parts written before the schema grew; (rows, parts)."""
    import pyarrow.parquet as pq

    rows = 0
    for entry in entries:
        target = folder / entry["file"]
        if not pq.read_schema(target).remove_metadata().equals(schema.remove_metadata()):
            table = pq.read_table(target)
            link = (table.schema.metadata or {}).get(b"PANDAS_ATTRS")
            url = json.loads(link).get(ATTRS_KEY, {}).get("url") if link else None
            write_part(arrow_table(conform(table.to_pandas(), schema), schema, url), target)
        rows += int(entry["rows"])
    return rows, len(entries)


def read_state(folder: Path) -> dict[str, Any]:
    """The folder's mirror state ({} when it has none)."""
    try:
        state = json.loads((folder / MIRROR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Replace the folder's mirror state atomically."""
    temp = folder / f".{MIRROR}.tmp"
    temp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(temp, folder / MIRROR)
