"""Small, real DICOM Part-10 instances with fresh UIDs, for upload, CLI and widget tests.

Every call makes new UIDs, so tests that share a session server never collide.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from dicomframes.uids import new_uid


def make_dataset(study: str | None = None, series: str | None = None, number: int = 1, *,
                 rows: int = 16, cols: int = 16, frames: int = 1,
                 patient: str = "Upload^Test", patient_id: str = "UPL001",
                 description: str = "UPLOAD TEST") -> Dataset:
    """A greyscale uint16 Secondary Capture instance (pixels: a ramp plus ``number``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = new_uid()
    ds.StudyInstanceUID = study or new_uid()
    ds.SeriesInstanceUID = series or new_uid()
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.StudyDate = "20210304"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACCUP1"
    ds.StudyDescription = description
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = (np.arange(rows * cols * frames, dtype=np.uint32) * 7 + number) % 4096
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """``ds`` as a Part-10 file in memory."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def make_files(folder: Path, count: int, study: str | None = None, series: str | None = None,
               **options: object) -> list[Path]:
    """Write ``count`` instances of one series (new UIDs unless given) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study = study or new_uid()
    series = series or new_uid()
    paths = []
    for i in range(count):
        ds = make_dataset(study, series, i + 1, **options)  # type: ignore[arg-type]
        path = folder / f"img{i + 1:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
