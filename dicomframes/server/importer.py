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

import contextlib
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from ..standard.stow import ALREADY_EXISTS, PROCESSING_FAILURE
from .index import StoreFailure, prepare_files
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


def import_batch(archive: Archive, sources: list[Path], in_place: bool = False,
                 pool: Executor | None = None) -> list[dict[str, Any]]:
    """Store ``sources`` into ``archive`` (copies, or symbolic links when ``in_place``) with one
    group commit; one outcome row per source, in order. ``pool``: worker processes that parse
    the files."""
    rows: dict[int, dict[str, Any]] = {}
    temps: list[Path] = []
    placed: list[int] = []
    for n, source in enumerate(sources):
        if source.name.upper() == "DICOMDIR":
            rows[n] = _row(source, "a DICOMDIR (an index of a DICOM medium), not an instance")
            continue
        temp = archive.temp_path(".import")
        try:
            if in_place:
                os.symlink(source.resolve(), temp)
            else:
                shutil.copyfile(source, temp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            rows[n] = _row(source, StoreFailure(PROCESSING_FAILURE, f"cannot read: {exc}"))
            continue
        temps.append(temp)
        placed.append(n)
    if temps:
        prepared = None
        if pool is not None and len(temps) > 1:
            size = -(-len(temps) // 8)
            chunks = [temps[i:i + size] for i in range(0, len(temps), size)]
            prepared = [p for chunk in pool.map(prepare_files, chunks) for p in chunk]
        for n, outcome in zip(placed, archive.store_files(temps, prepared=prepared),
                              strict=True):
            rows[n] = _row(sources[n], outcome)
    return [rows[n] for n in range(len(sources))]


def import_folder(folder: str | os.PathLike[str], data: str | os.PathLike[str] | Archive,
                  in_place: bool = False, *, batch_size: int = BATCH, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Index every DICOM file under ``folder`` (recursively) into the archive ``data``.

    ``data``: an archive folder (created if needed) or an open :class:`Archive`. ``in_place``:
    link the files instead of copying them (see the module's notes). Files are stored
    ``batch_size`` at a time, each batch in one transaction; ``progress(done, total)`` is
    called after each batch. ``workers`` > 1 parses the files in that many forked processes
    (header parsing is CPU-bound; fork is for a program without other threads, such as the
    ``dicomframes import`` command). Returns one row per file (columns :data:`COLUMNS`): ``status``
    is "stored", "already stored" (that SOPInstanceUID was in the archive, or earlier in the
    folder), "skipped" (a DICOMDIR) or "failed" with the PS3.4 ``reason`` code and a
    ``message`` (not DICOM, truncated, missing UIDs...).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    archive = data if isinstance(data, Archive) else Archive(data)
    pool: ProcessPoolExecutor | None = None
    try:
        sources = list(walk(root, skip=archive.root))
        if workers > 1 and len(sources) > batch_size // 4:
            pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"))
        rows: list[dict[str, Any]] = []
        for start in range(0, len(sources), max(1, batch_size)):
            rows += import_batch(archive, sources[start:start + batch_size], in_place, pool)
            if progress is not None:
                progress(len(rows), len(sources))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if not isinstance(data, Archive):
            archive.close()
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["reason"] = df["reason"].astype("Int64")
    return df


def summary(df: pd.DataFrame) -> str:
    """One line: how many files were stored, already stored, skipped and failed."""
    counts = df["status"].value_counts()
    parts = [f"{int(counts.get(k, 0))} {k}" for k in (STORED, ALREADY_STORED, SKIPPED, FAILED)
             if counts.get(k, 0)]
    return f"{len(df)} files: " + (", ".join(parts) if parts else "nothing to import")
