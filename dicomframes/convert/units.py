"""Stored values -> modality values (PS3.3 C.11.1), one frame's transformation at a time.

A :class:`ValueTransform` is what one frame needs: Rescale Slope/Intercept (from the top level,
or per frame from an enhanced instance's functional groups) or a Modality LUT. The arithmetic
is :func:`dicomframes.standard.lut.apply_modality_lut`'s, written into a preallocated output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..standard.frame_groups import ModalityLUT

__all__ = ["ValueTransform", "apply_into", "output_dtype", "units_name"]


@dataclass(frozen=True)
class ValueTransform:
    """How one frame's stored values become modality values."""

    slope: float = 1.0
    intercept: float = 0.0
    lut: ModalityLUT | None = None
    signed: bool = False

    @property
    def identity(self) -> bool:
        """True when the stored values are the modality values."""
        return self.lut is None and self.slope == 1.0 and self.intercept == 0.0


def output_dtype(transforms: Iterable[ValueTransform], stored: np.dtype) -> np.dtype:
    """float32, unless no frame needs a transformation (then the stored dtype)."""
    if all(t.identity for t in transforms):
        return np.dtype(stored)
    return np.dtype(np.float32)


def _lookup(stored: np.ndarray, lut: ModalityLUT, signed: bool) -> np.ndarray:
    first = lut.first_mapped
    if signed and first >= 32768:  # the descriptor's US holds a signed first value
        first -= 65536
    table = np.asarray(lut.data, dtype=np.float32)
    index = np.clip(stored.astype(np.int64) - first, 0, len(table) - 1)
    return table[index]


def apply_into(stored: np.ndarray, out: np.ndarray, transform: ValueTransform) -> None:
    """Write ``stored`` (one or more frames) as modality values into ``out`` (same shape)."""
    if transform.lut is not None:
        out[...] = _lookup(stored, transform.lut, transform.signed)
        return
    if transform.identity:
        np.copyto(out, stored, casting="unsafe")
        return
    # float32 arithmetic, as SimpleITK and dcm2niix compute it; no float64 temporary
    if transform.slope == 1.0:  # CT usually: one pass
        np.add(stored, np.float32(transform.intercept), out=out, dtype=np.float32,
               casting="unsafe")
        return
    np.multiply(stored, np.float32(transform.slope), out=out, dtype=np.float32,
                casting="unsafe")
    out += np.float32(transform.intercept)


def units_name(modality: str | None, rescale_type: str | None, pet_units: str | None) -> str:
    """The unit of modality values: RescaleType when given, HU for CT, PET's Units, else ""."""
    if rescale_type:
        return rescale_type
    if modality == "CT":
        return "HU"
    if modality == "PT" and pet_units:
        return pet_units
    return ""
