"""Modality and VOI LUTs (PS3.3 C.11.1, C.11.2): stored values to output units to display.

Written once for the client's display helpers and the server's rendered resources. Arrays in,
arrays out; no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["apply_modality_lut", "apply_window", "display_window", "first_number", "stated_window"]


def first_number(value: Any, default: float | None = None) -> float | None:
    """First number of a DICOM multi-value (list, 'a\\b' string, scalar); ``default``
    when absent or not a number."""
    if value is None:
        return default
    if isinstance(value, str):
        value = value.split("\\")[0].strip()
        if not value:
            return default
    elif isinstance(value, Sequence | np.ndarray) and not isinstance(value, bytes):
        if len(value) == 0:
            return default
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(number) else number


def apply_modality_lut(
    arr: np.ndarray,
    slope: float | Sequence[float] | None = 1.0,
    intercept: float | Sequence[float] | None = 0.0,
    *,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Rescale stored values to output units: ``arr * slope + intercept`` (PS3.3 C.11.1,
    RescaleSlope / RescaleIntercept, e.g. Hounsfield units for CT).

    None (attribute absent) counts as slope 1 / intercept 0. With slope 1 and intercept 0 the
    input is returned as is; otherwise a new array of ``dtype`` (float64 by default).
    """
    s = first_number(slope, 1.0)
    b = first_number(intercept, 0.0)
    assert s is not None and b is not None
    if s == 1.0 and b == 0.0:
        return arr
    result = np.asarray(arr, dtype=dtype) * s
    result += b
    return result


def apply_window(
    arr: np.ndarray,
    center: float | Sequence[float],
    width: float | Sequence[float],
    *,
    function: str = "LINEAR",
    output_range: tuple[float, float] = (0.0, 1.0),
    invert: bool = False,
) -> np.ndarray:
    """VOI windowing (PS3.3 C.11.2.1.2): map values to ``output_range`` (float32 array).

    ``function`` is the VOI LUT Function: ``LINEAR`` (the default; C.11.2.1.2.1),
    ``LINEAR_EXACT`` (C.11.2.1.3.2) or ``SIGMOID`` (C.11.2.1.3.1). Multi-valued centers/widths
    (several windows) use the first. ``invert`` flips the output (MONOCHROME1 display).
    """
    c = first_number(center)
    w = first_number(width)
    if c is None or w is None:
        raise ValueError(f"window center and width are needed, got {center!r}, {width!r}")
    y_min, y_max = (float(v) for v in output_range)
    span = y_max - y_min
    x = np.asarray(arr, dtype=np.float64)
    kind = function.upper().replace(" ", "_")
    if kind == "LINEAR":
        if w < 1:
            raise ValueError(f"window width must be >= 1 for LINEAR, got {w}")
        lower = c - 0.5 - (w - 1) / 2
        upper = c - 0.5 + (w - 1) / 2
        if w == 1:
            y = np.where(x <= lower, y_min, y_max)
        else:
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) * span + y_min
            y = np.where(x <= lower, y_min, np.where(x > upper, y_max, y))
    elif kind == "LINEAR_EXACT":
        if w <= 0:
            raise ValueError(f"window width must be > 0 for LINEAR_EXACT, got {w}")
        y = ((x - c) / w + 0.5) * span + y_min
        y = np.where(x <= c - w / 2, y_min, np.where(x > c + w / 2, y_max, y))
    elif kind == "SIGMOID":
        if w <= 0:
            raise ValueError(f"window width must be > 0 for SIGMOID, got {w}")
        y = span / (1.0 + np.exp(-4.0 * (x - c) / w)) + y_min
    else:
        raise ValueError(f"unknown VOI LUT function {function!r} "
                         "(LINEAR, LINEAR_EXACT or SIGMOID)")
    y = np.clip(y, min(y_min, y_max), max(y_min, y_max))
    if invert:
        y = y_max + y_min - y
    return y.astype(np.float32)


def _usable_width(width: float, function: str) -> bool:
    """LINEAR needs a width of at least 1 (C.11.2.1.2.1), the other functions above 0."""
    kind = function.upper().replace(" ", "_")
    return width >= 1 if kind == "LINEAR" else width > 0


def stated_window(center: Any, width: Any, function: Any = None) -> tuple[float, float, str] | None:
    """The first window a dataset states (WindowCenter, WindowWidth, VOILUTFunction), or
    None when it states none or one its function cannot use."""
    c = first_number(center)
    w = first_number(width)
    kind = str(function or "LINEAR").strip() or "LINEAR"
    if c is None or w is None or not _usable_width(w, kind):
        return None
    return c, w, kind


def display_window(values: np.ndarray, center: Any = None, width: Any = None,
                   function: Any = None) -> tuple[float, float, str]:
    """The window to display ``values`` with: the one stated (see :func:`stated_window`),
    else the LINEAR window of the values' range.

    The range window maps the smallest value to the bottom of the output and the largest to
    the top: with C.11.2.1.2.1's LINEAR (values at or below ``c - 0.5 - (w - 1) / 2`` are
    the bottom, above ``c - 0.5 + (w - 1) / 2`` the top) that is ``c = (min + max) / 2 +
    0.5`` and ``w = max - min + 1``.
    """
    stated = stated_window(center, width, function)
    if stated is not None:
        return stated
    arr = np.asarray(values)
    low, high = (float(np.min(arr)), float(np.max(arr))) if arr.size else (0.0, 0.0)
    return (low + high) / 2 + 0.5, max(high - low, 1.0) + 1, "LINEAR"
