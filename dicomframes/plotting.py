"""Pictures of frames with matplotlib: one frame, a montage, a strip through a series.

Every function takes arrays (what :meth:`Client.frames` and :meth:`Client.volume` return) and
also rows / DataFrames from the client's search and metadata calls, in which case the pixels are
fetched through the client stored with the DataFrame (``df.attrs["dicomframes"]``) or the one
passed as ``client=``. Titles never show who the patient is unless ``show_patient=True``.

Windowing (``window=``): ``(center, width)`` applies the VOI LUT (PS3.3 C.11.2.1.2, see
:func:`dicomframes.standard.lut.apply_window`) and shows the result on a 0..1 grey scale; ``None``
uses the WindowCenter/WindowWidth of a metadata row when there is one, else the data's own
range; ``False`` never windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .accessor import linked_client
from .standard.lut import apply_modality_lut, apply_window, first_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["montage", "show_frame", "show_series"]

Window = tuple[float, float] | None | bool

# Attributes a title may use; none of them identifies the patient.
_TITLE_KEYS = ("Modality", "SeriesDescription", "InstanceNumber")


def _plt() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _is_row(obj: Any) -> bool:
    """A DataFrame row (pandas Series) or a keyword mapping describing one instance."""
    if isinstance(obj, np.ndarray):
        return False
    return isinstance(obj, Mapping) or (hasattr(obj, "index") and hasattr(obj, "get")
                                        and not isinstance(obj, (list, tuple)))


def _is_frame_table(obj: Any) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "iterrows")


def _value(row: Any, key: str) -> Any:
    value = row.get(key) if hasattr(row, "get") else None
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _client_of(obj: Any, client: Any) -> Any:
    if client is not None:
        return client
    # the client that made the table, else (a table read back from a file) a new one for its URL
    found = linked_client(obj)
    if found is None:
        raise ValueError("no client to fetch pixels with: pass client=..., or use a DataFrame "
                         "returned by a dicomframes Client (it remembers its client)")
    return found


def _window_of(row: Any) -> tuple[float, float] | None:
    center = first_number(_value(row, "WindowCenter"))
    width = first_number(_value(row, "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    return center, width


def _row_title(row: Any, show_patient: bool, frame: int | None = None,
               keys: Sequence[str] = _TITLE_KEYS) -> str:
    parts = []
    if show_patient:
        name = _value(row, "PatientName")
        if name is not None:
            parts.append(str(name))
    for key in keys:
        value = _value(row, key)
        if value is None or value == "":
            continue
        if key == "InstanceNumber":
            parts.append(f"#{first_number(value):g}" if first_number(value) is not None
                         else f"#{value}")
        else:
            parts.append(str(value))
    if frame is not None:
        parts.append(f"frame {frame}")
    return " · ".join(parts)


def _rescaled(arr: np.ndarray, row: Any) -> np.ndarray:
    slope = first_number(_value(row, "RescaleSlope"))
    intercept = first_number(_value(row, "RescaleIntercept"))
    if slope is None and intercept is None:
        return arr
    return apply_modality_lut(arr, 1.0 if slope is None else slope,
                              0.0 if intercept is None else intercept)


def _is_color(arr: np.ndarray) -> bool:
    return arr.ndim == 3 and arr.shape[-1] in (3, 4)


def _display_data(
    arr: np.ndarray, window: Window, invert: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """The array matplotlib shows and the imshow keywords (cmap, vmin, vmax)."""
    if _is_color(arr):
        if arr.dtype == np.uint8:
            return arr, {}
        top = float(arr.max()) or 1.0
        return (np.asarray(arr, dtype=np.float32) / top).clip(0.0, 1.0), {}
    if arr.ndim != 2:
        raise ValueError(f"a frame is 2-D (rows, columns) or colour (rows, columns, 3); got "
                         f"shape {arr.shape}: use montage() or show_series() for stacks")
    cmap = "gray_r" if invert else "gray"
    if window is not None and window is not False and window is not True:
        center, width = window
        return apply_window(arr, center, width), {"cmap": cmap, "vmin": 0.0, "vmax": 1.0}
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    if high <= low:
        high = low + 1
    return arr, {"cmap": cmap, "vmin": low, "vmax": high}


def _draw(ax: Axes, arr: np.ndarray, window: Window, invert: bool, cmap: str | None,
          title: str | None) -> None:
    data, kwargs = _display_data(arr, window, invert)
    if cmap is not None and "cmap" in kwargs:
        kwargs["cmap"] = cmap
    ax.imshow(data, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="small")


def _fetch_row_frame(row: Any, frame: int, client: Any) -> np.ndarray:
    client = _client_of(row, client)
    uids = [_value(row, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if any(u is None for u in uids):
        raise ValueError("the row needs StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID")
    return np.asarray(client.frames(*uids, frames=frame))


def show_frame(
    image: np.ndarray | Any,
    *,
    frame: int = 1,
    window: Window = None,
    ax: Axes | None = None,
    title: str | bool | None = None,
    cmap: str | None = None,
    invert: bool | None = None,
    client: Any = None,
    show_patient: bool = False,
    rescale: bool = True,
) -> Axes:
    """Show one frame and return its matplotlib Axes.

    ``image`` is a 2-D array, a colour array (rows, columns, 3|4), or a row of a metadata /
    instance DataFrame (the frame number ``frame``, 1-based as in DICOM, is then fetched with
    ``client.frames``; RescaleSlope/Intercept are applied when ``rescale``, and the row's
    WindowCenter/Width is the default window; MONOCHROME1 is shown inverted).
    ``title``: a string, False for none, None for a patient-free default from the row
    (modality, series description, instance number). ``ax``: draw into these axes.
    """
    row = None
    if _is_row(image):
        row = image
        arr = _fetch_row_frame(row, frame, client)
        if rescale and not _is_color(arr):
            arr = _rescaled(arr, row)
        if window is None:
            window = _window_of(row)
        if invert is None:
            invert = str(_value(row, "PhotometricInterpretation") or "") == "MONOCHROME1"
    else:
        arr = np.asarray(image)
    if ax is None:
        fig = _plt().figure()
        ax = fig.add_subplot()
    if title is None:
        text = _row_title(row, show_patient, frame) if row is not None else None
    elif title is False:
        text = None
    else:
        text = str(title)
    _draw(ax, arr, window, bool(invert), cmap, text)
    return ax


def _grid(n: int, cols: int | None) -> tuple[int, int]:
    if n <= 0:
        raise ValueError("nothing to show: no frames")
    cols = max(1, min(cols or math.ceil(math.sqrt(n)), n))
    return math.ceil(n / cols), cols


def montage(
    frames: np.ndarray | Sequence[np.ndarray],
    cols: int | None = None,
    *,
    window: Window = None,
    titles: Sequence[str] | bool | None = None,
    suptitle: str | None = None,
    cmap: str | None = None,
    invert: bool = False,
    figsize: tuple[float, float] | None = None,
    tile_size: float = 2.2,
) -> Figure:
    """A grid of frames (one Axes per frame; ``cols`` columns, default about square).

    ``frames`` is an array (n, rows, columns[, samples]) such as ``client.frames(...)`` returns,
    or a sequence of 2-D/colour arrays. ``window`` applies to all frames; without it every
    frame shares the grey scale of the whole stack so that tiles compare. ``titles``: one
    string per frame, False for none, None for frame numbers "1".."n".
    """
    images = [np.asarray(f) for f in frames]
    n = len(images)
    nrows, ncols = _grid(n, cols)
    # each row gets room for its tiles' titles, which tight_layout cannot make for square axes
    fig = _plt().figure(figsize=figsize or (tile_size * ncols, (tile_size + 0.35) * nrows + 0.4))
    # Without a window, grey tiles share the stack's range so that they compare.
    grey = [im for im in images if not _is_color(im) and im.size]
    shared_range = None
    if (window is None or window is False) and grey:
        low = min(float(im.min()) for im in grey)
        high = max(float(im.max()) for im in grey)
        shared_range = (low, high if high > low else low + 1)
    if titles is None:
        labels: list[str | None] = [str(i + 1) for i in range(n)]
    elif titles is False:
        labels = [None] * n
    else:
        labels = [str(t) for t in titles]  # type: ignore[union-attr]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} titles for {n} frames")
    for i, im in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _draw(ax, im, window, invert, cmap, labels[i])
        if shared_range is not None and not _is_color(im):
            ax.images[0].set_clim(*shared_range)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _pick(n: int, count: int | None) -> list[int]:
    if count is None or count >= n:
        return list(range(n))
    if count <= 1:
        return [n // 2]
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


def show_series(
    source: np.ndarray | Any,
    study: str | None = None,
    series: str | None = None,
    *,
    client: Any = None,
    count: int | None = 12,
    cols: int | None = None,
    window: Window = None,
    cmap: str | None = None,
    invert: bool | None = None,
    title: str | bool | None = None,
    show_patient: bool = False,
    rescale: bool = True,
) -> Figure:
    """A montage of ``count`` evenly spaced slices of a series (all when ``count`` is None).

    ``source`` is a volume array (slices, rows, columns[, samples]) such as
    ``client.volume(...)`` returns, a DataFrame of one series' instances or metadata (the
    volume is fetched with ``client.volume``; rescale and window come from its first row), or
    a Client with ``study`` and ``series`` UIDs. Tiles are titled with slice numbers (1-based,
    in volume order); the figure title is patient-free unless ``show_patient``.
    """
    first_row = None
    if isinstance(source, np.ndarray):
        volume = source
    else:
        if _is_frame_table(source):
            table = source
            the_client = _client_of(table, client)
            if len(table) == 0:
                raise ValueError("the DataFrame has no rows")
            first_row = table.iloc[0]
            studies = table["StudyInstanceUID"].dropna().unique()
            series_uids = table["SeriesInstanceUID"].dropna().unique()
            if study is None:
                if len(studies) != 1:
                    raise ValueError("the DataFrame spans several studies: pass study=")
                study = str(studies[0])
            if series is None:
                if len(series_uids) != 1:
                    raise ValueError("the DataFrame spans several series: pass series=")
                series = str(series_uids[0])
        else:
            the_client = source if client is None else client
            if study is None or series is None:
                raise ValueError("pass study= and series= with a client")
        volume = np.asarray(the_client.volume(study, series))
    if volume.ndim == 2:
        volume = volume[np.newaxis]
    if volume.ndim < 3:
        raise ValueError(f"a series volume is (slices, rows, columns); got {volume.shape}")
    if first_row is not None:
        if rescale and volume.ndim == 3:
            volume = _rescaled(volume, first_row)
        if window is None:
            window = _window_of(first_row)
        if invert is None:
            invert = (str(_value(first_row, "PhotometricInterpretation") or "")
                      == "MONOCHROME1")
    picked = _pick(volume.shape[0], count)
    if title is None:
        text = (_row_title(first_row, show_patient, keys=("Modality", "SeriesDescription"))
                if first_row is not None else "")
        text = f"{text} · {volume.shape[0]} slices" if text else f"{volume.shape[0]} slices"
    elif title is False:
        text = None
    else:
        text = str(title)
    return montage(
        [volume[i] for i in picked],
        cols=cols or min(len(picked), 6),
        window=window,
        titles=[str(i + 1) for i in picked],
        suptitle=text,
        cmap=cmap,
        invert=bool(invert),
    )
