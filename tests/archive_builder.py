"""Build archives of many tiny instances fast, straight into the embedded server's Archive
(for the harvest tests; the benchmark has its own copy so that it runs without the tests)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from dicomframes.server.storage import Archive
from dicomframes.standard.uids import new_uid


def tiny(study: str, series: str, number: int, date: str | None, modality: str,
         patient: int) -> bytes:
    """One 2x2 Secondary Capture instance as Part-10 bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = new_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = f"Patient^{patient:04d}"
    ds.PatientID = f"P{patient:05d}"
    if date is not None:
        ds.StudyDate = date
        ds.StudyTime = "101500"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(8)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def build_archive(root: Path, studies: int, series: int = 2, instances: int = 5,
                  undated_every: int = 0, start: dt.date = dt.date(2015, 1, 1),
                  days_apart: int = 3) -> dict[str, int]:
    """Write ``studies`` x ``series`` x ``instances`` tiny instances into the archive at
    ``root`` (every ``undated_every``-th study without StudyDate); {study UID: instances}."""
    archive = Archive(root, durable=False)
    made: dict[str, int] = {}
    batch: list[Path] = []
    try:
        for s in range(studies):
            study = new_uid()
            undated = undated_every and s % undated_every == 0
            date = None if undated else (start + dt.timedelta(days=s * days_apart)).strftime(
                "%Y%m%d")
            for k in range(series):
                uid = new_uid()
                for i in range(instances):
                    path = archive.temp_path(".dcm")
                    path.write_bytes(tiny(study, uid, i + 1, date, ("CT", "MR")[k % 2], s))
                    batch.append(path)
            made[study] = series * instances
            if len(batch) >= 500:
                archive.store_files(batch)
                batch = []
        if batch:
            archive.store_files(batch)
    finally:
        archive.close()
    return made
