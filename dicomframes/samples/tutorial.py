"""The tutorial's three files and a multi-frame study, written with the same UIDs every time.

Also :func:`ct_slice`, one CT slice with a realistic header, for tests and benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from .common import common_header, save, set_pixels

__all__ = [
    "TUTORIAL",
    "TutorialUIDs",
    "ct_slice",
    "multiframe_pixels",
    "tutorial_pixels",
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
    set_pixels(ds, pixels)
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
    set_pixels(ds, tutorial_pixels(name))
    return ds


def write_tutorial_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``green-square.dcm``, ``red-triangle.dcm`` and ``blue-circle.dcm`` into ``folder``.

    The files carry the tutorial's UIDs (see :data:`TUTORIAL`) and the same header as the
    originals: Secondary Capture, Explicit VR Little Endian, RGB 8-bit 979 x 985, one frame,
    PatientName "Anony Mous", PatientID "ID1", StudyDate 20200922, Modality OT. Returns the
    paths in that order (``folder`` is created if needed).
    """
    target = Path(folder)
    return [save(_tutorial_dataset(name), target / f"{name}.dcm") for name in TUTORIAL]


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
    common_header(ds)
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
    set_pixels(ds, pixels)
    return [save(ds, Path(folder) / f"multiframe-{frames}x{rows}x{cols}.dcm")]
