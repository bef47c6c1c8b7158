"""CT series with known geometry, written as real Part-10 files (tests of ``client.image``).

Each slice holds a ball of 1,000 (modality units) in a body of 40 in air of -1,000, so that a
threshold gives a known volume; stored values are ``(value - intercept) / slope``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian

from dicomframes.standard.uids import new_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def oblique(degrees: float = 20.0) -> tuple[float, ...]:
    """An axial orientation turned ``degrees`` about the patient's left-right axis, then
    about the vertical one: no direction cosine is 0 or 1."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    row = np.array([np.cos(b), np.sin(b), 0.0])
    column = np.array([-np.sin(b) * np.cos(a), np.cos(b) * np.cos(a), np.sin(a)])
    return tuple(float(v) for v in (*row, *column))


@dataclass
class Series:
    """What a generated series is and where its files are."""

    study: str
    series: str
    paths: list[Path]
    expected: np.ndarray            # modality values, (z, y, x) in spatial order
    positions: np.ndarray           # ImagePositionPatient per slice, spatial order
    sops: list[str] = field(default_factory=list)


def _values(rows: int, columns: int, count: int, pixel: Sequence[float],
            gaps: Sequence[float]) -> np.ndarray:
    z = np.concatenate([[0.0], np.cumsum(gaps)])[:count]
    zz, yy, xx = np.meshgrid(z, np.arange(rows) * pixel[0], np.arange(columns) * pixel[1],
                             indexing="ij")
    centre = (z[-1] / 2, rows * pixel[0] / 2, columns * pixel[1] / 2)
    out = np.full((count, rows, columns), -1000.0)
    body = ((yy - centre[1]) / (0.45 * rows * pixel[0])) ** 2 + (
        (xx - centre[2]) / (0.45 * columns * pixel[1])) ** 2 <= 1
    out[body] = 40.0
    radius = 0.3 * min(rows * pixel[0], columns * pixel[1])
    ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius ** 2
    out[ball] = 1000.0
    out += np.arange(columns)[None, None, :] % 3  # no two neighbouring columns alike
    return out


def _base(study: str, series: str, modality: str = "CT") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.FrameOfReferenceUID = new_uid()
    ds.PatientName, ds.PatientID = "Geometry^Test", "GEO1"
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    return ds


def ct_series(folder: Path, *, count: int = 6, rows: int = 12, columns: int = 10,
              pixel: Sequence[float] = (0.5, 0.5), spacing: float | Sequence[float] = 1.25,
              orientation: Sequence[float] = AXIAL, origin: Sequence[float] = (-30, -20, 50),
              slope: float = 1.0, intercept: float = -1024.0, signed: bool = False,
              photometric: str = "MONOCHROME2", tilt: float = 0.0,
              shuffle: bool = True) -> Series:
    """``count`` single-frame CT slices; ``spacing`` one gap or the gaps between slices;
    ``tilt`` (degrees) shifts each slice along the column direction as a gantry tilt does.
    Instance numbers and files are in shuffled order (``shuffle``)."""
    gaps = [float(spacing)] * (count - 1) if isinstance(spacing, int | float) else list(spacing)
    expected = _values(rows, columns, count, pixel, gaps)
    stored = np.round((expected - intercept) / slope)
    expected = (stored * slope + intercept).astype(np.float32)
    dtype = np.int16 if signed else np.uint16
    assert stored.min() >= np.iinfo(dtype).min and stored.max() <= np.iinfo(dtype).max
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, column)
    z = np.concatenate([[0.0], np.cumsum(gaps)])
    positions = np.asarray([np.asarray(origin) + normal * d
                            + column * d * np.tan(np.radians(tilt)) for d in z])
    study, series = new_uid(), new_uid()
    numbers = np.random.default_rng(count).permutation(count) if shuffle else np.arange(count)
    folder.mkdir(parents=True, exist_ok=True)
    out = Series(study, series, [], expected, positions)
    for k in range(count):
        ds = _base(study, series)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = new_uid()
        ds.InstanceNumber = int(numbers[k]) + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.PixelSpacing = [f"{v:g}" for v in pixel]
        ds.SliceThickness = "2.5"   # on purpose not the spacing
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = rows, columns
        ds.PixelRepresentation = int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = stored[k].astype(dtype).astype(f"<{np.dtype(dtype).str[1:]}").tobytes()
        path = folder / f"slice{int(numbers[k]):03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        out.paths.append(path)
        out.sops.append(ds.SOPInstanceUID)
    return out


def enhanced_ct(folder: Path, single: Series, slopes: Sequence[float],
                intercepts: Sequence[float], orientation: Sequence[float] = AXIAL,
                pixel: Sequence[float] = (0.5, 0.5),
                series: str | None = None) -> tuple[Path, np.ndarray]:
    """One Enhanced CT instance holding ``single``'s slices in reverse order, each frame with
    its own position and Rescale Slope/Intercept (per-frame functional groups); the path and
    the modality values in spatial order."""
    frames = len(single.expected)
    ds = _base(single.study, series or new_uid())
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = new_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = single.expected.shape[1:]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    measures = Dataset()
    measures.PixelSpacing = [f"{v:g}" for v in pixel]
    measures.SliceThickness = "2.5"
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    stored = []
    expected = np.empty(single.expected.shape, dtype=np.float32)
    for k in reversed(range(frames)):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in single.positions[k]]
        item.PlanePositionSequence = DicomSequence([position])
        transform = Dataset()
        slope, intercept = slopes[k], intercepts[k]
        transform.RescaleSlope, transform.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        transform.RescaleType = "HU"
        item.PixelValueTransformationSequence = DicomSequence([transform])
        per_frame.append(item)
        stored.append(np.round((single.expected[k] - intercept) / slope).astype("<u2"))
        expected[k] = stored[-1] * np.float32(slope) + np.float32(intercept)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack(stored).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "enhanced.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path, expected
