"""Slices -> a volume's geometry in patient space, in SimpleITK's conventions.

The input is one :class:`Slice` per frame (its ImagePositionPatient, ImageOrientationPatient,
PixelSpacing and size, from the metadata). :func:`volume_geometry` puts the slices in order
along the slice normal and returns a :class:`Geometry`:

- ``spacing`` (x, y, z): between columns, between rows, between slices (mm); the slice spacing
  is the distance between slice positions, not SliceThickness (slices may overlap or leave gaps);
- ``origin``: the first voxel's centre in LPS mm (DICOM's patient coordinates);
- ``direction``: 9 numbers, row-major, columns = row direction, column direction, slice normal
  (what ``SimpleITK.Image.GetDirection()`` returns);
- ``affine``: 4x4, voxel index (x, y, z) -> LPS mm.

Bad geometry is named, never silently wrong: slices that differ in orientation, size or pixel
spacing, or share a position, raise :class:`~dicomframes.errors.GeometryError` naming two of
them; uneven spacing, a gantry tilt and missing positions give warnings
(:class:`~dicomframes.errors.IrregularSpacing`, :class:`~dicomframes.errors.GantryTilt`,
:class:`~dicomframes.errors.MissingGeometry`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import errors

__all__ = ["Geometry", "Slice", "ras_affine", "volume_geometry"]

#: Direction cosines and pixel spacings closer than this count as equal.
COSINE_TOLERANCE = 1e-4
#: A gap this much (relative) away from the mean slice spacing makes the spacing irregular.
SPACING_TOLERANCE = 0.01
#: Slices closer than this (mm) along the normal are at the same position.
SAME_POSITION = 1e-4
#: Radians between the stacking direction and the slice normal that make a tilt.
TILT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Slice:
    """One frame as the geometry sees it; ``label`` names it in messages."""

    label: str
    rows: int
    columns: int
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    instance_number: int | None = None
    spacing_between_slices: float | None = None
    slice_thickness: float | None = None


@dataclass(frozen=True)
class Geometry:
    """Where a volume lies (see the module docstring for the conventions).

    ``order``: indices into the slices given, in volume order; ``z``: each slice's distance
    along the normal from the first (mm, true positions even when spacing is uneven).
    """

    order: tuple[int, ...]
    z: tuple[float, ...]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    affine: tuple[tuple[float, ...], ...]

    @property
    def affine_array(self) -> np.ndarray:
        """The 4x4 affine (voxel index x, y, z -> LPS mm) as a float64 array."""
        return np.asarray(self.affine, dtype=np.float64)


def ras_affine(affine_lps: np.ndarray) -> np.ndarray:
    """The same affine in RAS (NIfTI's world): x and y of patient space negated."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_lps, dtype=np.float64)


def _differ(a: Sequence[float] | None, b: Sequence[float] | None, tolerance: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) > tolerance


def _check_alike(slices: Sequence[Slice]) -> None:
    """Raise GeometryError naming two slices that cannot share a volume."""
    first = slices[0]
    for other in slices[1:]:
        if (other.rows, other.columns) != (first.rows, first.columns):
            raise errors.GeometryError(
                f"slices of different size: {first.label} is {first.rows}x{first.columns}, "
                f"{other.label} is {other.rows}x{other.columns}")
        if _differ(first.orientation, other.orientation, COSINE_TOLERANCE):
            raise errors.GeometryError(
                f"slices of different orientation: {first.label} has ImageOrientationPatient "
                f"{first.orientation}, {other.label} has {other.orientation}; read them as "
                "separate volumes (instances=...)")
        if _differ(first.pixel_spacing, other.pixel_spacing,
                   COSINE_TOLERANCE * max(first.pixel_spacing or (1.0,))):
            raise errors.GeometryError(
                f"slices of different pixel spacing: {first.label} has PixelSpacing "
                f"{first.pixel_spacing}, {other.label} has {other.pixel_spacing}")


def _frame_axes(orientation: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and normal (unit vectors; identity when unknown)."""
    if orientation is None:
        return np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]
    row = np.asarray(orientation[:3], dtype=np.float64)
    column = np.asarray(orientation[3:], dtype=np.float64)
    row /= np.linalg.norm(row) or 1.0
    column /= np.linalg.norm(column) or 1.0
    normal = np.cross(row, column)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise errors.GeometryError(f"ImageOrientationPatient {tuple(orientation)} has parallel "
                                   "row and column directions")
    return row, column, normal / norm


def _fallback_spacing(first: Slice) -> float:
    for value in (first.spacing_between_slices, first.slice_thickness):
        if value is not None and value > 0:
            return float(value)
    return 1.0


def _by_number(slices: Sequence[Slice]) -> list[int]:
    def key(i: int) -> tuple:
        number = slices[i].instance_number
        return (number is None, number if number is not None else 0, slices[i].label)

    return sorted(range(len(slices)), key=key)


def _check_positions(slices: Sequence[Slice], order: list[int], distances: np.ndarray) -> None:
    gaps = np.diff(distances)
    if len(gaps) and float(gaps.min()) < SAME_POSITION:
        at = int(np.argmin(gaps))
        raise errors.GeometryError(
            f"two slices at the same position along the normal ({distances[at]:.4f} mm): "
            f"{slices[order[at]].label} and {slices[order[at + 1]].label}; a series with "
            "several acquisitions or echoes needs instances=... to pick one volume")
    if len(gaps) > 1:
        mean = float(distances[-1] - distances[0]) / len(gaps)
        worst = int(np.argmax(np.abs(gaps - mean)))
        if abs(gaps[worst] - mean) > SPACING_TOLERANCE * mean:
            warnings.warn(errors.IrregularSpacing(
                f"uneven slice spacing: the largest gap is {float(gaps.max()):.4g} mm, the "
                f"mean {mean:.4g} mm (gap {gaps[worst]:.4g} mm between "
                f"{slices[order[worst]].label} and {slices[order[worst + 1]].label}); the z "
                "coordinate holds the true positions, spacing and affine the mean"),
                stacklevel=4)


def volume_geometry(slices: Sequence[Slice]) -> Geometry:
    """Order ``slices`` along the slice normal and compute the volume's geometry.

    Raises GeometryError when they cannot form one volume; warns (see the module docstring)
    when the volume is not a regular grid or its positions are unknown.
    """
    if not slices:
        raise errors.GeometryError("no slices to make a volume of")
    _check_alike(slices)
    first = slices[0]
    row, column, normal = _frame_axes(first.orientation)
    if first.pixel_spacing is not None:
        dy, dx = (float(v) for v in first.pixel_spacing)
    else:
        dy = dx = 1.0
        warnings.warn(errors.MissingGeometry(
            f"no PixelSpacing ({first.label}): the x and y spacing are taken as 1 mm"),
            stacklevel=3)
    positioned = first.orientation is not None and all(s.position is not None for s in slices)
    if positioned:
        points = np.asarray([s.position for s in slices], dtype=np.float64)
        along = points @ normal
        order = sorted(range(len(slices)), key=lambda i: (
            along[i], slices[i].instance_number or 0, slices[i].label))
        distances = along[order]
        _check_positions(slices, order, distances)
        origin = points[order[0]]
        if len(slices) > 1:
            step = (points[order[-1]] - points[order[0]]) / (len(slices) - 1)
            dz = float(distances[-1] - distances[0]) / (len(slices) - 1)
            sideways = step - np.dot(step, normal) * normal
            tilt = math.atan2(float(np.linalg.norm(sideways)), abs(float(np.dot(step, normal))))
            if tilt > TILT_TOLERANCE:
                warnings.warn(errors.GantryTilt(
                    f"the slices are stacked {math.degrees(tilt):.2f} degrees off their normal "
                    "(gantry tilt): the affine follows the slice positions (sheared), the "
                    "direction and spacing are those of the slice planes; resample before "
                    "using tools that assume an orthogonal grid"), stacklevel=3)
        else:
            dz = _fallback_spacing(first)
            step = normal * dz
        z = tuple(float(d - distances[0]) for d in distances)
    else:
        order = _by_number(slices)
        dz = _fallback_spacing(first)
        step = normal * dz
        missing = next(s for s in slices if s.position is None or s.orientation is None)
        warnings.warn(errors.MissingGeometry(
            f"{missing.label} has no ImagePositionPatient/ImageOrientationPatient: slices "
            f"in InstanceNumber order, {dz:g} mm apart (SpacingBetweenSlices, SliceThickness "
            "or 1), origin and direction not known to be right"), stacklevel=3)
        origin = np.asarray(slices[order[0]].position or (0.0, 0.0, 0.0), dtype=np.float64)
        z = tuple(float(i * dz) for i in range(len(slices)))
    direction = np.column_stack([row, column, normal])
    affine = np.eye(4)
    affine[:3, 0] = row * dx
    affine[:3, 1] = column * dy
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return Geometry(
        order=tuple(order),
        z=z,
        spacing=(dx, dy, float(dz)),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in direction.ravel()),
        affine=tuple(tuple(float(v) for v in line) for line in affine),
    )
