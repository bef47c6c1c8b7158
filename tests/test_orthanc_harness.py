"""The Orthanc harness: a real Orthanc on loopback that stores, finds and forgets over DICOMweb."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests
from support import require

from dicomframes.standard import multipart
from dicomframes.testing.orthanc import OrthancServer, orthanc_installed, start_orthanc

pytestmark = pytest.mark.orthanc

DICOM_JSON = "application/dicom+json"


def stow(server: OrthancServer, paths: list[Path]) -> requests.Response:
    boundary = multipart.new_boundary()
    body = b"".join(multipart.encode(
        [({"Content-Type": "application/dicom"}, path.read_bytes()) for path in paths], boundary))
    return requests.post(
        server.dicomweb_url + "/studies", data=body, auth=server.auth, timeout=60,
        headers={"Content-Type": multipart.related_content_type(boundary, "application/dicom"),
                 "Accept": DICOM_JSON})


def test_store_search_clear(orthanc: OrthancServer, tutorial_files: list[Path]) -> None:
    orthanc.clear()
    path = tutorial_files[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)

    stored = stow(orthanc, [path])
    assert stored.status_code == 200, stored.text
    referenced = stored.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [ds.SOPInstanceUID]

    found = requests.get(orthanc.dicomweb_url + "/instances", auth=orthanc.auth, timeout=30,
                         params={"SOPInstanceUID": ds.SOPInstanceUID},
                         headers={"Accept": DICOM_JSON})
    assert found.status_code == 200
    (match,) = found.json()
    assert match["0020000D"]["Value"] == [ds.StudyInstanceUID]
    assert match["00080018"]["Value"] == [ds.SOPInstanceUID]

    orthanc.clear()
    assert orthanc.statistics()["CountInstances"] == 0
    empty = requests.get(orthanc.dicomweb_url + "/studies", auth=orthanc.auth, timeout=30,
                         headers={"Accept": DICOM_JSON})
    assert empty.status_code == 200
    assert empty.json() == []


def test_basic_auth_and_loopback_config(tmp_path: Path) -> None:
    require(orthanc_installed(), "Orthanc", "apt-get install orthanc orthanc-dicomweb")
    with start_orthanc(tmp_path / "orthanc", username="alice", password="s3cret-pw") as server:
        assert server.dicomweb_url.startswith("http://127.0.0.1:")
        assert server.dicomweb_url.endswith("/dicom-web")
        assert server.auth == ("alice", "s3cret-pw")
        assert "s3cret-pw" not in repr(server)
        denied = requests.get(server.rest_url + "/system", timeout=10)
        assert denied.status_code == 401
        allowed = requests.get(server.dicomweb_url + "/studies", auth=server.auth, timeout=10,
                               headers={"Accept": DICOM_JSON})
        assert allowed.status_code == 200
        assert allowed.headers.get("Content-Encoding") is None
    assert not server.running()
