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
