"""Retrieve a study, series or instance into a folder of DICOM Part-10 files.

Used by ``dicomframes retrieve`` and the study browser's download button; a notebook calls
:func:`download` the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..standard.paths import ResourcePath
from ..standard.uids import validate_uid
from .surface import DicomwebClient as Client

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["download", "part10_path"]


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
