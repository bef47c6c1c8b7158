"""Per-frame geometry and pixel value transformations of an image instance (DICOM JSON).

A classic single-frame instance gives them at the top level (Image Plane module, PS3.3 C.7.6.2;
Modality LUT module, C.11.1). An enhanced multi-frame instance (enhanced CT/MR/PET, PS3.3
C.7.6.16) gives them in functional groups: a value of the Per-Frame Functional Groups Sequence
item of a frame overrides the Shared Functional Groups Sequence, which overrides the top level.
:func:`frame_attributes` reads both shapes into one :class:`FrameAttributes` per frame.

Rules only: JSON objects in, plain values out, no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .dicomjson import python_value

__all__ = ["FrameAttributes", "ModalityLUT", "frame_attributes", "modality_lut_of"]

# Functional group containers (PS3.3 C.7.6.16) and the macros read here (C.7.6.16.2).
SHARED_GROUPS = "52009229"
PER_FRAME_GROUPS = "52009230"
PLANE_POSITION = "00209113"
PLANE_ORIENTATION = "00209116"
PIXEL_MEASURES = "00289110"
PIXEL_VALUE_TRANSFORMATION = "00289145"
FRAME_VOI_LUT = "00289132"

IMAGE_POSITION = "00200032"
IMAGE_ORIENTATION = "00200037"
PIXEL_SPACING = "00280030"
SLICE_THICKNESS = "00180050"
SPACING_BETWEEN_SLICES = "00180088"
RESCALE_INTERCEPT = "00281052"
RESCALE_SLOPE = "00281053"
RESCALE_TYPE = "00281054"
WINDOW_CENTER = "00281050"
WINDOW_WIDTH = "00281051"
MODALITY_LUT_SEQUENCE = "00283000"
LUT_DESCRIPTOR = "00283002"
MODALITY_LUT_TYPE = "00283004"
LUT_DATA = "00283006"

# The attributes of a frame and the functional group macro that may carry each of them.
_READ: dict[str, tuple[str, str | None]] = {
    "position": (IMAGE_POSITION, PLANE_POSITION),
    "orientation": (IMAGE_ORIENTATION, PLANE_ORIENTATION),
    "pixel_spacing": (PIXEL_SPACING, PIXEL_MEASURES),
    "slice_thickness": (SLICE_THICKNESS, PIXEL_MEASURES),
    "spacing_between_slices": (SPACING_BETWEEN_SLICES, PIXEL_MEASURES),
    "slope": (RESCALE_SLOPE, PIXEL_VALUE_TRANSFORMATION),
    "intercept": (RESCALE_INTERCEPT, PIXEL_VALUE_TRANSFORMATION),
    "rescale_type": (RESCALE_TYPE, PIXEL_VALUE_TRANSFORMATION),
    "window_center": (WINDOW_CENTER, FRAME_VOI_LUT),
    "window_width": (WINDOW_WIDTH, FRAME_VOI_LUT),
}
_LENGTHS = {"position": 3, "orientation": 6, "pixel_spacing": 2}


@dataclass(frozen=True)
class FrameAttributes:
    """Where one frame lies and how its stored values become modality values.

    ``position``: ImagePositionPatient (LPS, mm, centre of the first pixel); ``orientation``:
    ImageOrientationPatient (row then column direction cosines); ``pixel_spacing``: (between
    rows, between columns) in mm, as PixelSpacing lists them. ``slope``/``intercept``: Rescale
    Slope and Intercept (None when absent). Window values: the first given.
    """

    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    slope: float | None = None
    intercept: float | None = None
    rescale_type: str | None = None
    window_center: float | None = None
    window_width: float | None = None


@dataclass(frozen=True)
class ModalityLUT:
    """A Modality LUT (PS3.3 C.11.1.1): stored values from ``first_mapped`` on index ``data``;
    values below map to the first entry, above to the last."""

    first_mapped: int
    data: tuple[int, ...]
    lut_type: str | None = None


def _element(obj: Mapping[str, Any], tag: str) -> Any:
    element = obj.get(tag)
    if element is None:
        element = obj.get(tag.lower())
    return element if isinstance(element, Mapping) else None


def _items(obj: Mapping[str, Any] | None, tag: str) -> list[Mapping[str, Any]]:
    """The raw JSON items of a sequence (empty when absent)."""
    element = _element(obj, tag) if obj is not None else None
    values = element.get("Value") if element is not None else None
    return [item for item in values if isinstance(item, Mapping)] if isinstance(
        values, list) else []


def _value(obj: Mapping[str, Any], tag: str, name: str) -> Any:
    """The attribute ``name`` (typed as FrameAttributes wants it) in ``obj``, else None."""
    element = _element(obj, tag)
    if element is None:
        return None
    value = python_value(dict(element), int(tag, 16))
    if name in _LENGTHS:
        if not isinstance(value, list) or len(value) != _LENGTHS[name]:
            return None
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return None
    if isinstance(value, list):
        value = value[0] if value else None
    if name == "rescale_type":
        return str(value).strip() or None if value is not None else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _read(obj: Mapping[str, Any] | None, into: dict[str, Any], grouped: bool) -> None:
    """Fill ``into`` from ``obj``: a functional groups item (``grouped``) or the top level."""
    if obj is None:
        return
    for name, (tag, macro) in _READ.items():
        if grouped:
            if macro is None:
                continue
            for item in _items(obj, macro)[:1]:
                value = _value(item, tag, name)
                if value is not None:
                    into[name] = value
        else:
            value = _value(obj, tag, name)
            if value is not None:
                into[name] = value


def frame_attributes(obj: Mapping[str, Any], number_of_frames: int) -> tuple[FrameAttributes, ...]:
    """One :class:`FrameAttributes` per frame of the instance ``obj`` (a DICOM JSON object):
    the top level, overridden by the shared functional groups, overridden by the frame's own."""
    base: dict[str, Any] = {}
    _read(obj, base, grouped=False)
    shared = _items(obj, SHARED_GROUPS)
    _read(shared[0] if shared else None, base, grouped=True)
    per_frame = _items(obj, PER_FRAME_GROUPS)
    if not per_frame:
        one = FrameAttributes(**base)
        return (one,) * max(1, number_of_frames)
    frames = []
    for index in range(max(1, number_of_frames)):
        values = dict(base)
        _read(per_frame[index] if index < len(per_frame) else None, values, grouped=True)
        frames.append(FrameAttributes(**values))
    return tuple(frames)


def _lut_numbers(element: Mapping[str, Any], bits: int) -> tuple[int, ...] | None:
    if "InlineBinary" in element:
        data = element["InlineBinary"]
        raw = base64.b64decode("".join(data) if isinstance(data, list) else data)
        width = 2 if bits > 8 or len(raw) % 2 == 0 else 1
        return tuple(int.from_bytes(raw[i:i + width], "little")
                     for i in range(0, len(raw) - width + 1, width))
    values = element.get("Value")
    if isinstance(values, list) and all(isinstance(v, int | float) for v in values):
        return tuple(int(v) for v in values)
    return None


def modality_lut_of(obj: Mapping[str, Any]) -> ModalityLUT | None:
    """The instance's Modality LUT (first item of the Modality LUT Sequence), else None.

    LUT Data must come inline (``Value`` or ``InlineBinary``); a LUT sent as a BulkDataURI
    raises ValueError (fetch the instance instead).
    """
    items = _items(obj, MODALITY_LUT_SEQUENCE)
    if not items:
        return None
    item = items[0]
    descriptor_element = _element(item, LUT_DESCRIPTOR)
    descriptor = python_value(dict(descriptor_element), int(LUT_DESCRIPTOR, 16)) if (
        descriptor_element is not None) else None
    if not isinstance(descriptor, Sequence) or len(descriptor) != 3:
        raise ValueError(f"the Modality LUT Descriptor needs 3 numbers, got {descriptor!r}")
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536  # PS3.3 C.11.1.1: 0 means 2^16 entries
    data_element = _element(item, LUT_DATA)
    data = _lut_numbers(data_element, bits) if data_element is not None else None
    if data is None:
        raise ValueError("the Modality LUT Data is not in the metadata (sent as bulk data?); "
                         "the stored values cannot be turned into modality values")
    lut_type = _value(item, MODALITY_LUT_TYPE, "rescale_type")
    return ModalityLUT(first_mapped=first, data=data[:entries], lut_type=lut_type)
