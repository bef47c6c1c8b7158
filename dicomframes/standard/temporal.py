"""DICOM dates and times (PS3.5 6.2 DA, TM, DT): parsing and formatting, written once.

The DICOM JSON reader, the DataFrame converters, the client's query values and the server's
query matching all use these functions. No I/O here.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

__all__ = [
    "format_dt",
    "format_tm",
    "normalize_date",
    "normalize_time",
    "parse_da",
    "parse_dt",
    "python_temporal",
    "query_date",
    "query_datetime",
    "query_time",
    "tm_microseconds",
]

_DA_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM_RE = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6})\d*)?)?)?")
_DT_RE = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6})\d*)?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)


def parse_da(text: str) -> _dt.date | None:
    """DA text ("20240131", also the old "2024.01.31") -> date; None when invalid."""
    match = _DA_RE.fullmatch(text.strip())
    if not match:
        return None
    try:
        return _dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def tm_microseconds(text: str) -> int | None:
    """TM text -> microseconds since midnight (None when invalid). 60 s allowed (leap)."""
    match = _TM_RE.fullmatch(text.strip())
    if not match:
        return None
    hh, mm, ss = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    if hh > 23 or mm > 59 or ss > 60:
        return None
    frac = match[4] or ""
    micro = int(frac.ljust(6, "0")) if frac else 0
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + micro


def parse_tm(text: str) -> _dt.timedelta | None:
    """TM text -> time since midnight; None when invalid. Partial times ("12") are allowed."""
    micro = tm_microseconds(text)
    return None if micro is None else _dt.timedelta(microseconds=micro)


def parse_dt(text: str) -> _dt.datetime | None:
    """DT text -> datetime (tz-aware when it carries a UTC offset); None when invalid."""
    match = _DT_RE.fullmatch(text.strip())
    if not match:
        return None
    year = int(match[1])
    month, day = int(match[2] or 1), int(match[3] or 1)
    hour, minute, second = int(match[4] or 0), int(match[5] or 0), int(match[6] or 0)
    micro = int((match[7] or "0").ljust(6, "0"))
    tz = None
    if match[8]:
        offset = _dt.timedelta(hours=int(match[9]), minutes=int(match[10]))
        if offset > _dt.timedelta(hours=14):
            return None
        tz = _dt.timezone(-offset if match[8] == "-" else offset)
    try:
        return _dt.datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except ValueError:
        return None


def format_tm(value: _dt.time | _dt.timedelta) -> str:
    """A time of day (or time since midnight, taken modulo 24 h) as TM text HHMMSS[.ffffff]."""
    if isinstance(value, _dt.timedelta):
        micro = (value // _dt.timedelta(microseconds=1)) % 86_400_000_000
        seconds, micro = divmod(micro, 1_000_000)
        minutes, ss = divmod(seconds, 60)
        hh, mm = divmod(minutes, 60)
    else:
        hh, mm, ss, micro = value.hour, value.minute, value.second, value.microsecond
    text = f"{hh:02d}{mm:02d}{ss:02d}"
    return f"{text}.{micro:06d}" if micro else text


def format_dt(value: _dt.datetime) -> str:
    """A datetime as DT text YYYYMMDDHHMMSS[.ffffff][+HHMM]."""
    text = value.strftime("%Y%m%d%H%M%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    offset = value.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        hh, mm = divmod(abs(minutes), 60)
        text += f"{sign}{hh:02d}{mm:02d}"
    return text


def normalize_date(text: str) -> str:
    """A DA value as ``YYYYMMDD`` (the old ``YYYY.MM.DD`` form too). Raises ValueError when it
    is not a date."""
    date = parse_da(text)
    if date is None:
        raise ValueError(f"not a DICOM date: {text!r}")
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"


def normalize_time(text: str, upper: bool = False) -> str:
    """A TM value as ``HHMMSS.ffffff``: missing digits as 0, or as the latest time they allow
    when ``upper`` (the end of a range: "10" -> "105959.999999"). Raises ValueError."""
    text = text.strip().replace(":", "")
    main, _, frac = text.partition(".")
    if not main.isdigit() or len(main) % 2 or len(main) > 6 or (frac and not frac.isdigit()):
        raise ValueError(f"not a DICOM time: {text!r}")
    filler = "235959" if upper else "000000"
    main = main + filler[len(main):]
    frac = (frac + ("9" if upper and len(main) else "0") * 6)[:6] if frac or upper else "000000"
    return f"{main}.{frac}"


# ---- query values: what a user types (ISO strings, datetime, pandas and numpy values) -> DICOM

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_ISO_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def _python_value(value: Any) -> Any:
    """numpy.datetime64 / pandas Timestamp, Timedelta, NaT -> datetime / timedelta / None."""
    module = type(value).__module__
    if module.startswith(("numpy", "pandas")):
        if hasattr(value, "to_pytimedelta"):
            return value.to_pytimedelta()
        if value != value:  # NaT and NaN are not equal to themselves
            return None
        if hasattr(value, "to_pydatetime"):
            return value.to_pydatetime()
        if hasattr(value, "astype"):  # numpy.datetime64 / timedelta64
            kind = getattr(value, "dtype", None)
            if kind is not None and kind.kind == "m":
                return _dt.timedelta(microseconds=int(value.astype("timedelta64[us]").astype(int)))
            return value.astype("datetime64[us]").item()
    return value


def python_temporal(value: Any) -> Any:
    """A numpy or pandas date/time value as datetime / timedelta (NaT as None); others as given."""
    return _python_value(value)


def query_date(value: Any) -> str:
    """A query value for a DA attribute: a date, a datetime or an ISO/DICOM date string."""
    value = _python_value(value)
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if _ISO_DATE.match(text) or _ISO_DATETIME.match(text):
        return text[:10].replace("-", "")
    return text


def query_time(value: Any) -> str:
    """A query value for a TM attribute: a time, a timedelta since midnight (within 24 hours),
    a datetime (its time) or an ISO/DICOM time string."""
    value = _python_value(value)
    if isinstance(value, _dt.datetime):
        value = value.time()
    if isinstance(value, _dt.timedelta):
        if not _dt.timedelta(0) <= value < _dt.timedelta(days=1):
            raise ValueError(f"a time of day must be within 24 hours, got {value!r}")
        return format_tm(value)
    if isinstance(value, _dt.time):
        return format_tm(value)
    text = str(value).strip()
    if _ISO_TIME.match(text):
        return text.replace(":", "")
    return text


def query_datetime(value: Any) -> str:
    """A query value for a DT attribute: a datetime, a date or an ISO/DICOM string."""
    value = _python_value(value)
    if isinstance(value, _dt.datetime):
        return format_dt(value)
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if _ISO_DATETIME.match(text):
        return format_dt(_dt.datetime.fromisoformat(text))
    if _ISO_DATE.match(text):
        return text.replace("-", "")
    return text
