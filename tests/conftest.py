"""Shared fixtures: sample files, the embedded server and a real Orthanc on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import TUTORIAL_DATA, TUTORIAL_NAMES, DicomwebServer, require


@pytest.fixture(scope="session")
def tutorial_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tutorial's three original files (vendored in tests/data/tutorial), copied to a
    temporary folder so that a test may change or delete them."""
    folder = tmp_path_factory.mktemp("tutorial")
    return [Path(shutil.copy(TUTORIAL_DATA / name, folder / name)) for name in TUTORIAL_NAMES]


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
