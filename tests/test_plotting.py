"""plotting.py draws what it is given: the pixels in the axes are the (windowed) input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pydicom
import pydicom.data
import pytest

from dicomframes.convert.pixels import apply_modality_lut, apply_window
from dicomframes.plotting import montage, show_frame, show_series


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_show_frame_windowed_data_is_in_the_axes() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds.RescaleSlope, ds.RescaleIntercept)
    ax = show_frame(hu, window=(40, 400))
    np.testing.assert_array_equal(_shown(ax), apply_window(hu, 40, 400))
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert ax.images[0].get_cmap().name == "gray"
    assert ax.get_title() == ""


def test_show_frame_without_window_shows_the_raw_range_and_draws_into_given_axes() -> None:
    arr = np.arange(12, dtype=np.int16).reshape(3, 4) - 5
    _fig, axes = plt.subplots(1, 2)
    ax = show_frame(arr, ax=axes[1], title="a title", invert=True)
    assert ax is axes[1]
    np.testing.assert_array_equal(_shown(ax), arr)
    assert ax.images[0].get_clim() == (-5.0, 6.0)
    assert ax.images[0].get_cmap().name == "gray_r"
    assert ax.get_title() == "a title"
    assert not axes[0].images


def test_show_frame_colour() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("examples_rgb_color.dcm"))
    ax = show_frame(ds.pixel_array)
    np.testing.assert_array_equal(_shown(ax), ds.pixel_array)
    rgb16 = (np.arange(2 * 2 * 3, dtype=np.uint16).reshape(2, 2, 3) + 1) * 1000
    np.testing.assert_allclose(_shown(show_frame(rgb16)), rgb16 / rgb16.max())
    with pytest.raises(ValueError, match="montage"):
        show_frame(np.zeros((5, 4, 6)))


def test_montage_has_one_axes_per_frame_with_a_shared_scale() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("rtdose.dcm"))
    frames = ds.pixel_array  # 15 frames
    fig = montage(frames, cols=4)
    assert len(fig.axes) == 15
    assert [ax.get_title() for ax in fig.axes] == [str(i) for i in range(1, 16)]
    low, high = float(frames.min()), float(frames.max())
    for ax, frame in zip(fig.axes, frames, strict=True):
        np.testing.assert_array_equal(_shown(ax), frame)
        assert ax.images[0].get_clim() == (low, high)
    geometry = {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes}
    assert geometry == {(4, 4)}


def test_montage_windowed_titles_and_list_input() -> None:
    frames = [np.full((4, 4), v, dtype=np.uint16) for v in (0, 100, 200)]
    fig = montage(frames, window=(100, 101), titles=["a", "b", "c"], suptitle="three")
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    for ax, frame in zip(fig.axes, frames, strict=True):
        np.testing.assert_array_equal(_shown(ax), apply_window(frame, 100, 101))
    assert fig._suptitle.get_text() == "three"
    with pytest.raises(ValueError, match="titles"):
        montage(frames, titles=["a"])
    with pytest.raises(ValueError, match="no frames"):
        montage([])


def test_show_series_strip_of_a_volume() -> None:
    volume = np.stack([np.full((8, 8), i, dtype=np.int16) for i in range(30)])
    fig = show_series(volume, count=5)
    assert len(fig.axes) == 5
    picked = [int(ax.get_title()) - 1 for ax in fig.axes]
    assert picked == [0, 7, 14, 22, 29]
    for ax, index in zip(fig.axes, picked, strict=True):
        np.testing.assert_array_equal(_shown(ax), volume[index])
    assert fig._suptitle.get_text() == "30 slices"
    assert len(show_series(volume, count=None, cols=10).axes) == 30


# ---- from DataFrames, through a real server ------------------------------------------------


def _ct_slices(folder, count: int = 3) -> tuple[list, np.ndarray]:
    from pydicom.uid import generate_uid

    from dicomframes.samples import ct_slice

    study, series = generate_uid(), generate_uid()
    paths, stack = [], []
    for i in range(count):
        arr = (np.arange(20 * 16, dtype=np.uint16).reshape(20, 16) * (i + 1)) % 4000
        ds = ct_slice(arr, study=study, series=series, number=i + 1, z=float(i), bits_stored=12,
                      patient=("Doe^Jane", "PLOT1"), SeriesDescription="Plot test",
                      RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
        path = folder / f"ct{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        stack.append(arr)
    return paths, np.stack(stack)


def test_rows_and_series_from_a_server_are_windowed_and_patient_free(embedded, tmp_path) -> None:
    import dicomframes

    client = dicomframes.connect(embedded.url)
    paths, stack = _ct_slices(tmp_path)
    outcome = client.store([str(p) for p in paths])
    assert set(outcome["status"]) == {"stored"}
    study = str(outcome["StudyInstanceUID"].iloc[0])
    try:
        table = client.metadata(study).sort_values("InstanceNumber")
        row = table.iloc[1]
        ax = show_frame(row)
        expected = apply_window(apply_modality_lut(stack[1], 1, -1024), 40, 400)
        np.testing.assert_array_equal(_shown(ax), expected)
        assert ax.get_title() == "CT · Plot test · #2 · frame 1"
        assert "Doe" not in ax.get_title()
        assert "Doe, Jane" in show_frame(row, show_patient=True).get_title()

        fig = show_series(table)
        assert len(fig.axes) == 3
        for ax, arr in zip(fig.axes, stack, strict=True):
            np.testing.assert_array_equal(
                _shown(ax), apply_window(apply_modality_lut(arr, 1, -1024), 40, 400))
        assert "Doe" not in fig._suptitle.get_text()
        assert fig._suptitle.get_text() == "CT · Plot test · 3 slices"
    finally:
        client.delete(study)
