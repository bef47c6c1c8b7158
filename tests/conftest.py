"""Shared fixtures: sample files, the embedded server and a real Orthanc on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "tutorial-dcms"
TUTORIAL_NAMES = ("green-square.dcm", "red-triangle.dcm", "blue-circle.dcm")
IN_CI = bool(os.environ.get("CI"))


def require(available: bool, what: str, how: str) -> None:
    """Skip when ``what`` is missing on a user's machine; fail in CI, which must install it."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: .ci/run must install it ({how})")
    pytest.skip(f"{what} is not installed here ({how}); CI installs it and runs this test")


@pytest.fixture(scope="session")
def tutorial_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tutorial's three files: the real ones from ../shared when present, else generated."""
    folder = tmp_path_factory.mktemp("tutorial")
    if all((SHARED_SAMPLES / name).exists() for name in TUTORIAL_NAMES):
        return [Path(shutil.copy(SHARED_SAMPLES / name, folder / name)) for name in TUTORIAL_NAMES]
    from dicomframes.samples import write_tutorial_files

    return write_tutorial_files(folder)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A session-wide embedded DICOMweb server on 127.0.0.1 with temporary storage."""
    from dicomframes.server import serve

    with serve(tmp_path_factory.mktemp("archive")) as server:
        yield server


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A session-wide Orthanc with the DICOMweb plugin on loopback."""
    from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

    require(orthanc_installed(), "Orthanc",
            "apt-get install orthanc orthanc-dicomweb")
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# DICOMweb servers as one parametrized fixture, and small test data (helper "client")
# ---------------------------------------------------------------------------------------------

SERVER_KINDS = ("embedded", "orthanc")


class DicomwebServer:
    """A DICOMweb server for a test: ``kind`` ("embedded"/"orthanc"), ``url``, ``server``."""

    def __init__(self, kind: str, url: str, server: object) -> None:
        self.kind = kind
        self.url = url
        self.server = server

    def stow(self, items: list) -> dict:
        """Store Part-10 files (paths) or bytes with a plain ``requests`` STOW-RS POST.

        Independent of ``dicomframes.upload``; the body is built by ``multipart.encode``.
        Returns the DICOM JSON answer; an instance already stored is not an error.
        """
        import requests

        from dicomframes.multipart import encode, new_boundary, related_content_type

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


@pytest.fixture(params=SERVER_KINDS)
def dicomweb(request: pytest.FixtureRequest) -> DicomwebServer:
    """Each test using this runs twice: against the embedded server and against Orthanc."""
    server = request.getfixturevalue(request.param)
    url = server.url if request.param == "embedded" else server.dicomweb_url
    return DicomwebServer(request.param, url, server)


@pytest.fixture
def server_url(dicomweb: DicomwebServer) -> str:
    """Base URL of the parametrized DICOMweb server (see ``dicomweb``)."""
    return dicomweb.url


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
    from io import BytesIO

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    from dicomframes.uids import new_uid

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
        ds.PixelData = (np.arange(rows * columns, dtype="<u2") + 100 * i).tobytes()
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out
