"""Fixtures of the server conformance suite: servers on 127.0.0.1 and DICOM files to store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomframes.server import Server, serve

from .server_helpers import stow

# pydicom's bundled files: one per storage form the server must handle
PYDICOM_FILES = {
    "explicit": "CT_small.dcm",  # Explicit VR Little Endian, 16-bit signed
    "implicit": "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "big_endian": "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "deflated": "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "jpeg_baseline_multiframe": "examples_ybr_color.dcm",  # 30 frames YBR_FULL_422
    "jpeg_extended": "JPGExtended.dcm",  # 12-bit JPEG
    "jpeg_lossless": "SC_rgb_jpeg_gdcm.dcm",  # 1.2.840.10008.1.2.4.70, RGB
    "jpeg_ls": "MR_small_jpeg_ls_lossless.dcm",
    "j2k": "MR_small_jp2klossless.dcm",
    "j2k_lossy": "JPEG2000.dcm",
    "rle": "MR_small_RLE.dcm",
    "rle_multiframe": "rtdose_rle.dcm",  # 15 frames, 32-bit
    "rle_rgb_2frame": "SC_rgb_rle_2frame.dcm",
    "native_multiframe": "rtdose.dcm",  # 15 frames, implicit VR, 32-bit
    "no_pixels": "waveform_ecg.dcm",
    "big_endian_planar": "ExplVR_BigEnd.dcm",  # RGB, PlanarConfiguration 1
    "vr_mismatch": "SC_rgb_jpeg.dcm",  # declares explicit VR, written implicit (kept as is)
}
KEEP_AS_IS = {"vr_mismatch"}


@pytest.fixture(scope="session")
def pydicom_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of pydicom's test files, each given its own study/series/instance UIDs (several
    of the originals share UIDs), written in their original transfer syntax."""
    folder = tmp_path_factory.mktemp("pydicom-files")
    out: dict[str, Path] = {}
    for key, name in PYDICOM_FILES.items():
        path = folder / f"{key}.dcm"
        if key in KEEP_AS_IS:  # rewriting would repair what the test is about
            shutil.copy(get_testdata_file(name), path)
            out[key] = path
            continue
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)
        out[key] = path
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server with an empty archive (function scope: tests that need isolation)."""
    with serve(tmp_path / "archive") as running:
        yield running


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, tutorial_files: list[Path],
           pydicom_files: dict[str, Path]) -> Iterator[Server]:
    """A server holding the tutorial's three files and the pydicom files (read-only tests)."""
    with serve(tmp_path_factory.mktemp("loaded")) as running:
        answer = stow(running.url, tutorial_files)
        assert answer.status_code == 200, answer.text
        for path in pydicom_files.values():
            answer = stow(running.url, [path])
            assert answer.status_code == 200, (path, answer.text)
        yield running
