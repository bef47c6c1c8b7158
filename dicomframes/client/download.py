"""Retrieve a study, series or instance into a folder of DICOM Part-10 files.

Used by ``dicomframes retrieve`` and the study browser's download button; a notebook calls
:func:`download` the same way. :func:`download_selection` (``df.dicom.download(folder)``)
brings the studies, series or instances of a DataFrame's rows, resumably, several series at a
time, and checks each series against its instance count.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..standard.mediatypes import DICOM
from ..standard.paths import ResourcePath
from ..standard.uids import validate_uid
from .concurrency import cpu_default, throttled_so_far, workers_for
from .surface import DicomwebClient as Client

if TYPE_CHECKING:
    import pandas
    from pydicom import Dataset

__all__ = ["IncompleteDownload", "download", "download_selection", "part10_path"]


def part10_path(folder: str | os.PathLike[str], ds: Dataset) -> Path:
    """``folder/STUDY/SERIES/SOP.dcm`` for ``ds``; each UID is validated before it becomes
    part of the path (``ValueError`` otherwise), so a hostile UID cannot escape ``folder``."""
    resource = ResourcePath(str(ds.get("StudyInstanceUID", "")),
                            str(ds.get("SeriesInstanceUID", "")),
                            str(ds.get("SOPInstanceUID", "")))
    return Path(folder) / str(resource.study) / str(resource.series) / f"{resource.instance}.dcm"


def download(
    client: Client,
    folder: str | os.PathLike[str],
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> list[Path]:
    """Retrieve (WADO-RS) a study, a series or one instance and write each instance as
    ``folder/STUDY/SERIES/SOP.dcm``. Instances are written one at a time as they arrive.
    Returns the paths written."""
    if instance is not None and series is None:
        raise ValueError("an instance needs its series")
    validate_uid(study, "study")
    if series is not None:
        validate_uid(series, "series")
    if instance is not None:
        validate_uid(instance, "instance")
    written: list[Path] = []
    for ds in client.iter_retrieve(study, series, instance):
        path = part10_path(folder, ds)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        written.append(path)
    return written


# ---- a selection of studies, series or instances ---------------------------------------------


@dataclass
class _Unit:
    """One series to bring to disk: all of it (``wanted`` None) or some of its instances."""

    study: str
    series: str
    expected: int | None
    wanted: tuple[str, ...] | None = None
    fetched: int = 0


def _on_disk(folder: Path, unit: _Unit) -> set[str]:
    where = folder / unit.study / unit.series
    return {p.stem for p in where.glob("*.dcm")} if where.is_dir() else set()


def _missing(folder: Path, unit: _Unit) -> bool:
    """Whether some instances of ``unit`` are not on disk yet (unknown count: maybe)."""
    have = _on_disk(folder, unit)
    if unit.wanted is not None:
        return not set(unit.wanted) <= have
    return unit.expected is None or len(have) < unit.expected


def _write_part(folder: Path, content: bytes) -> tuple[Path, str]:
    """Write one retrieved instance (a Part-10 file as sent, else re-encoded) where the layout
    puts it; its path and SOPInstanceUID."""
    import pydicom

    ds = pydicom.dcmread(BytesIO(content), stop_before_pixels=True)
    path = part10_path(folder, ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if content[128:132] == b"DICM":
        tmp.write_bytes(content)
    else:
        pydicom.dcmread(BytesIO(content)).save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path, path.stem


def _fetch_unit(client: Client, folder: Path, unit: _Unit, bar: Any) -> None:
    have = _on_disk(folder, unit)
    wanted = None if unit.wanted is None else [s for s in unit.wanted if s not in have]
    if wanted is not None and not wanted:
        return
    if wanted is not None and len(wanted) <= 3:
        targets = [str(ResourcePath(unit.study, unit.series, sop)) for sop in wanted]
    else:
        targets = [str(ResourcePath(unit.study, unit.series))]
    for target in targets:
        for part, _ in client.iter_multipart(target, DICOM, "*"):
            path, sop = _write_part(folder, bytes(part.content))
            if sop not in have and (unit.wanted is None or sop in unit.wanted):
                have.add(sop)
                unit.fetched += 1
                if bar is not None:
                    bar.update(1)
            elif unit.wanted is not None and sop not in unit.wanted:
                path.unlink()  # a series retrieve brings instances not asked for


def _units(client: Client, depth: int, uids: Sequence[tuple[str, ...]]) -> list[_Unit]:
    """The series of a selection, with the instance count each should have."""
    units: dict[tuple[str, str], _Unit] = {}
    counts: dict[str, dict[str, int | None]] = {}

    def series_of(study: str) -> dict[str, int | None]:
        if study not in counts:
            frame = client.search_series(study=study)
            found: dict[str, int | None] = {}
            for _, row in frame.iterrows():
                n = row.get("NumberOfSeriesRelatedInstances")
                found[str(row["SeriesInstanceUID"])] = None if n is None or n != n else int(n)
            counts[study] = found
        return counts[study]

    for key in uids:
        study = key[0]
        if depth == 1:
            for series, n in series_of(study).items():
                units.setdefault((study, series), _Unit(study, series, n))
        elif depth == 2:
            n = series_of(study).get(key[1])
            units.setdefault((study, key[1]), _Unit(study, key[1], n))
        else:
            unit = units.setdefault((study, key[1]), _Unit(study, key[1], 0, ()))
            assert unit.wanted is not None
            unit.wanted = (*unit.wanted, key[2])
            unit.expected = len(unit.wanted)
    return list(units.values())


def download_selection(client: Client, folder: str | os.PathLike[str], depth: int,
                       uids: Sequence[tuple[str, ...]], *, workers: int | None = None,
                       progress: bool = True) -> pandas.DataFrame:
    """Bring studies (``depth`` 1), series (2) or instances (3), named by their UID tuples, to
    ``folder`` as ``folder/STUDY/SERIES/SOP.dcm`` (see ``df.dicom.download``).

    Resumable: instances already in the folder are not fetched again (a series complete on
    disk costs no request). Series are fetched ``workers`` at a time (default: 2 to 4 on a
    local link, more across a network, at most 8). Returns one row per series: the instances
    expected (the series' NumberOfSeriesRelatedInstances, or the instances asked for), on disk
    and fetched now, and ``complete``; an incomplete series gives a warning with the counts.
    """
    import pandas as pd

    started = time.perf_counter()
    root = Path(folder)
    units = _units(client, depth, uids)
    todo = [u for u in units if _missing(root, u)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(u.expected or 0 for u in units)
        bar = tqdm(total=total, initial=total - sum(u.expected or 0 for u in todo),
                   unit=" instances", desc="download", leave=False)
    count = max(1, min(workers or workers_for(client, cpu_default(), 8), len(todo) or 1))
    throttled_before = throttled_so_far(client)
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="dicomframes-download"
                                ) as pool:
            for future in [pool.submit(_fetch_unit, client, root, u, bar) for u in todo]:
                future.result()
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for unit in units:
        have = _on_disk(root, unit)
        on_disk = len(have & set(unit.wanted)) if unit.wanted is not None else len(have)
        complete = unit.expected is None or on_disk >= unit.expected
        rows.append({"StudyInstanceUID": unit.study, "SeriesInstanceUID": unit.series,
                     "expected": unit.expected, "on_disk": on_disk, "fetched": unit.fetched,
                     "complete": complete, "path": str(root / unit.study / unit.series)})
    table = pd.DataFrame(rows, columns=["StudyInstanceUID", "SeriesInstanceUID", "expected",
                                        "on_disk", "fetched", "complete", "path"])
    table["expected"] = table["expected"].astype("Int64")
    short = table[~table["complete"]]
    if len(short):
        warnings.warn(
            f"download to {root}: {len(short)} of {len(table)} series incomplete "
            f"({int(short['on_disk'].sum())} of {int(short['expected'].sum())} instances on "
            "disk; the server sent fewer than its counts say): run it again to resume",
            IncompleteDownload, stacklevel=3)
    table.attrs["summary"] = {
        "series": len(table), "instances": int(table["on_disk"].sum()),
        "fetched": int(table["fetched"].sum()), "complete": bool(table["complete"].all()),
        "throttled": throttled_so_far(client) - throttled_before, "workers": count,
        "seconds": round(time.perf_counter() - started, 3)}
    return table


class IncompleteDownload(UserWarning):
    """Some series of a download have fewer instances on disk than the server's counts."""
