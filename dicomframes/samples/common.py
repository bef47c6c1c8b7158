"""What every sample file shares: saving as Part 10, pixel data, the common header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

__all__ = ["common_header", "save", "set_pixels"]


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part-10 file (preamble, file meta, Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def set_pixels(ds: Dataset, array: np.ndarray) -> None:
    """Set PixelData from a C-ordered array, OB for 8-bit and OW for 16-bit samples."""
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    ds.add_new(0x7FE00010, "OB" if array.dtype.itemsize == 1 else "OW", data.tobytes())


def common_header(ds: Dataset) -> None:
    """Character set, institution and manufacturer shared by the generated files."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstitutionName = "dicomframes General Hospital"
    ds.Manufacturer = "dicomframes"
