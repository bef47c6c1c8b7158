"""dicomframes.samples: the tutorial's files made here, a multi-frame study and a small archive."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from support import TUTORIAL_DATA, TUTORIAL_NAMES

from dicomframes import samples
from dicomframes.standard.uids import validate_uid

# File meta elements that name the software that wrote the file, not its content.
IMPLEMENTATION = {0x00020000, 0x00020012, 0x00020013}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return samples.write_tutorial_files(tmp_path_factory.mktemp("generated-tutorial"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return samples.write_archive(tmp_path_factory.mktemp("archive"), patients=5, seed=0)


def test_tutorial_files_names_uids_and_format(generated: list[Path]) -> None:
    assert [path.name for path in generated] == list(TUTORIAL_NAMES)
    for path in generated:
        ds = pydicom.dcmread(path)
        uids = samples.TUTORIAL[path.stem]
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == uids
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == uids.sop
        assert ds.preamble == b"\x00" * 128
        assert path.read_bytes()[128:132] == b"DICM"
        assert ds.PatientName == "Anony Mous"
        assert ds.Modality == "OT"
        pixels = ds.pixel_array
        assert pixels.shape == (979, 985, 3)
        assert pixels.dtype == np.uint8
        assert int(ds.get("NumberOfFrames", 1)) == 1
    study = {samples.TUTORIAL[p.stem].study for p in generated}
    assert len(study) == 1
    series = defaultdict(list)
    for name, uids in samples.TUTORIAL.items():
        series[uids.series].append(name)
    assert sorted(map(sorted, series.values())) == [["blue-circle"],
                                                     ["green-square", "red-triangle"]]


def test_tutorial_pictures_are_the_named_shapes(generated: list[Path]) -> None:
    colours = {"green-square": (34, 177, 76), "red-triangle": (237, 28, 36),
               "blue-circle": (63, 72, 204)}
    for path in generated:
        pixels = pydicom.dcmread(path).pixel_array
        shape = (pixels == colours[path.stem]).all(-1)
        assert (pixels[~shape] == 195).all()
        rows, cols = np.nonzero(shape)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill = shape.sum() / box
        if path.stem == "green-square":
            assert fill == 1.0
        elif path.stem == "red-triangle":
            assert 0.45 < fill < 0.55
            assert shape[rows.min()].sum() < 10 < shape[rows.max()].sum()  # apex up, base down
        else:
            assert abs(fill - np.pi / 4) < 0.01


def test_tutorial_files_match_the_real_ones(generated: list[Path]) -> None:
    for path in generated:
        mine = pydicom.dcmread(path)
        real = pydicom.dcmread(TUTORIAL_DATA / path.name)
        assert [e.tag for e in mine] == [e.tag for e in real]
        for element in real:
            if element.tag == 0x7FE00010:
                continue
            ours = mine[element.tag]
            assert (ours.VR, ours.value) == (element.VR, element.value), element.keyword
        for element in real.file_meta:
            if element.tag not in IMPLEMENTATION:
                assert mine.file_meta[element.tag].value == element.value, element.keyword
        assert mine["PixelData"].VR == real["PixelData"].VR
        assert len(mine.PixelData) == len(real.PixelData)
        differ = (mine.pixel_array != real.pixel_array).any(-1).mean()
        assert differ < 0.001, f"{path.name}: {differ:.4%} of pixels differ from the original"


def test_tutorial_files_are_deterministic(generated: list[Path], tmp_path: Path) -> None:
    again = samples.write_tutorial_files(tmp_path)
    for first, second in zip(generated, again, strict=True):
        assert first.read_bytes() == second.read_bytes()


def test_multiframe_study(tmp_path: Path) -> None:
    (path,) = samples.write_multiframe_study(tmp_path, frames=7, rows=32, cols=48)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert int(ds.NumberOfFrames) == 7
    pixels = ds.pixel_array
    assert pixels.shape == (7, 32, 48)
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, samples.multiframe_pixels(7, 32, 48))
    assert len({frame.tobytes() for frame in pixels}) == 7
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        validate_uid(uid)
    (again,) = samples.write_multiframe_study(tmp_path / "again", frames=7, rows=32, cols=48)
    assert again.read_bytes() == path.read_bytes()


def test_archive_content(archive: list[Path]) -> None:
    total = sum(path.stat().st_size for path in archive)
    assert total < 20 * 1024 * 1024
    datasets = [pydicom.dcmread(path) for path in archive]
    for ds in datasets:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            validate_uid(uid)
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)

    patients = {ds.PatientID: str(ds.PatientName) for ds in datasets}
    assert len(patients) == 5
    assert all("^" in name for name in patients.values())
    assert any(not name.isascii() for name in patients.values())
    assert {ds.Modality for ds in datasets} == {"CT", "MR", "CR", "OT"}
    years = {ds.StudyDate[:4] for ds in datasets}
    assert len(years) >= 3
    for ds in datasets:
        assert ds.StudyDescription and ds.AccessionNumber and ds.SpecificCharacterSet

    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for ds in datasets:
        series[ds.SeriesInstanceUID].append(ds)
    assert any(len(members) >= 5 for members in series.values())
    assert any(int(ds.get("NumberOfFrames", 1)) > 1 for ds in datasets)


def test_archive_ct_series_stacks_into_a_volume(archive: list[Path]) -> None:
    cts = [pydicom.dcmread(path) for path in archive if "-CT" in path.parent.name]
    assert cts
    by_series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for ds in cts:
        by_series[ds.SeriesInstanceUID].append(ds)
    for members in by_series.values():
        members.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        assert [float(x) for x in members[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        steps = np.diff([float(ds.ImagePositionPatient[2]) for ds in members])
        assert np.allclose(steps, steps[0]) and steps[0] > 0
        volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                           for ds in members])
        assert members[0].pixel_array.dtype == np.int16
        assert volume.min() < -900  # air
        assert volume.max() > 500  # bone
        assert members[0].WindowCenter is not None and members[0].WindowWidth is not None


def test_archive_is_deterministic(archive: list[Path], tmp_path: Path) -> None:
    again = samples.write_archive(tmp_path, patients=5, seed=0)
    assert [p.relative_to(tmp_path) for p in again] == [p.relative_to(archive[0].parents[2])
                                                        for p in archive]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(archive, again, strict=True))
    other = samples.write_archive(tmp_path / "seed1", patients=2, seed=1)
    first_uids = {pydicom.dcmread(p).SOPInstanceUID for p in archive}
    assert not first_uids & {pydicom.dcmread(p).SOPInstanceUID for p in other}
