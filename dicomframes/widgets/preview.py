"""The frame preview of the study browser: one instance's frames with a frame slider,
previous/next buttons, windowing and the instance's full SOP Instance UID (wrapped, copyable).

Pixels come from ``client.metadata`` and ``client.frames``; display windowing from
:func:`dicomframes.convert.pixels.apply_modality_lut` and
:func:`dicomframes.convert.pixels.apply_window`.
Also home of the small display helpers the browser's lists share (:func:`text_of`,
:func:`png_bytes`, :func:`short_uid`).
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..convert.pixels import apply_modality_lut, apply_window
from ..convert.rows import is_missing
from ..standard.lut import display_window, first_number
from .events import HandlerGuard

if TYPE_CHECKING:
    import pandas

    from ..client import Client

__all__ = []


def text_of(value: Any) -> str:
    """A value of a QIDO/metadata table as display text: missing values blank, dates as
    ``YYYY-MM-DD``, multi-values joined with a backslash."""
    if isinstance(value, list | tuple | np.ndarray):
        return "\\".join(text_of(v) for v in value)
    if is_missing(value):
        return ""
    if isinstance(value, dt.date | dt.datetime) or hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d"))
    return str(value)


def short_uid(uid: str, keep: int = 18) -> str:
    """A long UID shortened for a list label: ``…`` and its last ``keep`` characters (the part
    that differs between instances)."""
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


def png_bytes(array: np.ndarray, size: int | None = None) -> bytes:
    """An 8-bit greyscale or colour array as PNG bytes (Pillow), shrunk to fit ``size`` pixels
    when given (aspect ratio kept)."""
    from PIL import Image

    if array.dtype != np.uint8:
        top = float(np.max(array)) or 1.0
        array = (np.clip(array.astype(np.float64), 0, None) / top * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(array)
    if size is not None:
        image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _row_value(row: Any, name: str) -> Any:
    return row[name] if row is not None and name in row.index else None


class FramePreview(widgets.VBox):
    """One instance's frames: ``image`` (PNG), ``frame`` (an ``IntSlider``, keyboard-operable
    when focused: arrow keys, Home, End), ``previous_button`` / ``next_button``, window
    ``center`` and ``width`` sliders, ``image_info`` and ``uid`` (the full SOP Instance UID,
    wrapped and selectable for copying).

    Errors of its own handlers go to ``on_error`` (the browser's message line).
    """

    def __init__(self, client: Client, *,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.client = client
        self.location: tuple[str, str, str] | None = None
        self.meta: pandas.Series | None = None
        self.pixels: np.ndarray | None = None
        self._events = HandlerGuard(on_error)

        flexible = functools.partial(widgets.Layout, width="auto", flex="1 1 auto", min_width="0")
        self.image = widgets.Image(format="png", layout=widgets.Layout(
            width="100%", max_width="384px", height="auto", object_fit="contain",
            min_width="0"))
        self.previous_button = widgets.Button(icon="chevron-left", tooltip="previous frame",
                                              disabled=True,
                                              layout=widgets.Layout(width="36px",
                                                                    flex="0 0 auto"))
        self.next_button = widgets.Button(icon="chevron-right", tooltip="next frame",
                                          disabled=True,
                                          layout=widgets.Layout(width="36px", flex="0 0 auto"))
        self.frame = widgets.IntSlider(description="Frame", min=1, max=1, value=1,
                                       continuous_update=False, disabled=True,
                                       layout=flexible())
        self.frame.add_class("dicomframes-frame-slider")
        self.center = widgets.FloatSlider(description="Center", continuous_update=False,
                                          disabled=True, layout=flexible())
        self.width = widgets.FloatSlider(description="Width", min=1, continuous_update=False,
                                         disabled=True, layout=flexible())
        self.image_info = widgets.HTML()
        self.uid = widgets.HTML(layout=widgets.Layout(min_width="0"))

        self.frame.observe(self._events.guard(self._on_frame), names="value")
        self.center.observe(self._events.guard(self.render), names="value")
        self.width.observe(self._events.guard(self.render), names="value")
        self.previous_button.on_click(self._events.guard(lambda: self.step(-1)))
        self.next_button.on_click(self._events.guard(lambda: self.step(1)))

        frames = widgets.HBox([self.previous_button, self.frame, self.next_button],
                              layout=widgets.Layout(width="100%", min_width="0"))
        super().__init__([self.image, frames, self.center, self.width, self.image_info,
                          self.uid], layout=widgets.Layout(min_width="0", overflow="hidden"))
        self.add_class("dicomframes-preview")

    # -- plumbing -------------------------------------------------------------------------

    # -- what it shows --------------------------------------------------------------------

    def clear(self) -> None:
        """Show nothing (no instance chosen)."""
        self.location = None
        self.meta = None
        self.pixels = None
        self.image.value = b""
        self.image_info.value = ""
        self.uid.value = ""
        for part in (self.frame, self.center, self.width, self.previous_button,
                     self.next_button):
            part.disabled = True

    def show(self, study: str, series: str, instance: str) -> None:
        """Show an instance's first frame (its metadata from ``client.metadata``)."""
        meta = self.client.metadata(study, series, instance)
        row = meta.iloc[0]
        self.clear()
        self.location = (study, series, instance)
        self.meta = row
        frames = int(first_number(_row_value(row, "NumberOfFrames")) or 1)
        with self._events.silently():
            self.frame.max = max(frames, 1)
            self.frame.value = 1
            self.frame.disabled = frames <= 1
        quoted = html.escape(instance, quote=True)
        self.uid.value = (
            f'<div title="{quoted}" style="font-size:11px;line-height:1.3;'
            f'overflow-wrap:anywhere;word-break:break-all">SOP Instance UID '
            f'<code style="user-select:all">{quoted}</code></div>')
        if first_number(_row_value(row, "Rows")) is None:  # e.g. a structured report
            self.image.value = b""
            self.image_info.value = "no pixel data in this instance"
            return
        self.load_frame(reset_window=True)

    def step(self, by: int) -> None:
        """Move ``by`` frames (the previous/next buttons), staying within the instance."""
        self.frame.value = min(max(self.frame.value + by, self.frame.min), self.frame.max)

    def _on_frame(self) -> None:
        self.load_frame(reset_window=False)

    def load_frame(self, reset_window: bool) -> None:
        """Fetch the current frame (``client.frames``) and draw it."""
        if self.location is None or self.meta is None:
            return
        row = self.meta
        samples = int(first_number(_row_value(row, "SamplesPerPixel")) or 1)
        arr = np.asarray(self.client.frames(*self.location, frames=[self.frame.value]))
        if arr.ndim == (3 if samples == 1 else 4) and arr.shape[0] == 1:
            arr = arr[0]
        if samples == 1:
            arr = apply_modality_lut(arr, _row_value(row, "RescaleSlope"),
                                     _row_value(row, "RescaleIntercept"))
            if reset_window:
                self._reset_window(arr, row)
        self.pixels = arr
        for slider in (self.center, self.width):
            slider.disabled = samples != 1
        self.previous_button.disabled = self.frame.value <= self.frame.min
        self.next_button.disabled = self.frame.value >= self.frame.max
        self.render()

    def _reset_window(self, arr: np.ndarray, row: Any) -> None:
        low, high = float(np.min(arr)), float(np.max(arr))
        span = max(high - low, 1.0)
        # the slider draws with LINEAR: the stated window when LINEAR can use it, else the range
        center, width, _ = display_window(arr, _row_value(row, "WindowCenter"),
                                          _row_value(row, "WindowWidth"))
        with self._events.silently():
            self.center.min, self.center.max = min(low - span, center), max(high + span, center)
            self.center.step = max(span / 500, 0.01)
            self.center.value = center
            self.width.max = max(2 * span, width, 2.0)
            self.width.min = 1.0
            self.width.step = max(span / 500, 0.01)
            self.width.value = max(width, 1.0)

    def render(self) -> None:
        """Draw ``pixels`` with the current window into ``image``."""
        arr = self.pixels
        if arr is None:
            return
        photometric = text_of(_row_value(self.meta, "PhotometricInterpretation"))
        if arr.ndim == 2:
            shown = apply_window(arr, self.center.value, self.width.value,
                                 invert=photometric == "MONOCHROME1")
            image = (shown * 255 + 0.5).astype(np.uint8)
        else:
            image = arr
        self.image.value = png_bytes(image)
        rows, cols = arr.shape[:2]
        self.image_info.value = (
            f"{cols}×{rows} {html.escape(photometric)}, frame {self.frame.value} of "
            f"{self.frame.max}")
