"""The pixel description (PS3.3 C.7.6.3 Image Pixel module): what decoding a frame needs.

:class:`PixelDescription` is built from DICOM JSON metadata, a pydicom Dataset or a keyword
mapping (a DataFrame row), and gives the dtype, the frame shape and the size in bytes of a
native frame. The client decodes frames with it and the server locates frames in stored files
with the same sizes. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .dicomjson import first_value

if TYPE_CHECKING:
    import pydicom

__all__ = ["PixelDescription"]

# Tag (DICOM JSON key) and keyword of every attribute PixelDescription reads.
_ATTRIBUTES: dict[str, str] = {
    "rows": "00280010",
    "columns": "00280011",
    "samples_per_pixel": "00280002",
    "bits_allocated": "00280100",
    "bits_stored": "00280101",
    "pixel_representation": "00280103",
    "planar_configuration": "00280006",
    "photometric_interpretation": "00280004",
    "number_of_frames": "00280008",
}
_KEYWORDS: dict[str, str] = {
    "rows": "Rows",
    "columns": "Columns",
    "samples_per_pixel": "SamplesPerPixel",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation",
    "planar_configuration": "PlanarConfiguration",
    "photometric_interpretation": "PhotometricInterpretation",
    "number_of_frames": "NumberOfFrames",
}
_FLOAT_PIXEL_DATA = "7FE00008"
_DOUBLE_FLOAT_PIXEL_DATA = "7FE00009"

#: DICOM JSON tags that decoding needs (use them as ``includefield`` values).
DECODE_TAGS: tuple[str, ...] = (
    *_ATTRIBUTES.values(),
    _FLOAT_PIXEL_DATA,
    _DOUBLE_FLOAT_PIXEL_DATA,
)




def _as_int(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, float) and math.isnan(value):
        return default
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        return _as_int(value, default)
    try:
        return int(str(value).strip()) if isinstance(value, (str, bytes)) else int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel module attributes needed to decode frames (PS3.3 C.7.6.3).

    ``float_pixels`` marks Float Pixel Data (bits_allocated 32, float32) and Double Float Pixel
    Data (bits_allocated 64, float64).
    """

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    planar_configuration: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    number_of_frames: int = 1
    float_pixels: bool = False

    def __post_init__(self) -> None:
        if self.rows <= 0 or self.columns <= 0:
            raise ValueError(f"Rows and Columns must be positive, got {self.rows}x{self.columns}")
        if self.samples_per_pixel <= 0:
            raise ValueError(f"SamplesPerPixel must be positive, got {self.samples_per_pixel}")
        if self.bits_allocated != 1 and (self.bits_allocated <= 0 or self.bits_allocated % 8):
            raise ValueError(f"BitsAllocated must be 1 or a multiple of 8, got "
                             f"{self.bits_allocated}")
        if self.float_pixels and self.bits_allocated not in (32, 64):
            raise ValueError(f"float pixel data needs BitsAllocated 32 or 64, got "
                             f"{self.bits_allocated}")

    # ---- constructors ----------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PixelDescription:
        """From a DICOM JSON object (one item of a WADO-RS metadata response)."""
        values = {name: first_value(obj, tag) for name, tag in _ATTRIBUTES.items()}
        float_kind = None
        if _FLOAT_PIXEL_DATA in obj or _FLOAT_PIXEL_DATA.lower() in obj:
            float_kind = 32
        elif _DOUBLE_FLOAT_PIXEL_DATA in obj or _DOUBLE_FLOAT_PIXEL_DATA.lower() in obj:
            float_kind = 64
        return cls._build(values, float_kind)

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> PixelDescription:
        """From a mapping keyed by DICOM keyword (e.g. a row of a metadata DataFrame).

        ``FloatPixelData``/``DoubleFloatPixelData`` keys (any value) mark float pixels.
        """
        values = {name: attributes.get(kw) for name, kw in _KEYWORDS.items()}
        float_kind = None
        if "FloatPixelData" in attributes and _present(attributes["FloatPixelData"]):
            float_kind = 32
        elif "DoubleFloatPixelData" in attributes and _present(
                attributes["DoubleFloatPixelData"]):
            float_kind = 64
        return cls._build(values, float_kind)

    @classmethod
    def from_dataset(cls, ds: pydicom.Dataset) -> PixelDescription:
        """From a pydicom Dataset (a Part-10 file read with ``pydicom.dcmread``)."""
        values = {name: ds.get(kw) for name, kw in _KEYWORDS.items()}
        float_kind = None
        if "FloatPixelData" in ds:
            float_kind = 32
        elif "DoubleFloatPixelData" in ds:
            float_kind = 64
        return cls._build(values, float_kind)

    @classmethod
    def _build(cls, values: Mapping[str, Any], float_kind: int | None) -> PixelDescription:
        rows = _as_int(values.get("rows"), 0)
        columns = _as_int(values.get("columns"), 0)
        if not rows or not columns:
            raise ValueError("Rows (0028,0010) and Columns (0028,0011) are needed to decode "
                             "frames; the metadata has none (is this an image instance?)")
        bits_allocated = _as_int(values.get("bits_allocated"), float_kind or 16)
        if float_kind:
            bits_allocated = float_kind
        photometric = values.get("photometric_interpretation")
        if isinstance(photometric, (list, tuple)):
            photometric = photometric[0] if photometric else None
        if not isinstance(photometric, str) or not photometric.strip():
            photometric = "MONOCHROME2"
        return cls(
            rows=rows,
            columns=columns,
            samples_per_pixel=_as_int(values.get("samples_per_pixel"), 1),
            bits_allocated=bits_allocated,
            bits_stored=_as_int(values.get("bits_stored"), bits_allocated),
            pixel_representation=_as_int(values.get("pixel_representation"), 0),
            planar_configuration=_as_int(values.get("planar_configuration"), 0),
            photometric_interpretation=photometric.strip(),
            number_of_frames=max(_as_int(values.get("number_of_frames"), 1), 1),
            float_pixels=bool(float_kind),
        )

    # ---- derived properties ----------------------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of decoded pixels (native byte order)."""
        if self.float_pixels:
            return np.dtype(np.float32 if self.bits_allocated == 32 else np.float64)
        if self.bits_allocated == 1:
            return np.dtype(np.uint8)
        kind = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """(rows, columns) or (rows, columns, samples)."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def frame_pixels(self) -> int:
        """Number of samples in one frame (rows * columns * samples per pixel)."""
        return self.rows * self.columns * self.samples_per_pixel

    @property
    def frame_nbytes(self) -> int:
        """Length in bytes of one frame in a native transfer syntax (YBR_FULL_422 is sent
        subsampled: two samples per pixel; 1-bit data is packed and padded to a byte)."""
        if self.bits_allocated == 1:
            return (self.frame_pixels + 7) // 8
        samples = self.frame_pixels
        if self.photometric_interpretation == "YBR_FULL_422" and self.samples_per_pixel == 3:
            samples = self.rows * self.columns * 2
        return samples * (self.bits_allocated // 8)

    @property
    def is_color(self) -> bool:
        """True for multi-sample (colour) pixels."""
        return self.samples_per_pixel > 1

    def output_shape(self, count: int) -> tuple[int, ...]:
        """Shape of an array holding ``count`` frames."""
        return (count, *self.frame_shape)

    def new_array(self, count: int | None = None) -> np.ndarray:
        """An uninitialised array for one frame (count None) or ``count`` frames."""
        shape = self.frame_shape if count is None else self.output_shape(count)
        return np.empty(shape, dtype=self.dtype)

    def with_changes(self, **changes: Any) -> PixelDescription:
        """A copy with some attributes changed."""
        return replace(self, **changes)


def _present(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
