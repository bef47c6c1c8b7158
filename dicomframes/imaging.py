"""``image.dicom``: the geometry of a :meth:`Client.image <dicomframes.client.Client.image>`
DataArray, and its hand-over to NIfTI and SimpleITK.

Importing this module registers the xarray accessor (``import dicomframes`` does). It reads
only the DataArray's attrs (``spacing``, ``origin``, ``direction``, ``affine``), so an image
read back from netCDF or Zarr has it too.

Conventions (SimpleITK's): spacing and origin in (x, y, z) order, origin and directions in
DICOM's patient coordinates (LPS: x to the patient's left, y to the back, z to the head), the
direction a row-major 3x3 matrix whose columns are the row direction, the column direction and
the slice normal. NIfTI files use RAS (x and y negated), as dcm2niix and dicom2nifti write
them, with the data in (x, y, z) order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .convert.geometry import ras_affine
from .errors import DicomFramesError

__all__ = ["ImageAccessor", "ImageGeometry"]


@dataclass(frozen=True)
class ImageGeometry:
    """An image's geometry as SimpleITK takes it (see the module docstring)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    affine: np.ndarray


@xr.register_dataarray_accessor("dicom")
class ImageAccessor:
    """``image.dicom``: affines, NIfTI and SimpleITK for an image from ``client.image``."""

    def __init__(self, image: xr.DataArray) -> None:
        self._image = image

    def _attr(self, name: str, length: int) -> tuple[float, ...]:
        value = self._image.attrs.get(name)
        try:
            numbers = tuple(float(v) for v in np.asarray(value, dtype=np.float64).ravel())
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) != length:
            raise DicomFramesError(
                f"this DataArray has no {name!r} attr of {length} numbers: it did not come "
                "from client.image (or its attrs were dropped, e.g. by arithmetic: use "
                "xarray.set_options(keep_attrs=True) or copy them back)")
        return numbers

    @property
    def affine(self) -> np.ndarray:
        """4x4 float64: voxel index (x, y, z) -> LPS mm (DICOM patient coordinates).

        The attrs describe the whole image; a part cut out with ``isel``/``sel`` (an offset
        or a step along x, y, z) gets the affine of that part, worked out from its
        coordinates.
        """
        whole = np.asarray(self._attr("affine", 16)).reshape(4, 4)
        spacing = self._attr("spacing", 3)
        part = np.eye(4)
        for axis, name in enumerate(("x", "y", "z")):
            if name not in self._image.coords or spacing[axis] <= 0:
                continue
            values = np.asarray(self._image.coords[name].values, dtype=np.float64)
            if not len(values):
                continue
            part[axis, 3] = values[0] / spacing[axis]
            if len(values) > 1:
                part[axis, axis] = (values[-1] - values[0]) / (len(values) - 1) / spacing[axis]
        return whole @ part

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 float64: voxel index (x, y, z) -> RAS mm, the affine of a NIfTI file."""
        return ras_affine(self.affine)

    @property
    def geometry(self) -> ImageGeometry:
        """Spacing, origin, direction and affine (SimpleITK's conventions)."""
        affine = self.affine
        direction = np.asarray(self._attr("direction", 9)).reshape(3, 3)
        # spacing: each index step's length along its direction (the affine may be sheared)
        spacing = [float(np.dot(affine[:3, axis], direction[:, axis])) for axis in range(3)]
        return ImageGeometry(spacing=(spacing[0], spacing[1], spacing[2]),
                             origin=(float(affine[0, 3]), float(affine[1, 3]),
                                     float(affine[2, 3])),
                             direction=tuple(float(v) for v in direction.ravel()),
                             affine=affine)

    @property
    def voxel_volume(self) -> float:
        """The volume of one voxel in mm³ (|determinant| of the affine's 3x3 part)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def to_numpy_with_geometry(self) -> tuple[np.ndarray, ImageGeometry]:
        """The values in (z, y, x[, sample]) order, as ``SimpleITK.GetImageFromArray`` takes
        them, and the geometry to set on the image::

            array, g = image.dicom.to_numpy_with_geometry()
            itk = SimpleITK.GetImageFromArray(array, isVector=array.ndim == 4)
            itk.SetSpacing(g.spacing); itk.SetOrigin(g.origin); itk.SetDirection(g.direction)
        """
        self._check_dims()
        return np.asarray(self._image.values), self.geometry

    def to_sitk(self) -> Any:
        """A ``SimpleITK.Image`` of the values with spacing, origin and direction set
        (needs SimpleITK: ``pip install SimpleITK``)."""
        try:
            import SimpleITK as sitk
        except ImportError as exc:
            raise DicomFramesError("to_sitk needs SimpleITK: pip install SimpleITK") from exc
        array, geometry = self.to_numpy_with_geometry()
        out = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=array.ndim == 4)
        out.SetSpacing(geometry.spacing)
        out.SetOrigin(geometry.origin)
        out.SetDirection(geometry.direction)
        return out

    def to_nifti(self, path: str | os.PathLike[str]) -> Any:
        """Write a NIfTI-1 file (``.nii`` or ``.nii.gz``): data in (x, y, z[, sample])
        order, the RAS affine as sform and qform (scanner coordinates), units mm. Returns the
        ``nibabel.Nifti1Image``. Needs ``pip install dicomframes[nifti]``."""
        try:
            import nibabel
        except ImportError as exc:
            raise DicomFramesError(
                "to_nifti needs nibabel: pip install dicomframes[nifti]") from exc
        self._check_dims()
        data = np.asarray(self._image.values)
        data = np.moveaxis(data, (0, 1, 2), (2, 1, 0))  # (z, y, x) -> (x, y, z)
        affine = self.affine_ras
        out = nibabel.Nifti1Image(np.ascontiguousarray(data), affine)
        out.set_sform(affine, code=1)
        out.set_qform(affine, code=1)
        out.header.set_xyzt_units("mm")
        nibabel.save(out, os.fspath(path))
        return out

    def _check_dims(self) -> None:
        dims = self._image.dims
        if dims[:3] != ("z", "y", "x"):
            raise DicomFramesError(f"expected dims ('z', 'y', 'x'[, 'sample']), got {dims}: "
                                   "transpose back before exporting")
