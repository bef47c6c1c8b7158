"""Index an existing folder of DICOM files into an archive (``dicomframes import``).

Each file is copied into the archive's layout (``files/<study>/<series>/<sop>.dcm``), or, with
``in_place=True``, linked there: a symbolic link to the original file takes the place of the
copy, so nothing is copied and the archive serves the original bytes. Deleting such an instance
removes the link, never the original; start-up repair sees the link as the instance's file. An
in-place archive therefore depends on the original files staying where they are, unchanged.

Files are stored in batches through :meth:`Archive.store_files`, the same group commit as a
STOW request: parsed, flushed together, renamed into place and indexed in one transaction, so
an interrupted import keeps every batch it finished and a rerun skips them ("already stored").
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ..standard.stow import ALREADY_EXISTS
from .index import StoreFailure
from .parsers import IMPORT_CHUNK, Job
from .storage import Archive, Stored

#: Columns of the outcome table, as :meth:`dicomframes.Client.store` has them (minus the URL).
COLUMNS = ["source", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "status",
           "reason", "message"]
STORED, ALREADY_STORED, FAILED, SKIPPED = "stored", "already stored", "failed", "skipped"
BATCH = 500


def walk(folder: Path, skip: Path | None = None) -> Iterator[Path]:
    """Every file under ``folder``, in a stable (sorted) order, leaving out ``skip`` (the
    archive's own folder, when it lies inside)."""
    for dirpath, dirs, names in os.walk(folder):
        here = Path(dirpath)
        dirs[:] = sorted(d for d in dirs if skip is None or (here / d).resolve() != skip)
        for name in sorted(names):
            yield here / name


def _row(source: Path, outcome: Stored | StoreFailure | str) -> dict[str, Any]:
    if isinstance(outcome, Stored):
        return {"source": str(source), "SOPInstanceUID": outcome.sop_instance,
                "StudyInstanceUID": outcome.study, "SeriesInstanceUID": outcome.series,
                "status": STORED, "reason": None, "message": ""}
    if isinstance(outcome, str):
        return {"source": str(source), "SOPInstanceUID": None, "StudyInstanceUID": None,
                "SeriesInstanceUID": None, "status": SKIPPED, "reason": None,
                "message": outcome}
    status = ALREADY_STORED if outcome.reason == ALREADY_EXISTS else FAILED
    return {"source": str(source), "SOPInstanceUID": outcome.sop_instance,
            "StudyInstanceUID": None, "SeriesInstanceUID": None, "status": status,
            "reason": outcome.reason, "message": str(outcome)}


class _Pending:
    """One batch of an import whose files are being copied (or linked) and parsed."""

    def __init__(self, archive: Archive, sources: list[Path], in_place: bool) -> None:
        self.sources = sources
        self.rows: dict[int, dict[str, Any]] = {}
        self.temps: list[Path] = []
        self.placed: list[int] = []
        # jobs carry paths, not contents: unbounded, and large chunks
        self.batch = archive.batch(bounded=False, chunk=IMPORT_CHUNK)
        for n, source in enumerate(sources):
            if source.name.upper() == "DICOMDIR":
                self.rows[n] = _row(source, "a DICOMDIR (an index of a DICOM medium), not an "
                                    "instance")
                continue
            temp = archive.temp_path(".import")
            self.temps.append(temp)
            self.placed.append(n)
            self.batch.add(Job(temp, source=source, link=in_place,
                               max_inflated=archive.max_inflated))
        self.batch.flush()  # before the next batch's jobs: the workers take them in order

    def store(self, archive: Archive) -> list[dict[str, Any]]:
        """Wait for the jobs, store the batch with one group commit; one row per source."""
        if self.temps:
            outcomes = archive.store_files(self.temps, prepared=self.batch.outcomes())
            for n, outcome in zip(self.placed, outcomes, strict=True):
                self.rows[n] = _row(self.sources[n], outcome)
        return [self.rows[n] for n in range(len(self.sources))]


def count_files(folder: Path, skip: Path | None = None) -> int:
    """How many files :func:`walk` gives (a walk that keeps no names: for a progress total)."""
    return sum(1 for _ in walk(folder, skip))


def _batches(paths: Iterator[Path], size: int) -> Iterator[list[Path]]:
    while batch := list(itertools.islice(paths, size)):
        yield batch


def run_import(folder: str | os.PathLike[str], data: str | os.PathLike[str] | Archive,
               in_place: bool = False, *, on_row: Callable[[dict[str, Any]], None] | None = None,
               batch_size: int = BATCH, workers: int = 1,
               progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Index every DICOM file under ``folder`` (recursively) into the archive ``data``, in
    memory that does not grow with the folder: the files are walked as they are stored, and
    each outcome row (a dict of :data:`COLUMNS`) goes to ``on_row`` (e.g. a CSV writer), never
    into a list. Returns how many files had each status. The options are
    :func:`import_folder`'s; ``progress(done, total)`` costs one more walk (to count)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    archive = data if isinstance(data, Archive) else Archive(
        data, parse_workers=workers if workers > 1 else 0)
    counts = dict.fromkeys((STORED, ALREADY_STORED, SKIPPED, FAILED), 0)
    total = count_files(root, archive.root) if progress is not None else 0
    done = 0

    def finish(batch: _Pending) -> None:
        nonlocal done
        for row in batch.store(archive):
            counts[row["status"]] += 1
            if on_row is not None:
                on_row(row)
        done += len(batch.sources)
        if progress is not None:
            progress(done, max(total, done))

    try:
        step = max(1, batch_size)
        pending: _Pending | None = None
        for sources in _batches(walk(root, skip=archive.root), step):
            if pending is None and archive.parsers is not None and len(sources) > step // 4:
                archive.parsers.start(wait=True)
            following = _Pending(archive, sources, in_place)
            if pending is not None:  # stored while the workers copy and parse the next one
                finish(pending)
            pending = following
        if pending is not None:
            finish(pending)
    finally:
        if not isinstance(data, Archive):
            archive.close()
    return counts


def import_folder(folder: str | os.PathLike[str], data: str | os.PathLike[str] | Archive,
                  in_place: bool = False, *, batch_size: int = BATCH, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Index every DICOM file under ``folder`` (recursively) into the archive ``data``.

    ``data``: an archive folder (created if needed) or an open :class:`Archive`. ``in_place``:
    link the files instead of copying them (see the module's notes). Files are stored
    ``batch_size`` at a time, each batch in one transaction; ``progress(done, total)`` is
    called after each batch. ``workers`` > 1 copies and parses the files in that many parser
    processes (:mod:`.parsers`; an open ``data`` archive uses its own), the next batch while
    the last one is being stored. Returns one row per file (columns :data:`COLUMNS`):
    ``status`` is "stored", "already stored" (that SOPInstanceUID was in the archive, or
    earlier in the folder), "skipped" (a DICOMDIR) or "failed" with the PS3.4 ``reason`` code
    and a ``message`` (not DICOM, truncated, missing UIDs...). The table holds a row per
    file: for a very large folder, :func:`run_import` streams the rows instead.
    """
    rows: list[dict[str, Any]] = []
    run_import(folder, data, in_place, on_row=rows.append, batch_size=batch_size,
               workers=workers, progress=progress)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["reason"] = df["reason"].astype("Int64")
    return df


def summary(df: pd.DataFrame) -> str:
    """One line: how many files were stored, already stored, skipped and failed."""
    counts = df["status"].value_counts()
    return summary_of({k: int(counts.get(k, 0)) for k in (STORED, ALREADY_STORED, SKIPPED,
                                                          FAILED)})


def summary_of(counts: dict[str, int]) -> str:
    """:func:`summary` from the counts :func:`run_import` returns."""
    parts = [f"{counts.get(k, 0)} {k}" for k in (STORED, ALREADY_STORED, SKIPPED, FAILED)
             if counts.get(k, 0)]
    total = sum(counts.values())
    return f"{total} files: " + (", ".join(parts) if parts else "nothing to import")
