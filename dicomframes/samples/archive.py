"""A small generated multi-patient archive (CT, MR, CR, secondary captures) for exploring."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from .common import common_header, save, set_pixels

__all__ = ["write_archive"]

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
        set_pixels(ds, stored)
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
        set_pixels(ds, stored)
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
        set_pixels(ds, stored)
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
    set_pixels(ds, rgb)
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
    set_pixels(ds, cine)
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
            common_header(base)
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
                    paths.append(save(ds, target / folder_name / name_part))
    return paths
