"""What the dicomframes command prints: plain text tables and CSV of DataFrames, times of
day as ``HH:MM:SS``."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

__all__ = []

_MICROSECOND = dt.timedelta(microseconds=1)


def print_table(df: Any, fmt: str) -> None:
    try:
        if fmt == "csv":
            _with_times_as_text(df).to_csv(sys.stdout, index=False)
        elif len(df) == 0:
            print("(no results)")
        else:
            print(format_table(df))
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `dicomframes search ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _with_times_as_text(df: Any) -> Any:
    """``df`` with its timedelta (TM) columns as ``HH:MM:SS[.ffffff]`` text, for CSV."""
    import pandas as pd

    columns = [c for c in df.columns if pd.api.types.is_timedelta64_dtype(df[c])]
    if not columns:
        return df
    out = df.copy()
    for column in columns:
        out[column] = [None if pd.isna(v) else time_text(v) for v in df[column]]
    return out


def time_text(value: Any) -> str:
    """A time of day held as a timedelta as ``HH:MM:SS``, with ``.ffffff`` when present."""
    micros = int(value // _MICROSECOND)
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def _cell_text(value: Any) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(_cell_text(v) for v in value)
    if isinstance(value, dt.datetime) and value == value.replace(hour=0, minute=0, second=0,
                                                                 microsecond=0):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, dt.timedelta):
        return time_text(value)
    return str(value).replace("\n", " ")


def format_table(df: Any, max_width: int = 80) -> str:
    """A plain left-aligned text table (missing values blank; cells cut at ``max_width``)."""
    columns = [str(c) for c in df.columns]
    rows = [[_cell_text(v) for v in row] for row in df.itertuples(index=False)]
    rows = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row]
            for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in
              enumerate(columns)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
