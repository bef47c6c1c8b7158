"""Sample DICOM files that dicomframes can write on any machine, without downloading anything.

- :func:`write_tutorial_files`: the three files of the "DICOMweb with cURL" tutorial (green
  square, red triangle, blue circle) with the same UIDs and header as the originals, so that
  every notebook and test can use the tutorial's UIDs.
- :func:`write_multiframe_study`: one multi-frame 16-bit instance whose frames are easy to
  recognise (:func:`multiframe_pixels` gives the expected array).
- :func:`write_archive`: a small multi-patient archive (CT volumes, MR series, chest X-rays,
  secondary captures, some multi-frame) spread over several years, for exploring with queries.

Everything is deterministic: the same arguments give the same UIDs, headers and pixels. Files
are DICOM Part-10 (preamble, file meta) in Explicit VR Little Endian.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "TUTORIAL",
    "TutorialUIDs",
    "ct_slice",
    "multiframe_pixels",
    "tutorial_pixels",
    "write_archive",
    "write_multiframe_study",
    "write_tutorial_files",
]


class TutorialUIDs(NamedTuple):
    """The three UIDs of one tutorial instance."""

    study: str
    series: str
    sop: str


_TUTORIAL_STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
_SERIES_1 = "1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
_SERIES_2 = "1.2.826.0.1.3680043.8.498.77033797676425927098669402985243398207"

#: name -> (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of the tutorial's files; the file
#: written for ``name`` is ``f"{name}.dcm"``. All three are in one study; green square and red
#: triangle share series 1, the blue circle is alone in series 2.
TUTORIAL: dict[str, TutorialUIDs] = {
    "green-square": TutorialUIDs(
        _TUTORIAL_STUDY, _SERIES_1,
        "1.2.826.0.1.3680043.8.498.12714725698140337137334606354172323212"),
    "red-triangle": TutorialUIDs(
        _TUTORIAL_STUDY, _SERIES_1,
        "1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"),
    "blue-circle": TutorialUIDs(
        _TUTORIAL_STUDY, _SERIES_2,
        "1.2.826.0.1.3680043.8.498.13273713909719068980354078852867170114"),
}

# (SeriesNumber, InstanceNumber, ImageComments) as in the originals and the tutorial's CSV.
_TUTORIAL_NUMBERS = {
    "green-square": ("1", "2", "Fake DICOM - Green Square"),
    "red-triangle": ("1", "1", "Fake DICOM - Red Triangle"),
    "blue-circle": ("2", "1", "Fake DICOM - Blue Circle"),
}

_TUTORIAL_ROWS, _TUTORIAL_COLS = 979, 985
_BACKGROUND = (195, 195, 195)
_COLOURS = {
    "green-square": (34, 177, 76),
    "red-triangle": (237, 28, 36),
    "blue-circle": (63, 72, 204),
}


def _save(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _set_pixels(ds: Dataset, array: np.ndarray) -> None:
    """Set PixelData from a C-ordered array, OB for 8-bit and OW for 16-bit samples."""
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    ds.add_new(0x7FE00010, "OB" if array.dtype.itemsize == 1 else "OW", data.tobytes())


def ct_slice(
    pixels: np.ndarray,
    *,
    study: str,
    series: str,
    number: int,
    z: float = 0.0,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    bits_stored: int | None = None,
    patient: tuple[str, str] = ("Test^Slice", "SLICE1"),
    **attributes: object,
) -> Dataset:
    """One single-frame CT slice of ``pixels`` (2-D uint16 or int16) with its position.

    The slice lies at ``(0, 0, z)`` with ``orientation`` as ImageOrientationPatient, so a stack
    of them can be ordered along the slice normal; ``number`` is its InstanceNumber, ``patient``
    its (PatientName, PatientID). ``attributes`` sets further keywords (RescaleSlope,
    WindowCenter...). Write it with ``ds.save_as(path, enforce_file_format=True)``.
    """
    if pixels.ndim != 2 or pixels.dtype not in (np.uint16, np.int16):
        raise ValueError(f"ct_slice needs a 2-D uint16 or int16 array, not {pixels.dtype} "
                         f"{pixels.shape}")
    bits = bits_stored or 16
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = patient
    ds.Modality, ds.InstanceNumber = "CT", number
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    _set_pixels(ds, pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def tutorial_pixels(name: str) -> np.ndarray:
    """The picture of tutorial file ``name`` (a key of :data:`TUTORIAL`), uint8 (979, 985, 3).

    A flat shape on a light grey background, in the colours and places of the originals (pixel
    for pixel for the square; the triangle and the ellipse differ from them only on a few
    hundred edge pixels).
    """
    if name not in TUTORIAL:
        raise KeyError(f"unknown tutorial file {name!r}; choose one of {sorted(TUTORIAL)}")
    yy, xx = np.mgrid[0:_TUTORIAL_ROWS, 0:_TUTORIAL_COLS]
    if name == "green-square":
        mask = (yy >= 240) & (yy <= 736) & (xx >= 236) & (xx <= 748)
    elif name == "red-triangle":
        left = np.floor(628.5 - 0.644 * yy)
        right = np.ceil(327.0 + 0.644 * yy)
        mask = (yy >= 237) & (yy <= 717) & (xx >= left) & (xx <= right)
    else:
        mask = ((xx - 491.0) / 297.0) ** 2 + ((yy - 510.5) / 275.5) ** 2 <= 1.0
    image = np.empty((_TUTORIAL_ROWS, _TUTORIAL_COLS, 3), dtype=np.uint8)
    image[...] = _BACKGROUND
    image[mask] = _COLOURS[name]
    return image


def _tutorial_dataset(name: str) -> Dataset:
    uids = TUTORIAL[name]
    series_number, instance_number, comments = _TUTORIAL_NUMBERS[name]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uids.sop
    ds.StudyDate = "20200922"
    ds.ContentDate = ""
    ds.AcquisitionDateTime = ""
    ds.StudyTime = "120000"
    ds.ContentTime = ""
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.ConversionType = "SYN"
    ds.ReferringPhysicianName = "Doctor Doc"
    ds.PatientName = "Anony Mous"
    ds.PatientID = "ID1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = "024Y"
    ds.PatientPosition = ""
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.Laterality = ""
    ds.ImageComments = comments
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = _TUTORIAL_ROWS
    ds.Columns = _TUTORIAL_COLS
    ds.PixelSpacing = ["1.0", "1.0"]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SmallestImagePixelValue = 0
    ds.LargestImagePixelValue = 255
    _set_pixels(ds, tutorial_pixels(name))
    return ds


def write_tutorial_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``green-square.dcm``, ``red-triangle.dcm`` and ``blue-circle.dcm`` into ``folder``.

    The files carry the tutorial's UIDs (see :data:`TUTORIAL`) and the same header as the
    originals: Secondary Capture, Explicit VR Little Endian, RGB 8-bit 979 x 985, one frame,
    PatientName "Anony Mous", PatientID "ID1", StudyDate 20200922, Modality OT. Returns the
    paths in that order (``folder`` is created if needed).
    """
    target = Path(folder)
    return [_save(_tutorial_dataset(name), target / f"{name}.dcm") for name in TUTORIAL]


# --------------------------------------------------------------------------- multi-frame

_MULTIFRAME_ROOT = "dicomframes-multiframe"


def multiframe_pixels(frames: int = 10, rows: int = 64, cols: int = 64) -> np.ndarray:
    """The uint16 array (frames, rows, cols) that :func:`write_multiframe_study` stores.

    Frame ``k`` (0-based) holds ``(k * 1000 + 7 * row + 3 * col) % 65536``, so every frame
    differs and a misplaced or transposed frame is easy to spot.
    """
    k = np.arange(frames, dtype=np.int64)[:, None, None]
    r = np.arange(rows, dtype=np.int64)[None, :, None]
    c = np.arange(cols, dtype=np.int64)[None, None, :]
    return ((k * 1000 + 7 * r + 3 * c) % 65536).astype(np.uint16)


def _common_header(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstitutionName = "dicomframes General Hospital"
    ds.Manufacturer = "dicomframes"


def write_multiframe_study(folder: str | os.PathLike[str], frames: int = 10, rows: int = 64,
                           cols: int = 64) -> list[Path]:
    """Write a study of one multi-frame instance (Multi-frame Grayscale Word Secondary Capture).

    uint16 MONOCHROME2, ``frames`` frames of ``rows`` x ``cols`` pixels, NumberOfFrames set,
    pixel values as :func:`multiframe_pixels`. UIDs depend only on the three sizes, so the same
    call always gives the same instance. Returns ``[path]``.
    """
    if frames < 1 or rows < 1 or cols < 1:
        raise ValueError("frames, rows and cols must be at least 1")
    key = f"{_MULTIFRAME_ROOT}-{frames}-{rows}-{cols}"
    ds = Dataset()
    _common_header(ds)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[key, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[key, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[key, "instance"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = "MF0001"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.StudyDescription = "Multi-frame sample"
    ds.SeriesDescription = f"{frames} frames {rows}x{cols} uint16"
    ds.ReferringPhysicianName = "Frame^Frida"
    ds.PatientName = "Multi^Frame"
    ds.PatientID = "MF1"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = 100.0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    pixels = multiframe_pixels(frames, rows, cols)
    ds.WindowCenter = int(pixels.max()) // 2
    ds.WindowWidth = max(int(pixels.max()), 1)
    _set_pixels(ds, pixels)
    return [_save(ds, Path(folder) / f"multiframe-{frames}x{rows}x{cols}.dcm")]


# --------------------------------------------------------------------------- archive

_FAMILY = ["Smith", "Müller", "García", "Nguyen", "Kowalski", "O'Brien", "Tanaka", "Dubois",
           "Rossi", "Andersson", "Okafor", "Silva", "Novak", "Cohen", "Ivanova", "Jensen"]
_GIVEN_F = ["Anna", "Maria", "Yuki", "Chloé", "Fatima", "Ingrid", "Lucia", "Sara"]
_GIVEN_M = ["John", "Jürgen", "Carlos", "Minh", "Piotr", "Kenji", "Luca", "Emeka"]
_REFERRERS = ["House^Gregory", "Grey^Meredith", "Quinn^Michaela", "Kildare^James"]

# kind -> (StudyDescription, Modality)
_STUDY_KINDS = [
    ("CT CHEST W/O CONTRAST", "CT"),
    ("MR BRAIN", "MR"),
    ("XR CHEST 2 VIEWS", "CR"),
    ("CT ABDOMEN", "CT"),
    ("MR KNEE", "MR"),
    ("SC ANNOTATIONS", "OT"),
]


class _Uids:
    """Deterministic UIDs for one archive: the same seed and counter give the same UID."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._count = 0

    def __call__(self) -> str:
        self._count += 1
        return generate_uid(entropy_srcs=["dicomframes-archive", str(self._seed), str(self._count)])


def _phantom(rows: int, cols: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """A body-like float image: an ellipse with two "lungs", a "spine" and some noise."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    y = (yy - rows / 2) / (rows / 2)
    x = (xx - cols / 2) / (cols / 2)
    image = np.full((rows, cols), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
    image[body] = 40.0
    radius = 0.25 * (1.0 - 0.6 * abs(z))
    for side in (-0.4, 0.4):
        image[((x - side) / 0.9) ** 2 + (y / 1.3) ** 2 <= radius**2] = -800.0
    image[(x**2 + (y - 0.45) ** 2) <= 0.012] = 700.0
    image += rng.normal(0.0, 8.0, size=image.shape)
    return image


def _ct_series(ds_base: Dataset, uid: _Uids, rng: np.random.Generator, series_number: int,
               slices: int, size: int) -> Iterator[Dataset]:
    series_uid, frame_uid = uid(), uid()
    spacing, thickness = 350.0 / size, 5.0
    intercept = -1024.0
    for index in range(slices):
        z = -0.5 + index / max(slices - 1, 1)
        hu = _phantom(size, size, z, rng)
        stored = np.clip(np.round(hu - intercept), -32768, 32767).astype(np.int16)
        ds = _copy(ds_base)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid()
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "Axial 5mm"
        ds.InstanceNumber = index + 1
        ds.AcquisitionNumber = 1
        ds.BodyPartExamined = "CHEST"
        ds.KVP = 120
        ds.SliceThickness = thickness
        ds.PatientPosition = "FFS"
        ds.ImagePositionPatient = [-175.0, -175.0, -100.0 + index * thickness]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = -100.0 + index * thickness
        ds.PixelSpacing = [round(spacing, 4), round(spacing, 4)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = 1.0
        ds.RescaleType = "HU"
        ds.WindowCenter = [40, -600]
        ds.WindowWidth = [400, 1500]
        ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
        _set_pixels(ds, stored)
        yield ds


def _mr_series(ds_base: Dataset, uid: _Uids, rng: np.random.Generator, series_number: int,
               slices: int, size: int, weighting: str) -> Iterator[Dataset]:
    series_uid, frame_uid = uid(), uid()
    spacing, thickness = 220.0 / size, 4.0
    yy, xx = np.mgrid[0:size, 0:size]
    y = (yy - size / 2) / (size / 2)
    x = (xx - size / 2) / (size / 2)
    for index in range(slices):
        z = -0.5 + index / max(slices - 1, 1)
        scale = np.sqrt(max(1.0 - z * z, 0.05))
        head = (x / (0.8 * scale)) ** 2 + (y / (0.9 * scale)) ** 2 <= 1
        brain = (x / (0.7 * scale)) ** 2 + (y / (0.8 * scale)) ** 2 <= 1
        ventricles = (x / 0.12) ** 2 + (y / 0.3) ** 2 <= scale
        image = np.zeros((size, size))
        image[head] = 300 if weighting == "T1" else 900
        image[brain] = 600 if weighting == "T1" else 500
        image[brain & ventricles] = 150 if weighting == "T1" else 1800
        image += rng.normal(0, 15, size=image.shape)
        stored = np.clip(np.round(image), 0, 4095).astype(np.uint16)
        ds = _copy(ds_base)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = uid()
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.SeriesNumber = series_number
        ds.SeriesDescription = f"AX {weighting}"
        ds.InstanceNumber = index + 1
        ds.AcquisitionNumber = 1
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500.0 if weighting == "T1" else 4000.0
        ds.EchoTime = 15.0 if weighting == "T1" else 100.0
        ds.EchoTrainLength = 1 if weighting == "T1" else 16
        ds.MagneticFieldStrength = 1.5
        ds.SliceThickness = thickness
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [-110.0, -110.0, 20.0 + index * thickness]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = 20.0 + index * thickness
        ds.PixelSpacing = [round(spacing, 4), round(spacing, 4)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = 600 if weighting == "T1" else 900
        ds.WindowWidth = 1200 if weighting == "T1" else 2000
        _set_pixels(ds, stored)
        yield ds


def _cr_series(ds_base: Dataset, uid: _Uids, rng: np.random.Generator, series_number: int,
               size: int) -> Iterator[Dataset]:
    series_uid = uid()
    yy, xx = np.mgrid[0:size, 0:size]
    y = (yy - size / 2) / (size / 2)
    x = (xx - size / 2) / (size / 2)
    for index, view in enumerate(("PA", "LL")):
        image = np.full((size, size), 3800.0)
        chest = (x / (0.8 if view == "PA" else 0.6)) ** 2 + (y / 0.85) ** 2 <= 1
        image[chest] = 1800.0
        if view == "PA":
            for side in (-0.35, 0.35):
                image[((x - side) / 0.25) ** 2 + (y / 0.55) ** 2 <= 1] = 3000.0  # air: dark
        image[np.abs(x) < 0.05] = 600.0 if view == "PA" else 1800.0  # bone: bright
        image += rng.normal(0, 20, size=image.shape)
        stored = np.clip(np.round(image), 0, 4095).astype(np.uint16)
        ds = _copy(ds_base)
        ds.SOPClassUID = ComputedRadiographyImageStorage
        ds.SOPInstanceUID = uid()
        ds.SeriesInstanceUID = series_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "Chest PA + lateral"
        ds.InstanceNumber = index + 1
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = view
        ds.PatientOrientation = ["P", "F"] if view == "PA" else ["A", "F"]
        ds.ImagerPixelSpacing = [0.7, 0.7]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = 2048
        ds.WindowWidth = 4096
        _set_pixels(ds, stored)
        yield ds


def _ot_series(ds_base: Dataset, uid: _Uids, rng: np.random.Generator, series_number: int,
               size: int, frames: int) -> Iterator[Dataset]:
    series_uid = uid()
    # one RGB screenshot-like capture
    ds = _copy(ds_base)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid()
    ds.SeriesInstanceUID = series_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "Annotated captures"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.zeros((size, size, 3), dtype=np.uint8)
    rgb[..., 0] = (xx * 255 // max(size - 1, 1)).astype(np.uint8)
    rgb[..., 1] = (yy * 255 // max(size - 1, 1)).astype(np.uint8)
    cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
    rgb[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2] = (255, 255, 0)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    _set_pixels(ds, rgb)
    yield ds
    # one multi-frame grayscale cine
    ds = _copy(ds_base)
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid()
    ds.SeriesInstanceUID = series_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "Annotated captures"
    ds.InstanceNumber = 2
    ds.PatientOrientation = ""
    cine = np.empty((frames, size, size), dtype=np.uint16)
    for k in range(frames):
        angle = 2 * np.pi * k / frames
        py = size / 2 + size / 4 * np.sin(angle)
        px = size / 2 + size / 4 * np.cos(angle)
        blob = np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * (size / 10) ** 2))
        cine[k] = np.round(blob * 4000 + rng.integers(0, 50, size=(size, size))).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 40.0
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2000
    ds.WindowWidth = 4000
    _set_pixels(ds, cine)
    yield ds


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    for element in ds:
        out.add_new(element.tag, element.VR, element.value)
    return out


def write_archive(folder: str | os.PathLike[str], patients: int = 5, seed: int = 0) -> list[Path]:
    """Write a small multi-patient archive into ``folder`` and return the file paths.

    Each patient (PatientName ``Family^Given``, distinct families, at least one needing UTF-8
    when ``patients`` >= 2; PatientID ``DF0001``...) has one to three
    studies dated between 2012 and 2024 (StudyDescription, AccessionNumber, StudyID,
    ReferringPhysicianName set), each of one kind:

    - CT (CT Image Storage): an axial volume of int16 slices with RescaleSlope/RescaleIntercept
      (HU = stored - 1024), ImagePositionPatient/ImageOrientationPatient for stacking, two
      windows (soft tissue, lung);
    - MR (MR Image Storage): T1 and T2 axial series, uint16 12-bit;
    - CR (CR Image Storage): chest PA and lateral, uint16 MONOCHROME1;
    - OT (Secondary Capture): one RGB capture and one multi-frame uint16 cine.

    The same ``patients`` and ``seed`` always give the same files (UIDs included); with the
    defaults the archive holds about 140 files and about 6 MB. Files go to
    ``folder/PatientID/StudyDate-Modality/SSS-IIII.dcm``.
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    rng = np.random.default_rng(seed)
    uid = _Uids(seed)
    target = Path(folder)
    paths: list[Path] = []
    families = [str(name) for name in rng.permutation(_FAMILY)]
    if patients >= 2 and "Müller" not in families[:patients]:
        families[1] = "Müller"  # at least one name that needs UTF-8
    for p in range(patients):
        sex = "F" if rng.random() < 0.5 else "M"
        given = _GIVEN_F if sex == "F" else _GIVEN_M
        family = families[p % len(families)]
        name = f"{family}^{given[int(rng.integers(len(given)))]}"
        patient_id = f"DF{p + 1:04d}"
        birth_year = int(rng.integers(1940, 2005))
        birth = f"{birth_year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        study_count = int(rng.integers(1, 4))
        # kinds: cycle so that every modality appears even in a small archive
        kinds = [_STUDY_KINDS[(p + s * 2) % len(_STUDY_KINDS)] for s in range(study_count)]
        years = sorted(int(y) for y in rng.choice(np.arange(2012, 2025), study_count, False))
        for s, ((description, modality), year) in enumerate(zip(kinds, years, strict=True)):
            date = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
            time = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00"
            base = Dataset()
            _common_header(base)
            base.StudyDate = base.SeriesDate = base.ContentDate = date
            base.StudyTime = base.SeriesTime = base.ContentTime = time
            base.AccessionNumber = f"ACC{seed:02d}{p + 1:03d}{s + 1:02d}"
            base.Modality = modality
            base.ReferringPhysicianName = _REFERRERS[int(rng.integers(len(_REFERRERS)))]
            base.StudyDescription = description
            base.PatientName = name
            base.PatientID = patient_id
            base.PatientBirthDate = birth
            base.PatientSex = sex
            base.PatientAge = f"{year - birth_year:03d}Y"
            base.StudyInstanceUID = uid()
            base.StudyID = str(s + 1)
            if modality == "CT":
                series = [_ct_series(base, uid, rng, 1, int(rng.integers(12, 21)), 128)]
            elif modality == "MR":
                series = [_mr_series(base, uid, rng, 1, int(rng.integers(8, 13)), 128, "T1"),
                          _mr_series(base, uid, rng, 2, int(rng.integers(8, 13)), 128, "T2")]
            elif modality == "CR":
                series = [_cr_series(base, uid, rng, 1, 256)]
            else:
                series = [_ot_series(base, uid, rng, 1, 96, 12)]
            folder_name = f"{patient_id}/{date}-{modality}"
            for items in series:
                for ds in items:
                    name_part = f"{int(ds.SeriesNumber):03d}-{int(ds.InstanceNumber):04d}.dcm"
                    paths.append(_save(ds, target / folder_name / name_part))
    return paths
