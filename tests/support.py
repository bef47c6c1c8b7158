"""Helpers shared by the tests: where the tutorial's files are, skip-or-fail for optional
servers, and small real DICOM instances with fresh UIDs (so tests sharing a server never collide).

Imported as ``from support import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from dicomframes.standard.uids import new_uid

# The tutorial's three files and its dicom-metadata.csv, vendored with their SHA-256 sums and
# licence notice (tests/data/tutorial/README.md), so that no test needs anything outside the
# repository.
TUTORIAL_DATA = Path(__file__).resolve().parent / "data" / "tutorial"
TUTORIAL_NAMES = ("green-square.dcm", "red-triangle.dcm", "blue-circle.dcm")
IN_CI = bool(os.environ.get("CI"))


def require(available: bool, what: str, how: str) -> None:
    """Skip when ``what`` is missing on a user's machine; fail in CI, which must install it."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: .ci/run must install it ({how})")
    pytest.skip(f"{what} is not installed here ({how}); CI installs it and runs this test")


class DicomwebServer:
    """A DICOMweb server for a test: ``kind`` ("embedded"/"orthanc"), ``url``, ``server``."""

    def __init__(self, kind: str, url: str, server: object) -> None:
        self.kind = kind
        self.url = url
        self.server = server

    def stow(self, items: list) -> dict:
        """Store Part-10 files (paths) or bytes with a plain ``requests`` STOW-RS POST.

        Independent of ``dicomframes.client.store``; the body is built by ``multipart.encode``.
        Returns the DICOM JSON answer; an instance already stored is not an error.
        """
        import requests

        from dicomframes.standard.multipart import encode, new_boundary, related_content_type

        boundary = new_boundary()
        parts = [({"Content-Type": "application/dicom"},
                  item if isinstance(item, bytes) else str(item)) for item in items]
        response = requests.post(
            f"{self.url}/studies",
            data=b"".join(encode(parts, boundary)),
            headers={"Content-Type": related_content_type(boundary, "application/dicom"),
                     "Accept": "application/dicom+json"},
            timeout=120,
        )
        assert response.status_code in (200, 202, 409), (response.status_code, response.text)
        return response.json() if response.content else {}

    def __repr__(self) -> str:
        return f"DicomwebServer({self.kind}, {self.url})"


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


def make_instances(
    count: int,
    *,
    study: str | None = None,
    series: str | None = None,
    patient_name: str = "Test^Client",
    patient_id: str = "CLIENT1",
    study_date: str = "20210315",
    modality: str = "OT",
    rows: int = 4,
    columns: int = 4,
) -> list[bytes]:
    """``count`` small uint16 Secondary Capture instances (Part-10 bytes) with new UIDs, all
    in one series of one study (new UIDs unless given); pixel values differ per instance."""
    study = study or new_uid()
    series = series or new_uid()
    out = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = new_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        # (modulo 2**16: any count fits uint16; values repeat only after 655 instances)
        ds.PixelData = ((np.arange(rows * columns) + 100 * i) % 65536).astype("<u2").tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out
