"""``client.image``: generated series with known geometry stored on the embedded server, read
back as DataArrays and compared with SimpleITK's ImageSeriesReader on the same files, with
nibabel reading the NIfTI export, and with pydicom's own CT and MR files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from volumes import SAGITTAL, Series, ct_series, enhanced_ct, oblique

import dicomframes
from dicomframes import errors

sitk = pytest.importorskip("SimpleITK")
nibabel = pytest.importorskip("nibabel")
xr = pytest.importorskip("xarray")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def client(embedded: object) -> dicomframes.Client:
    return dicomframes.connect(embedded.url, progress=False)  # type: ignore[attr-defined]


def stored(client: dicomframes.Client, series: Series) -> Series:
    outcome = client.store([str(p) for p in series.paths], progress=False)
    assert set(outcome["status"]) == {"stored"}
    return series


def sitk_series(folder: Path, series: str) -> object:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series))
    return reader.Execute()


def image_of(client: dicomframes.Client, series: Series, **options: object) -> xr.DataArray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", errors.GeometryWarning)
        return client.image(series.study, series.series, **options)


def assert_same_geometry(image: xr.DataArray, itk: object) -> None:
    np.testing.assert_allclose(image.attrs["spacing"], itk.GetSpacing(), atol=TOLERANCE)
    np.testing.assert_allclose(image.attrs["origin"], itk.GetOrigin(), atol=TOLERANCE)
    np.testing.assert_allclose(image.attrs["direction"], itk.GetDirection(), atol=TOLERANCE)


CASES = {
    "axial 1.25 mm": dict(),
    "oblique, non-square pixels, 0.7 mm, slope 2.5, intercept -1000.5, signed": dict(
        orientation=oblique(), pixel=(0.6, 0.8), spacing=0.7, slope=2.5, intercept=-1000.5,
        signed=True),
    "sagittal 5 mm, slope 0.5": dict(orientation=SAGITTAL, spacing=5.0, slope=0.5,
                                     intercept=-1024, rows=9, columns=14),
}


@pytest.mark.parametrize("case", list(CASES))
def test_image_matches_simpleitk(client: dicomframes.Client, tmp_path: Path, case: str) -> None:
    series = stored(client, ct_series(tmp_path, **CASES[case]))
    image = image_of(client, series)
    itk = sitk_series(tmp_path, series.series)
    assert image.dims == ("z", "y", "x") and image.dtype == np.float32
    np.testing.assert_allclose(image.values, sitk.GetArrayFromImage(itk), atol=TOLERANCE)
    np.testing.assert_allclose(image.values, series.expected, atol=TOLERANCE)
    assert_same_geometry(image, itk)
    # coordinates in mm: z along the normal, y and x from the first voxel
    spacing = image.attrs["spacing"]
    np.testing.assert_allclose(image.z, np.arange(len(image.z)) * spacing[2], atol=TOLERANCE)
    np.testing.assert_allclose(image.x[1] - image.x[0], spacing[0])
    np.testing.assert_allclose(image.y[1] - image.y[0], spacing[1])
    # the affine maps voxel (0, 0, k) onto slice k's ImagePositionPatient, as SimpleITK does
    affine = image.dicom.affine
    for k in range(len(image.z)):
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*series.positions[k], 1], atol=1e-3)
        np.testing.assert_allclose(affine[:3] @ [3, 2, k, 1],
                                   itk.TransformIndexToPhysicalPoint((3, 2, k)), atol=1e-3)
    assert image.attrs["Modality"] == "CT" and image.attrs["units"] == "HU"
    assert image.attrs["WindowCenter"] == 40 and image.attrs["WindowWidth"] == 400
    assert image.attrs["SeriesInstanceUID"] == series.series
    assert json.loads(json.dumps(image.attrs)) == image.attrs  # every attr a JSON value
    # SliceThickness (2.5 in these files) is not the spacing
    assert spacing[2] == pytest.approx(CASES[case].get("spacing", 1.25), abs=TOLERANCE)


def test_stored_units_are_the_volume(client: dicomframes.Client, tmp_path: Path) -> None:
    series = stored(client, ct_series(tmp_path, slope=2.0, intercept=-1000))
    image = image_of(client, series, units="stored")
    volume = client.volume(series.study, series.series)
    assert image.dtype == volume.dtype == np.uint16 and image.attrs["units"] == ""
    np.testing.assert_array_equal(image.values, volume)
    with pytest.raises(ValueError, match="units"):
        client.image(series.study, series.series, units="HU")


def test_monochrome1_values_are_modality_values(client: dicomframes.Client,
                                                 tmp_path: Path) -> None:
    """MONOCHROME1 says how to display, not what the values are: the HU stay the HU.
    (SimpleITK's GDCM reader inverts MONOCHROME1 pixels; only its geometry is compared.)"""
    series = stored(client, ct_series(tmp_path, photometric="MONOCHROME1", spacing=5.0))
    image = image_of(client, series)
    np.testing.assert_allclose(image.values, series.expected)
    assert image.attrs["PhotometricInterpretation"] == "MONOCHROME1"
    assert_same_geometry(image, sitk_series(tmp_path, series.series))


def test_uneven_spacing_warns_and_keeps_true_positions(client: dicomframes.Client,
                                                        tmp_path: Path) -> None:
    gaps = [1.0, 1.0, 2.5, 1.0, 1.0]
    series = stored(client, ct_series(tmp_path, spacing=gaps))
    with pytest.warns(errors.IrregularSpacing, match="largest gap is 2.5 mm"):
        image = client.image(series.study, series.series)
    np.testing.assert_allclose(image.z, np.concatenate([[0], np.cumsum(gaps)]), atol=TOLERANCE)
    itk = sitk_series(tmp_path, series.series)
    np.testing.assert_allclose(image.values, sitk.GetArrayFromImage(itk))
    assert_same_geometry(image, itk)  # the mean spacing, as SimpleITK takes it


def test_gantry_tilt_warns_and_the_affine_follows_the_slices(client: dicomframes.Client,
                                                              tmp_path: Path) -> None:
    series = stored(client, ct_series(tmp_path, tilt=15.0))
    with pytest.warns(errors.GantryTilt, match="15.00 degrees"):
        image = client.image(series.study, series.series)
    itk = sitk_series(tmp_path, series.series)
    np.testing.assert_allclose(image.values, sitk.GetArrayFromImage(itk))
    np.testing.assert_allclose(image.attrs["origin"], itk.GetOrigin(), atol=TOLERANCE)
    np.testing.assert_allclose(image.attrs["direction"], itk.GetDirection(), atol=TOLERANCE)
    for k in range(len(image.z)):  # SimpleITK puts slice k on the normal; the affine does not
        np.testing.assert_allclose(image.dicom.affine @ [0, 0, k, 1], [*series.positions[k], 1],
                                   atol=1e-3)
    np.testing.assert_allclose(image.z, np.arange(6) * 1.25, atol=TOLERANCE)


def _rewrite(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for name, value in changes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("change, message", [
    ({"ImageOrientationPatient": list(SAGITTAL)}, "different orientation"),
    ({"PixelSpacing": [0.7, 0.7]}, "different pixel spacing"),
    ({"ImagePositionPatient": None, "InstanceNumber": 99}, None),
    ({"ImagePositionPatient": ["-30", "-20", "52.5"]}, "same position"),
])
def test_slices_that_are_not_one_volume_are_named(client: dicomframes.Client, tmp_path: Path,
                                                   change: dict, message: str | None) -> None:
    series = ct_series(tmp_path, shuffle=False)
    _rewrite(series.paths[3], **change)
    stored(client, series)
    if message is None:  # no position: InstanceNumber order, with a warning
        with pytest.warns(errors.MissingGeometry, match="InstanceNumber order"):
            image = client.image(series.study, series.series)
        assert list(image.SOPInstanceUID.values) == [*series.sops[:3], *series.sops[4:],
                                                     series.sops[3]]
        return
    with pytest.raises(errors.GeometryError, match=message) as info:
        client.image(series.study, series.series)
    named = [sop for sop in series.sops if sop in str(info.value)]
    assert series.sops[3] in named and len(named) == 2


def test_instances_of_different_size_are_named(client: dicomframes.Client,
                                                tmp_path: Path) -> None:
    series = ct_series(tmp_path / "a", shuffle=False)
    other = ct_series(tmp_path / "b", rows=8)
    ds = pydicom.dcmread(other.paths[0])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study, series.series
    ds.save_as(other.paths[0], enforce_file_format=True)
    stored(client, series)
    client.store([str(other.paths[0])], progress=False)
    with pytest.raises(errors.GeometryError, match="different size") as info:
        client.image(series.study, series.series)
    assert other.sops[0] in str(info.value)
    # the instances of one size still make a volume
    image = image_of(client, series, instances=series.sops)
    assert image.shape == (6, 12, 10)


def test_enhanced_multiframe_per_frame_positions_and_rescale(client: dicomframes.Client,
                                                             tmp_path: Path) -> None:
    """Frames stored in reverse order, each with its own position and slope/intercept: the
    image is the single-frame series' (SimpleITK reads that one)."""
    single = ct_series(tmp_path / "single", orientation=oblique(30), pixel=(0.7, 0.5),
                       spacing=1.25)
    slopes = [1.0, 0.5, 2.0, 1.0, 0.25, 1.5]
    intercepts = [-1024.0, -1000.0, -1100.0, -1024.0, -512.0, -1050.0]
    path, expected = enhanced_ct(tmp_path / "enhanced", single, slopes, intercepts,
                                 orientation=oblique(30), pixel=(0.7, 0.5))
    client.store([str(path)], progress=False)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    image = image_of(client, Series(ds.StudyInstanceUID, ds.SeriesInstanceUID, [], expected,
                                    single.positions))
    assert image.shape == (6, 12, 10)
    np.testing.assert_allclose(image.values, expected, atol=TOLERANCE)
    assert list(image.frame.values) == [6, 5, 4, 3, 2, 1]
    assert_same_geometry(image, sitk_series(tmp_path / "single", single.series))
    assert image.attrs["units"] == "HU"


def test_multiframe_and_single_frame_instances_make_one_volume(client: dicomframes.Client,
                                                               tmp_path: Path) -> None:
    """Slices 0-2 in one enhanced instance, slices 3-5 as single-frame instances."""
    single = ct_series(tmp_path / "single", shuffle=False)
    part = Series(single.study, single.series, [], single.expected[:3], single.positions[:3])
    path, _ = enhanced_ct(tmp_path / "enhanced", part, [1.0] * 3, [-1024.0] * 3,
                          series=single.series)
    client.store([str(path), *map(str, single.paths[3:])], progress=False)
    image = image_of(client, single)
    np.testing.assert_allclose(image.values, single.expected)
    assert list(image.frame.values) == [3, 2, 1, 1, 1, 1]
    assert list(image.SOPInstanceUID.values[3:]) == single.sops[3:]
    assert_same_geometry(image, sitk_series(tmp_path / "single", single.series))


def test_colour_image_has_a_sample_axis(client: dicomframes.Client,
                                        tutorial_files: list[Path]) -> None:
    ds = pydicom.dcmread(tutorial_files[0])
    client.store([str(tutorial_files[0])], progress=False)
    with pytest.warns(errors.MissingGeometry):
        # the tutorial's series holds two files, and other tests may have stored the other one
        image = client.image(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                             instances=[ds.SOPInstanceUID])
    assert image.dims == ("z", "y", "x", "sample") and image.dtype == np.uint8
    assert list(image.SOPInstanceUID.values) == [ds.SOPInstanceUID]
    np.testing.assert_array_equal(image.values[0], ds.pixel_array)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_files_match_simpleitk(client: dicomframes.Client, name: str) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    client.store([path], progress=False)
    image = client.image(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    itk = sitk.ReadImage(path)
    np.testing.assert_allclose(image.values, sitk.GetArrayFromImage(itk), atol=TOLERANCE)
    np.testing.assert_allclose(image.attrs["spacing"][:2], itk.GetSpacing()[:2], atol=TOLERANCE)
    np.testing.assert_allclose(image.attrs["origin"], itk.GetOrigin(), atol=TOLERANCE)
    np.testing.assert_allclose(image.attrs["direction"], itk.GetDirection(), atol=TOLERANCE)
    assert image.attrs["Modality"] == ds.Modality


def test_nifti_export_read_back_with_nibabel(client: dicomframes.Client,
                                              tmp_path: Path) -> None:
    series = stored(client, ct_series(tmp_path / "dcm", orientation=oblique(),
                                      pixel=(0.6, 0.8), spacing=0.7))
    image = image_of(client, series)
    image.dicom.to_nifti(tmp_path / "ct.nii.gz")
    back = nibabel.load(tmp_path / "ct.nii.gz")
    assert back.shape == (10, 12, 6)  # x, y, z
    np.testing.assert_allclose(back.get_fdata(), np.transpose(series.expected, (2, 1, 0)),
                               atol=TOLERANCE)
    np.testing.assert_allclose(back.affine, image.dicom.affine_ras, atol=1e-5)
    # RAS is LPS with x and y negated: voxel (i, j, k) lands where SimpleITK puts it
    itk = sitk_series(tmp_path / "dcm", series.series)
    for index in [(0, 0, 0), (9, 11, 5), (4, 3, 2)]:
        lps = np.asarray(itk.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(back.affine @ [*index, 1], [-lps[0], -lps[1], lps[2], 1],
                                   atol=1e-3)
    assert back.header.get_xyzt_units()[0] == "mm"
    assert int(back.header["sform_code"]) == 1


def test_simpleitk_hand_over_and_netcdf_zarr_round_trips(client: dicomframes.Client,
                                                         tmp_path: Path) -> None:
    series = stored(client, ct_series(tmp_path / "dcm", orientation=SAGITTAL, spacing=5.0))
    image = image_of(client, series)
    itk = sitk_series(tmp_path / "dcm", series.series)
    handed = image.dicom.to_sitk()
    assert handed.GetSize() == itk.GetSize()
    assert_same_geometry(image, handed)
    np.testing.assert_allclose(sitk.GetArrayFromImage(handed), sitk.GetArrayFromImage(itk))
    image.to_netcdf(tmp_path / "ct.nc")
    back = xr.open_dataarray(tmp_path / "ct.nc")
    np.testing.assert_array_equal(back.values, image.values)
    np.testing.assert_allclose(back.dicom.affine, image.dicom.affine)
    image.to_dataset(name="image").to_zarr(tmp_path / "ct.zarr", consolidated=False)
    again = xr.open_zarr(tmp_path / "ct.zarr", consolidated=False)["image"]
    np.testing.assert_array_equal(again.values, image.values)
    assert again.attrs["SeriesInstanceUID"] == series.series


def test_a_cut_out_part_has_its_own_affine(client: dicomframes.Client, tmp_path: Path) -> None:
    series = stored(client, ct_series(tmp_path, orientation=oblique(), count=8))
    image = image_of(client, series)
    part = image.isel(z=slice(2, 8, 2), y=slice(3, None), x=slice(1, None, 3))
    for index in [(0, 0, 0), (1, 2, 2)]:
        i, j, k = index
        whole = (1 + 3 * i, 3 + j, 2 + 2 * k, 1)
        np.testing.assert_allclose(part.dicom.affine @ [*index, 1], image.dicom.affine @ whole,
                                   atol=1e-6)
    assert part.dicom.geometry.spacing == pytest.approx(
        (image.attrs["spacing"][0] * 3, image.attrs["spacing"][1], image.attrs["spacing"][2] * 2))
    assert image.dicom.voxel_volume == pytest.approx(np.prod(image.attrs["spacing"]))


# ---- caches that cannot go stale --------------------------------------------------------------


def test_cache_follows_this_clients_store_and_delete(client: dicomframes.Client,
                                                     tmp_path: Path) -> None:
    series = ct_series(tmp_path, count=6, shuffle=False)
    client.store([str(p) for p in series.paths[:3]], progress=False)
    assert client.volume(series.study, series.series).shape == (3, 12, 10)
    assert client.image(series.study, series.series).shape == (3, 12, 10)
    client.store([str(p) for p in series.paths[3:]], progress=False)
    assert client.volume(series.study, series.series).shape == (6, 12, 10)
    client.delete(series.study, series.series, series.sops[2])
    with pytest.warns(errors.IrregularSpacing):  # a slice is missing
        image = client.image(series.study, series.series)
    assert image.shape == (5, 12, 10) and series.sops[2] not in image.SOPInstanceUID.values
    assert client.volume(series.study, series.series).shape == (5, 12, 10)


def test_cache_notices_another_clients_changes(embedded: object, tmp_path: Path) -> None:
    series = ct_series(tmp_path, count=6, shuffle=False)
    client = dicomframes.connect(embedded.url, progress=False,  # type: ignore[attr-defined]
                                 history_size=1000)
    other = dicomframes.connect(embedded.url, progress=False)  # type: ignore[attr-defined]
    other.store([str(p) for p in series.paths[:3]], progress=False)
    assert client.image(series.study, series.series).shape == (3, 12, 10)
    other.store([str(p) for p in series.paths[3:]], progress=False)
    assert client.image(series.study, series.series).shape == (6, 12, 10)
    other.delete(series.study, series.series, series.sops[5])
    assert client.volume(series.study, series.series).shape == (5, 12, 10)
    # a trusted cache costs one small search, not the series metadata
    before = len(client.history)
    client.image(series.study, series.series)
    urls = [e.url for e in list(client.history)[before:]]
    assert not [u for u in urls if u.endswith("/metadata")]
    assert len([u for u in urls if "/series?" in u]) == 1


# ---- everywhere arrays come out ------------------------------------------------------------


def test_series_rows_give_images_lazily(client: dicomframes.Client, tmp_path: Path) -> None:
    a = stored(client, ct_series(tmp_path / "a"))
    b = stored(client, ct_series(tmp_path / "b", spacing=5.0, rows=8))
    rows = pd.concat([client.search_series(a.study), client.search_series(b.study)],
                     ignore_index=True)
    rows.attrs = client.search_series(a.study).attrs
    images = rows.dicom.images(progress=False)
    first = next(images)
    np.testing.assert_allclose(first.values, a.expected)
    second = next(images)
    assert second.shape == (6, 8, 10) and second.attrs["spacing"][2] == pytest.approx(5.0)
    assert next(images, None) is None
    instances = client.search_instances(a.study, a.series)
    picked = instances[instances["SOPInstanceUID"].isin(a.sops[:4])]
    only = next(picked.dicom.images(progress=False))
    assert sorted(only.SOPInstanceUID.values) == sorted(a.sops[:4])


def test_dask_series_image_is_the_same_image(client: dicomframes.Client, embedded: object,
                                             tmp_path: Path) -> None:
    from dicomframes.dask import series_image

    series = stored(client, ct_series(tmp_path, count=9, orientation=oblique(), slope=2.0,
                                      intercept=-1000))
    lazy = series_image(embedded.url, series.study, series.series,  # type: ignore[attr-defined]
                        slices_per_chunk=4)
    assert lazy.chunks[0] == (4, 4, 1)
    eager = image_of(client, series)
    assert lazy.attrs == eager.attrs
    np.testing.assert_allclose(lazy.z, eager.z)
    np.testing.assert_array_equal(lazy.compute().values, eager.values)
    assert float(lazy.mean()) == pytest.approx(float(eager.mean()))


def test_parquet_table_does_not_borrow_credentials(embedded: object, tmp_path: Path) -> None:
    """Another client of the same URL with a token exists: the table read back from Parquet
    connects without credentials until told which client to use."""
    url = embedded.url  # type: ignore[attr-defined]
    with_token = dicomframes.connect(url, token="secret-token-123", progress=False)
    with_token.search_studies().to_parquet(tmp_path / "s.parquet")
    back = pd.read_parquet(tmp_path / "s.parquet")
    assert back.dicom.client is not with_token and "no auth" in repr(back.dicom.client)
    assert back.dicom.use(with_token).dicom.client is with_token


def test_modality_lut_is_applied_as_pydicom_applies_it(client: dicomframes.Client,
                                                       tmp_path: Path) -> None:
    from pydicom.pixels import apply_modality_lut

    series = ct_series(tmp_path, intercept=-1024.0, shuffle=False)  # stored 0 .. 2,026
    table = (np.sqrt(np.arange(4096)) * 100).astype(np.uint16)  # not a straight line
    for path in series.paths:
        ds = pydicom.dcmread(path)
        del ds.RescaleSlope, ds.RescaleIntercept
        item = pydicom.Dataset()
        item.LUTDescriptor = [4096, 0, 16]
        item.ModalityLUTType = "OD"
        item.add_new(0x00283006, "US", table.tolist())  # LUT Data
        ds.ModalityLUTSequence = [item]
        ds.save_as(path, enforce_file_format=True)
    stored(client, series)
    image = image_of(client, series)
    oracle = np.stack([apply_modality_lut(pydicom.dcmread(p).pixel_array, pydicom.dcmread(p))
                       for p in series.paths])
    np.testing.assert_allclose(image.values, oracle)
    assert image.dtype == np.float32 and image.attrs["units"] == "OD"
