"""DICOMweb client: every call of the DICOMweb tutorial in one line, answers as pandas and numpy.

:func:`connect` returns a :class:`Client` bound to a base URL (the service root, e.g.
``https://example.org/dicom-web`` or ``.../v2``). The client owns the HTTP side only: base URL,
authentication, timeouts, retries, the QIDO-RS / WADO-RS / STOW-RS / DELETE calls and typed
exceptions. Turning bodies into values is left to the modules that own those concerns:
:mod:`dicomframes.multipart` (multipart/related), :mod:`dicomframes.tables` (DataFrames) and
:mod:`dicomframes.pixels` (frames to numpy).

For teaching, every HTTP exchange is recorded: ``client.last_exchange`` and ``client.history``
hold :class:`Exchange` records (headers with credentials redacted, body summaries, multipart
parts), and ``with client.trace(): ...`` prints each exchange as it completes.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from io import BytesIO
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import errors
from .standard import dicomjson, multipart, tags
from .standard.uids import validate_uid

if TYPE_CHECKING:
    import numpy
    import pandas
    import pydicom

__all__ = ["Client", "Exchange", "PartInfo", "connect", "qido_params"]

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "PUT"})
RETRY_STATUSES = frozenset({429, 503})

# Characters sent as they are in a query value. Orthanc does not percent-decode query values,
# so DICOM wildcards and list separators must arrive raw; everything else is percent-encoded.
_QUERY_SAFE = "*?^,-._~:/@!$'()"

# Table options accepted next to search filters and passed to tables.to_dataframe.
_TABLE_OPTIONS = ("raw", "split_multivalued", "flatten_sequences", "pn_components")

# Level -> (path segment, tag of the UID identifying a row).
_LEVELS = {
    "study": ("studies", "0020000D"),
    "series": ("series", "0020000E"),
    "instance": ("instances", "00080018"),
}

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_HEADER_WORDS = ("token", "api-key", "apikey", "secret", "password", "subscription-key")


# --------------------------------------------------------------------------------------------
# Authentication and transport
# --------------------------------------------------------------------------------------------


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>``; the token never appears in ``repr`` or ``str``."""

    def __init__(self, token: str) -> None:
        if not token or any(c in token for c in "\r\n"):
            raise ValueError("a bearer token must be a non-empty single line")
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "BearerAuth(***)"

    __str__ = __repr__


def _keep_caret(url: str) -> str:
    """Undo the percent-encoding of ``^`` in the query part of a request target.

    requests and urllib3 always encode ``^``; Orthanc compares query values without decoding
    them, so a person-name filter such as ``Doe^John`` must travel raw. We never encode ``^``
    ourselves, so every ``%5E`` in the query came from that re-encoding. In a percent-encoded
    string each ``%`` starts a triplet, so a literal ``%5E`` typed by a user (sent as ``%255E``)
    is not touched.
    """
    head, sep, query = url.partition("?")
    if not sep or "%5E" not in query:
        return url
    return head + sep + query.replace("%5E", "^")


class _KeepCaretMixin:
    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(method, _keep_caret(url), *args, **kwargs)  # type: ignore[misc]


class _KeepCaretHTTPConnection(_KeepCaretMixin, HTTPConnection):
    pass


class _KeepCaretHTTPSConnection(_KeepCaretMixin, HTTPSConnection):
    pass


class _KeepCaretHTTPPool(HTTPConnectionPool):
    ConnectionCls = _KeepCaretHTTPConnection


class _KeepCaretHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _KeepCaretHTTPSConnection


class _KeepCaretAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections send ``^`` in query strings unencoded (see above)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _KeepCaretHTTPPool,
            "https": _KeepCaretHTTPSPool,
        }


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = _KeepCaretAdapter(pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --------------------------------------------------------------------------------------------
# Exchange records (teaching view of the HTTP traffic)
# --------------------------------------------------------------------------------------------

_PREVIEW_BYTES = 256 * 1024  # bodies up to this size are kept whole for the summary
_SUMMARY_CHARS = 4000  # the text summary of a body is cut here


def _human_size(n: int | None) -> str:
    if n is None:
        return "unknown size"
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0  # type: ignore[assignment]
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy ``headers`` with credentials replaced: ``Authorization: Bearer ***``."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname in ("authorization", "proxy-authorization"):
            scheme = str(value).split(" ", 1)[0] if " " in str(value) else ""
            out[name] = f"{scheme} ***" if scheme else "***"
        elif lname in _SECRET_HEADERS or any(w in lname for w in _SECRET_HEADER_WORDS):
            out[name] = "***"
        else:
            out[name] = str(value)
    return out


def _redact_url(url: str) -> str:
    """Drop any ``user:password@`` from a URL."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass
class PartInfo:
    """One part of a multipart body as seen on the wire: its headers and its size in bytes."""

    headers: dict[str, str]
    size: int

    def __str__(self) -> str:
        head = "; ".join(f"{k}: {v}" for k, v in self.headers.items()) or "(no headers)"
        return f"{head}  [{_human_size(self.size)}]"


def _pretty_json(data: Any, depth: int = 0) -> str:
    """JSON with the outer array and objects opened, each DICOM element on one line:
    ``"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}``."""
    pad = "  " * (depth + 1)
    end = "  " * depth
    if depth < 2 and isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        inner = ",\n".join(pad + _pretty_json(x, depth + 1) for x in data)
        return f"[\n{inner}\n{end}]"
    if depth < 2 and isinstance(data, dict) and data:
        inner = ",\n".join(
            f"{pad}{json.dumps(k, ensure_ascii=False)}: "
            + (_pretty_json(v, depth + 1) if depth == 0 and isinstance(v, dict | list)
               and not _looks_like_element(v) else json.dumps(v, ensure_ascii=False))
            for k, v in data.items()
        )
        return f"{{\n{inner}\n{end}}}"
    return json.dumps(data, ensure_ascii=False)


def _looks_like_element(value: Any) -> bool:
    return isinstance(value, dict) and "vr" in value


def _summarize_body(body: bytes, total: int | None, content_type: str | None) -> str:
    """Readable summary of a (possibly truncated) body: JSON pretty, text, or size."""
    if total is None:
        total = len(body)
    if total == 0:
        return "(empty body)"
    media = (content_type or "").split(";", 1)[0].strip().lower()
    complete = len(body) == total
    if complete and (media.endswith("json") or media == "" or media.startswith("text/")):
        text = body.decode("utf-8", errors="replace")
        if media.endswith("json") or (media == "" and text.lstrip()[:1] in ("{", "[")):
            with contextlib.suppress(ValueError):
                text = _pretty_json(json.loads(text))
        if media.endswith("json") or media.startswith("text/") or text.isprintable() or (
            text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()
        ):
            if len(text) > _SUMMARY_CHARS:
                rest = len(text) - _SUMMARY_CHARS
                text = f"{text[:_SUMMARY_CHARS]}\n... ({rest} more characters)"
            return text
    if complete and media.startswith("multipart/"):
        try:

            parts = multipart.decode(body, content_type or "")
            return _summarize_parts(
                [PartInfo(dict(p.headers), len(p.content)) for p in parts], total
            )
        except Exception:  # a summary must never fail the call it describes
            pass
    return f"({_human_size(total)} of {media or 'unknown type'})"


def _summarize_parts(parts: Sequence[PartInfo], total: int | None = None) -> str:
    size = sum(p.size for p in parts) if total is None else total
    lines = [f"multipart body, {len(parts)} part{'s' if len(parts) != 1 else ''}, "
             f"{_human_size(size)}"]
    shown = parts if len(parts) <= 12 else [*parts[:10], None, parts[-1]]
    for i, part in enumerate(shown, 1):
        if part is None:
            lines.append(f"  ... {len(parts) - 11} more parts ...")
            continue
        number = i if i <= 10 or len(parts) <= 12 else len(parts)
        lines.append(f"  part {number}: {part}")
    return "\n".join(lines)


@dataclass
class Exchange:
    """One HTTP request and its answer, recorded for teaching and debugging.

    ``request_headers`` are the headers actually sent, with credentials redacted
    (``Authorization: Bearer ***``). ``request_body`` and ``response_body`` are short readable
    summaries (pretty JSON cut after a few thousand characters, multipart part lists, sizes);
    ``parts`` lists the parts of a multipart answer (each part's headers and size) once read.
    ``status`` is None when no answer came (``error`` then says why). ``str(exchange)`` gives
    an HTTP transcript in the style of ``curl -v``; :meth:`curl` gives an equivalent command.
    """

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str | None = None
    status: int | None = None
    reason: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    parts: list[PartInfo] = field(default_factory=list)
    elapsed: float | None = None
    attempt: int = 1
    error: str | None = None
    streamed: bool = False
    _preview: bytes = field(default=b"", repr=False)
    _size: int | None = field(default=None, repr=False)
    _scrub: Callable[[str], str] = field(default=lambda s: s, repr=False)

    @property
    def response_body(self) -> str | None:
        """Summary of the answer's body (None when nothing was read)."""
        if self.parts:
            return self._scrub(_summarize_parts(self.parts))
        if self.streamed and not self._preview:
            return "(streamed body, not recorded)"
        if self.status is None:
            return None
        ctype = self.response_headers.get("Content-Type") or self.response_headers.get(
            "content-type"
        )
        return self._scrub(_summarize_body(self._preview, self._size, ctype))

    def curl(self) -> str:
        """An equivalent ``curl`` command; a bearer token is written as ``$DICOMWEB_TOKEN``."""
        words = ["curl", "-X", self.method]
        for name, value in self.request_headers.items():
            if name.lower() in ("user-agent", "accept-encoding", "connection", "content-length"):
                continue
            if name.lower() == "authorization" and value.startswith("Bearer "):
                value = "Bearer $DICOMWEB_TOKEN"
                words += ["-H", f'"{name}: {value}"']
                continue
            words += ["-H", "'" + f"{name}: {value}".replace("'", "'\\''") + "'"]
        if self.request_body is not None:
            words += ["--data-binary", "@body"]
        words.append("'" + self.url.replace("'", "'\\''") + "'")
        return " ".join(words)

    def transcript(self) -> str:
        """The exchange as text: ``>`` request lines, ``<`` answer lines, then the body."""
        split = urlsplit(self.url)
        target = split.path + (f"?{split.query}" if split.query else "")
        lines = [f"> {self.method} {target} HTTP/1.1", f"> Host: {split.netloc}"]
        lines += [f"> {k}: {v}" for k, v in self.request_headers.items() if k.lower() != "host"]
        lines.append(">")
        if self.request_body is not None:
            lines += [f"  {line}" for line in self.request_body.splitlines()]
        if self.status is None:
            lines.append(f"* no answer: {self.error or 'unknown error'}")
        else:
            took = f"  ({self.elapsed:.3f} s)" if self.elapsed is not None else ""
            retry = f"  [attempt {self.attempt}]" if self.attempt > 1 else ""
            lines.append(f"< HTTP/1.1 {self.status} {self.reason}{took}{retry}")
            lines += [f"< {k}: {v}" for k, v in self.response_headers.items()]
            lines.append("<")
            body = self.response_body
            if body:
                lines += [f"  {line}" for line in body.splitlines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.transcript()

    def _repr_html_(self) -> str:
        status = "no answer" if self.status is None else f"{self.status} {self.reason}"
        color = "#2e7d32" if self.status and self.status < 400 else "#c62828"
        return (
            "<div class='dicomframes-exchange'>"
            f"<b>{html.escape(self.method)}</b> <code>{html.escape(self.url)}</code> "
            f"&rarr; <b style='color:{color}'>{html.escape(status)}</b>"
            f"<pre style='font-size:90%;white-space:pre-wrap'>{html.escape(self.transcript())}"
            "</pre></div>"
        )


# --------------------------------------------------------------------------------------------
# Query parameters (QIDO-RS)
# --------------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_ISO_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def _as_python_datetime(value: Any) -> Any:
    """numpy.datetime64 / pandas NaT -> datetime / None; other values unchanged."""
    module = type(value).__module__
    if module.startswith("numpy") or module.startswith("pandas"):
        import pandas as pd

        if value is pd.NaT or (hasattr(pd, "isna") and bool(pd.isna(value))):
            return None
        if isinstance(value, pd.Timedelta):
            return value.to_pytimedelta()
        return pd.Timestamp(value).to_pydatetime()
    return value


def _format_da(value: Any) -> str:
    value = _as_python_datetime(value)
    if isinstance(value, datetime | date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if _ISO_DATE.match(text) or _ISO_DATETIME.match(text):
        return text[:10].replace("-", "")
    return text


def _format_tm(value: Any) -> str:
    value = _as_python_datetime(value)
    if isinstance(value, datetime):
        value = value.time()
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if not 0 <= seconds < 86400:
            raise ValueError(f"a time of day must be within 24 hours, got {value!r}")
        micro = round(seconds * 1_000_000)
        h, rest = divmod(micro, 3_600_000_000)
        m, rest = divmod(rest, 60_000_000)
        s, us = divmod(rest, 1_000_000)
        value = dtime(int(h), int(m), int(s), int(us))
    if isinstance(value, dtime):
        text = value.strftime("%H%M%S")
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    text = str(value).strip()
    if _ISO_TIME.match(text):
        return text.replace(":", "")
    return text


def _format_dt(value: Any) -> str:
    value = _as_python_datetime(value)
    if isinstance(value, datetime):
        text = value.strftime("%Y%m%d%H%M%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        if value.tzinfo is not None:
            text += value.strftime("%z")
        return text
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if _ISO_DATETIME.match(text):
        return _format_dt(datetime.fromisoformat(text))
    if _ISO_DATE.match(text):
        return text.replace("-", "")
    return text


_TEMPORAL = {"DA": _format_da, "TM": _format_tm, "DT": _format_dt}


def _format_one(value: Any, vr: str, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    formatter = _TEMPORAL.get(vr)
    if formatter is not None:
        return formatter(value)
    if vr == "UI":
        text = str(value).strip()
        return validate_uid(text, name) if text else text
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if vr in ("IS", "SS", "US", "SL", "UL", "SV", "UV") else str(value)
    return str(value)


def _format_value(value: Any, vr: str, name: str) -> str | None:
    """A filter value in QIDO form; None means "leave this filter out"."""
    if isinstance(value, tuple) and len(value) == 2 and vr in _TEMPORAL:
        start, end = (_as_python_datetime(v) for v in value)
        if start is None and end is None:
            return None
        left = "" if start is None else _format_one(start, vr, name)
        right = "" if end is None else _format_one(end, vr, name)
        return f"{left}-{right}"
    if isinstance(value, str | bytes):
        return _format_one(value.decode() if isinstance(value, bytes) else value, vr, name)
    if isinstance(value, Iterable):
        items = [_format_one(v, vr, name) for v in value]
        if not items:
            raise ValueError(f"empty list given for the filter {name}")
        return ",".join(items)
    return _format_one(value, vr, name)


def _attribute_name(key: Any) -> tuple[str, str]:
    """(name to send, VR) for a filter key given as keyword, tag, or a dotted sequence path."""

    names = []
    vr = "UN"
    pieces = key.split(".") if isinstance(key, str) else [key]
    for piece in pieces:
        try:
            tag = tags.tag_of(piece)
        except KeyError:
            raise ValueError(
                f"unknown DICOM attribute {piece!r} in the search filters: use a keyword "
                "(PatientName) or an 8-hex-digit tag (00100010)"
            ) from None
        is_keyword = isinstance(piece, str) and piece[:1].isalpha() and (
            tags.keyword_of(tag) == piece
        )
        names.append(piece if is_keyword else tags.tag_hex(tag))
        try:
            vr = tags.vr_of(tag)
        except KeyError:
            vr = "UN"
    return ".".join(names), vr


def _includefield(value: Any) -> str:
    if isinstance(value, str):
        if value.lower() == "all":
            return "all"
        value = [v for v in value.split(",") if v.strip()]
    return ",".join(_attribute_name(v.strip() if isinstance(v, str) else v)[0] for v in value)


def qido_params(filters: Mapping[str, Any]) -> dict[str, str]:
    """Turn search filters into QIDO-RS query parameters (values not yet percent-encoded).

    Keys are DICOM keywords (``PatientName``), tags (``"00100010"``, ``"(0010,0010)"``) or
    dotted sequence paths; keywords are sent as given, other forms as 8-hex-digit tags.
    Values: ``date``/``datetime``/``time`` objects or strings (ISO forms are converted, DICOM
    forms pass through); a ``(start, end)`` tuple is a range, either end may be None
    (``"20200101-"``); a list is a comma-separated list (UIDs are validated); ``None`` drops
    the filter. Special keys: ``limit``, ``offset``, ``fuzzymatching`` (bool) and
    ``includefield`` (a list of attributes or ``"all"``).
    """
    params: dict[str, str] = {}
    for key, value in filters.items():
        if value is None:
            continue
        lower = key.lower()
        if lower == "includefield":
            params["includefield"] = _includefield(value)
        elif lower == "fuzzymatching":
            if isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes")
            params["fuzzymatching"] = "true" if value else "false"
        elif lower in ("limit", "offset"):
            number = int(value)
            if number < 0:
                raise ValueError(f"{lower} must not be negative, got {value!r}")
            params[lower] = str(number)
        else:
            name, vr = _attribute_name(key)
            text = _format_value(value, vr, name)
            if text is not None:
                params[name] = text
    return params


def _query_string(params: Mapping[str, Any]) -> str:
    pieces = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, str) and isinstance(value, Iterable):
            value = ",".join(str(v) for v in value)
        pieces.append(f"{quote(str(key), safe=_QUERY_SAFE)}={quote(str(value), safe=_QUERY_SAFE)}")
    return "&".join(pieces)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


_TAG_KEY = re.compile(r"^[0-9A-Fa-f]{8}$")


def _server_message(body: bytes, limit: int = 1000) -> str:
    """The server's own words from an error body, whatever its Content-Type (or none)."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    if text[:1] in "{[":
        with contextlib.suppress(ValueError):
            data = json.loads(text)
            if isinstance(data, dict) and data and all(_TAG_KEY.match(k) for k in data):
                # A DICOM JSON answer (e.g. a STOW 409 listing failed instances): kept whole,
                # compact, so that callers can parse it back.
                return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            if isinstance(data, dict):
                words = []
                for key in ("title", "message", "Message", "error", "detail", "details",
                            "Details", "error_description"):
                    value = data.get(key)
                    if isinstance(value, dict):
                        value = value.get("message") or value.get("Message") or json.dumps(value)
                    if value and str(value) not in words:
                        words.append(str(value))
                if words:
                    text = ": ".join(words)
    if text.lstrip().lower().startswith(("<!doctype", "<html")):
        text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _replayable(data: Any) -> bool:
    return data is None or isinstance(data, bytes | bytearray | memoryview | str)


def _element(obj: Mapping[str, Any], tag_hex: str) -> dict | None:
    elem = obj.get(tag_hex)
    if elem is None:
        elem = obj.get(tag_hex.lower())
    return elem


def _json_value(obj: Mapping[str, Any], tag_hex: str) -> Any:

    elem = _element(obj, tag_hex)
    if elem is None:
        return None
    return dicomjson.python_value(elem, int(tag_hex, 16))


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class Client:
    """A DICOMweb service at ``url``. Build it with :func:`connect`.

    Searches and metadata come back as pandas DataFrames, retrieves as pydicom Datasets,
    frames as numpy arrays. Errors raise :class:`dicomframes.DICOMwebError` subclasses carrying
    status, method, URL and the server's message (never a credential).

    Attributes: ``url`` (public base URL), ``timeout``, ``retries``, ``page_size`` (rows per
    QIDO page when paging), ``max_pages`` (hard cap on pages of one search), ``progress``
    (show a tqdm bar for searches of more than one page), ``history`` (last exchanges),
    ``capabilities`` (quirks learned from the server's answers, e.g. ``{"delete": False}``).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        auth: Any = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] | None = 30.0,
        retries: int = 3,
        verify: bool | str = True,
        backoff: float = 0.5,
        max_retry_wait: float = 60.0,
        page_size: int = 100,
        max_pages: int = 10_000,
        history_size: int = 20,
        progress: bool = True,
    ) -> None:
        parts = urlsplit(str(url).strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"a DICOMweb URL must start with http:// or https://, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError("the DICOMweb base URL must not carry a query or fragment")
        if token is not None and auth is not None:
            raise ValueError("give either token= or auth=, not both")
        netloc = parts.netloc
        if "@" in netloc:  # credentials in the URL become basic auth, never part of self.url
            userinfo, netloc = netloc.rsplit("@", 1)
            if auth is None and token is None:
                from urllib.parse import unquote

                user, _, password = userinfo.partition(":")
                auth = HTTPBasicAuth(unquote(user), unquote(password))
        self.url: str = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._token = token
        if token is not None:
            auth = BearerAuth(token)
        elif isinstance(auth, tuple):
            auth = HTTPBasicAuth(*auth)
        self._auth = auth
        self._own_session = session is None
        self.session: requests.Session = _new_session() if session is None else session
        # With a caller's session its own verify setting applies unless we were told otherwise.
        self._verify: bool | str | None = (
            None if (session is not None and verify is True) else verify
        )
        if session is None:
            self.session.verify = verify
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.page_size = page_size
        self.max_pages = max_pages
        self.progress = progress
        self.history: deque[Exchange] = deque(maxlen=history_size)
        self.capabilities: dict[str, Any] = {}
        self._trace_files: list[IO[str]] = []
        self._lock = threading.Lock()

    # ---- basics -------------------------------------------------------------------------

    def __repr__(self) -> str:
        if self._token is not None:
            how = "bearer token"
        elif isinstance(self._auth, HTTPBasicAuth):
            how = "basic auth"
        elif self._auth is not None:
            how = type(self._auth).__name__
        elif not self._own_session:
            how = f"session {type(self.session).__name__}"
        else:
            how = "no auth"
        return f"<dicomframes.Client {self.url} ({how})>"

    __str__ = __repr__

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __getstate__(self) -> dict:
        raise TypeError("a dicomframes Client holds a live session and cannot be pickled")

    def __copy__(self) -> Client:
        return self  # a handle on a service: copies share it (pandas copies DataFrame.attrs)

    def __deepcopy__(self, memo: dict) -> Client:
        return self

    @property
    def last_exchange(self) -> Exchange | None:
        """The most recent :class:`Exchange` (None before the first request)."""
        return self.history[-1] if self.history else None

    @contextlib.contextmanager
    def trace(self, file: IO[str] | None = None) -> Iterator[Client]:
        """Print every HTTP exchange made inside the ``with`` block (to ``file`` or stdout).

        Each exchange is printed once it is complete (after a streamed body has been read) as
        a ``curl -v`` style transcript, credentials redacted.
        """
        self._trace_files.append(file if file is not None else sys.stdout)
        try:
            yield self
        finally:
            self._trace_files.pop()

    def _secrets(self) -> list[str]:
        secrets = [self._token] if self._token else []
        password = getattr(self._auth, "password", None)
        if isinstance(password, str) and len(password) >= 4:
            secrets.append(password)
        return secrets

    def _scrub(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _scrub_bytes(self, data: bytes) -> bytes:
        for secret in self._secrets():
            data = data.replace(secret.encode("utf-8"), b"***")
        return data

    def _finish(self, exchange: Exchange) -> None:
        """Announce a completed exchange to an active :meth:`trace`."""
        for file in list(self._trace_files):
            print(exchange.transcript(), file=file)
            print(file=file, flush=True)

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.url + "/" + path.lstrip("/")

    # ---- low level ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        summary: str | None = None,
    ) -> requests.Response:
        """Send one HTTP request to ``path`` (relative to ``url``, or an absolute URL).

        ``params`` become the query string; values keep DICOM wildcards (``*?^,``) raw and
        lists become comma-separated. ``summary`` describes a streamed body in the recorded
        :class:`Exchange` (e.g. ``"multipart/related, 3 parts, 8.6 MB"``). Idempotent methods
        (GET, HEAD, DELETE, OPTIONS, PUT) are retried on 429/503 (honouring Retry-After) and on
        connection errors; POST never is (a STOW could be stored twice). Returns the
        ``requests.Response`` for statuses below 400, else raises a
        :class:`dicomframes.DICOMwebError` subclass.
        """
        response, exchange = self._request(
            method, path, params=params, headers=headers, data=data, stream=stream,
            summary=summary,
        )
        self._finish(exchange)
        return response

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        summary: str | None = None,
    ) -> tuple[requests.Response, Exchange]:
        method = method.upper()
        url = self._url(path)
        if params:
            query = _query_string(params)
            if query:
                url += ("&" if "?" in url else "?") + query
        shown_url = _redact_url(url)
        headers = dict(headers or {})
        body_summary = summary if summary is not None else self._body_summary(data, headers)
        can_retry = method in IDEMPOTENT and _replayable(data)
        kwargs: dict[str, Any] = {"timeout": self.timeout, "stream": True}
        if self._auth is not None:
            kwargs["auth"] = self._auth
        if self._verify is not None:
            kwargs["verify"] = self._verify
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            exchange = Exchange(
                method, shown_url, _redact_headers(headers), body_summary,
                attempt=attempt, _scrub=self._scrub,
            )
            try:
                response = self.session.request(method, url, headers=headers, data=data, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                exchange.elapsed = time.perf_counter() - started
                exchange.error = self._scrub(f"{type(exc).__name__}: {exc}")
                self._record(exchange)
                if can_retry and attempt <= self.retries:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.info("%s %s failed (%s); retrying in %.1f s", method, shown_url,
                             type(exc).__name__, delay)
                    self._finish(exchange)
                    time.sleep(delay)
                    continue
                raise
            exchange.elapsed = time.perf_counter() - started
            exchange.status = response.status_code
            exchange.reason = response.reason or ""
            exchange.request_headers = _redact_headers(response.request.headers)
            exchange.response_headers = _redact_headers(response.headers)
            if response.status_code in RETRY_STATUSES and can_retry and (
                attempt <= self.retries
            ):
                wait = _retry_after(response.headers.get("Retry-After"))
                delay = self.backoff * 2 ** (attempt - 1) if wait is None else wait
                delay = min(delay, self.max_retry_wait)
                self._read_preview(response, exchange)
                self._record(exchange)
                self._finish(exchange)
                log.info("%s %s -> %s; retrying in %.1f s", method, shown_url,
                         response.status_code, delay)
                time.sleep(delay)
                continue
            break
        self._record(exchange)
        if response.status_code >= 400:
            self._read_preview(response, exchange)
            self._finish(exchange)
            message = self._scrub(_server_message(response.content))
            raise errors.error_for(
                response.status_code, method, shown_url, message, exchange.response_headers,
                self._scrub_bytes(response.content),
            )
        if stream:
            exchange.streamed = True
        else:
            self._read_preview(response, exchange)
        return response, exchange

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            if not self.history or self.history[-1] is not exchange:
                self.history.append(exchange)

    @staticmethod
    def _read_preview(response: requests.Response, exchange: Exchange) -> None:
        try:
            content = response.content
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            return
        exchange._size = len(content)
        exchange._preview = content if len(content) <= _PREVIEW_BYTES else content[:4096]

    @staticmethod
    def _body_summary(data: Any, headers: Mapping[str, str]) -> str | None:
        if data is None:
            return None
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, bytes | bytearray | memoryview):
            media = (ctype or "").split(";", 1)[0].strip().lower()
            if media.startswith("multipart/"):
                try:

                    parts = multipart.decode(data, ctype or "")
                    infos = [PartInfo(dict(p.headers), len(p.content)) for p in parts]
                    return _summarize_parts(infos, len(data))
                except Exception:  # a summary must never fail the request
                    pass
            return _summarize_body(bytes(data[:_PREVIEW_BYTES]), len(data), ctype)
        length = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
        if length is None:
            with contextlib.suppress(Exception):
                length = str(requests.utils.super_len(data) or "") or None
        size = f", {_human_size(int(length))}" if length and length.isdigit() else ""
        return f"({ctype or 'body'} streamed{size})"

    # ---- paths ----------------------------------------------------------------------------

    @staticmethod
    def _path(
        study: str | None = None,
        series: str | None = None,
        instance: str | None = None,
    ) -> str:
        if study is None:
            if series is not None or instance is not None:
                raise ValueError("series and instance need the study they belong to")
            return ""
        path = "studies/" + validate_uid(study, "StudyInstanceUID")
        if series is not None:
            path += "/series/" + validate_uid(series, "SeriesInstanceUID")
        elif instance is not None:
            raise ValueError("an instance needs its series")
        if instance is not None:
            path += "/instances/" + validate_uid(instance, "SOPInstanceUID")
        return path

    # ---- QIDO-RS --------------------------------------------------------------------------

    def search_studies(self, **filters: Any) -> pandas.DataFrame:
        """Search studies (QIDO-RS ``GET /studies``); one row per study.

        Filters are DICOM attributes by keyword or tag (see :func:`qido_params` for values:
        wildcards ``*`` ``?``, dates and ``(start, end)`` ranges, lists of UIDs) plus
        ``limit`` (None, the default, fetches every page), ``offset``, ``includefield``
        (list or ``"all"``), ``fuzzymatching`` and the table options ``raw``,
        ``split_multivalued``, ``flatten_sequences``, ``pn_components``.
        """
        return self._search("study", "studies", filters)

    def search_series(self, study: str | None = None, **filters: Any) -> pandas.DataFrame:
        """Search series (``GET /series`` or ``/studies/{study}/series``); one row per series."""
        base = self._path(study)
        return self._search("series", f"{base}/series" if base else "series", filters)

    def search_instances(
        self, study: str | None = None, series: str | None = None, **filters: Any
    ) -> pandas.DataFrame:
        """Search instances (``GET /instances``, ``/studies/{s}/instances`` or
        ``/studies/{s}/series/{se}/instances``); one row per instance.

        A ``series`` without ``study`` becomes a ``SeriesInstanceUID`` filter on ``/instances``.
        """
        if study is None and series is not None:
            filters = {"SeriesInstanceUID": validate_uid(series, "SeriesInstanceUID"), **filters}
            series = None
        base = self._path(study, series)
        return self._search("instance", f"{base}/instances" if base else "instances", filters)

    def search_json(self, level: str, path: str | None = None, **filters: Any) -> list[dict]:
        """The DICOM JSON objects of a search at ``level`` ("study", "series", "instance")."""
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {sorted(_LEVELS)}, got {level!r}")
        return self._search_objects(level, path or _LEVELS[level][0], dict(filters))

    def _search(self, level: str, path: str, filters: dict[str, Any]) -> pandas.DataFrame:
        from . import tables

        options = {k: filters.pop(k) for k in _TABLE_OPTIONS if k in filters}
        objs = self._search_objects(level, path, filters)
        return tables.to_dataframe(objs, level=level, client=self, **options)

    def _fetch_page(self, path: str, params: dict[str, str]) -> list[dict]:
        response = self.request("GET", path, params=params, headers={"Accept": DICOM_JSON})
        if response.status_code == 204 or not response.content.strip():
            return []
        data = dicomjson.loads(response.content)
        if isinstance(data, dict):  # a lone object instead of an array
            data = [data]
        if not isinstance(data, list):
            raise errors.DicomFramesError(
                f"GET {_redact_url(response.url)}: expected a JSON array, got {type(data).__name__}"
            )
        return data

    def _search_objects(self, level: str, path: str, filters: dict[str, Any]) -> list[dict]:
        limit = filters.pop("limit", None)
        offset = int(filters.pop("offset", 0) or 0)
        params = qido_params(filters)
        if limit is not None:
            limit = int(limit)
            if limit < 0:
                raise ValueError(f"limit must not be negative, got {limit}")
            if limit <= self.page_size:  # one request, exactly as asked
                page = {**params, "limit": str(limit)}
                if offset:
                    page["offset"] = str(offset)
                return self._fetch_page(path, page)
        key_tag = _LEVELS[level][1]
        results: list[dict] = []
        seen: set[str] = set()
        bar = None
        pages = 0
        try:
            while True:
                want = self.page_size if limit is None else min(self.page_size,
                                                                limit - len(results))
                if want <= 0:
                    break
                page_params = {**params, "limit": str(want)}
                if offset:
                    page_params["offset"] = str(offset)
                rows = self._fetch_page(path, page_params)
                pages += 1
                fresh = []
                for obj in rows:
                    uid = _json_value(obj, key_tag)
                    key = str(uid) if uid else json.dumps(obj, sort_keys=True)
                    if key not in seen:
                        seen.add(key)
                        fresh.append(obj)
                if rows and not fresh:
                    warnings.warn(
                        f"the server at {self.url} answered offset={offset} with rows it had "
                        f"already sent (it seems to ignore 'offset'); stopping after "
                        f"{len(results)} results",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                    break
                results.extend(fresh)
                offset += len(rows)
                if bar is not None:
                    bar.update(len(fresh))
                if len(rows) < want or len(rows) > want:
                    break  # short page: the end; longer than asked: server ignores limit
                if pages >= self.max_pages:
                    warnings.warn(
                        f"search stopped after {pages} pages ({len(results)} results); raise "
                        "client.max_pages to fetch more",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                    break
                if bar is None and self.progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(desc=f"search {_LEVELS[level][0]}", unit=" rows",
                               initial=len(results), total=limit, leave=False)
        finally:
            if bar is not None:
                bar.close()
        return results

    # ---- WADO-RS metadata -------------------------------------------------------------------

    def metadata_json(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[dict]:
        """The DICOM JSON metadata (``.../metadata``): one object per instance, no pixels."""
        path = self._path(study, series, instance) + "/metadata"
        response = self.request("GET", path, headers={"Accept": DICOM_JSON})
        if response.status_code == 204 or not response.content.strip():
            return []
        data = dicomjson.loads(response.content)
        return data if isinstance(data, list) else [data]

    def metadata(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        raw: bool = False,
        **options: Any,
    ) -> pandas.DataFrame:
        """Metadata of a study, series or instance as a DataFrame, one row per instance.

        ``options`` go to :func:`dicomframes.tables.to_dataframe` (``split_multivalued``,
        ``flatten_sequences``, ``pn_components``).
        """
        from . import tables

        objs = self.metadata_json(study, series, instance)
        return tables.to_dataframe(objs, level="instance", raw=raw, client=self, **options)

    # ---- WADO-RS retrieve ---------------------------------------------------------------------

    def retrieve(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        transfer_syntax: str = "*",
    ) -> list[pydicom.Dataset]:
        """Retrieve a study, series or instance as pydicom Datasets (multipart, streamed)."""
        return list(self.iter_retrieve(study, series, instance, transfer_syntax))

    def iter_retrieve(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        transfer_syntax: str = "*",
    ) -> Iterator[pydicom.Dataset]:
        """Yield the instances of a study, series or instance one by one as they arrive.

        ``transfer_syntax`` "*" (default) takes what the server stores; a UID asks the server
        to transcode. A server that cannot (406, or Orthanc's 500) is asked again with "*" and
        a warning names its answer. A body cut short raises :class:`MultipartError`.
        """
        import pydicom

        path = self._path(study, series, instance)
        for part, _ in self._iter_multipart(path, "application/dicom", transfer_syntax):
            yield pydicom.dcmread(BytesIO(part.content))

    def _iter_multipart(
        self, path: str, media: str, transfer_syntax: str | None
    ) -> Iterator[tuple[Any, str | None]]:
        """GET ``path`` asking for multipart/related of ``media``.

        Yields ``(part, transfer_syntax)``: each :class:`multipart.Part` as it arrives, with its
        own transfer syntax or else the one named in the response's Content-Type (or None).
        """

        def accept(ts: str | None) -> str:
            value = f'multipart/related; type="{media}"'
            return f"{value}; transfer-syntax={ts}" if ts else value

        try:
            response, exchange = self._request(
                "GET", path, headers={"Accept": accept(transfer_syntax)}, stream=True
            )
        except errors.DICOMwebError as exc:
            # 406 is the standard refusal; Orthanc answers 500 for a transcode it cannot do
            # and 400 for a syntax it does not know.
            refused = exc.status in (406, 500) or (
                exc.status == 400 and "transfer syntax" in exc.message.lower()
            )
            if transfer_syntax in (None, "*") or not refused:
                raise
            self.capabilities.setdefault("transcode_refused", set()).add(transfer_syntax)
            warnings.warn(
                f"the server cannot send transfer syntax {transfer_syntax} ({exc.status}: "
                f"{exc.message or 'no message'}); retrieving the stored transfer syntax instead",
                RuntimeWarning,
                stacklevel=4,
            )
            response, exchange = self._request(
                "GET", path, headers={"Accept": accept("*")}, stream=True
            )
        try:
            ctype = response.headers.get("Content-Type", "")
            response_ts = multipart.transfer_syntax_of(ctype) if ctype else None
            if not ctype.lower().startswith("multipart/"):
                # A single body (some servers answer a one-instance retrieve this way).
                content = response.content
                exchange.parts.append(PartInfo({"Content-Type": ctype}, len(content)))
                part = multipart.Part(
                    headers={"Content-Type": ctype},
                    content=content,
                )
                yield part, response_ts
                return
            boundary = multipart.boundary_of(ctype)
            count = 0
            try:
                for part in multipart.iter_parts(response.iter_content(1 << 20), boundary):
                    count += 1
                    exchange.parts.append(PartInfo(dict(part.headers), len(part.content)))
                    yield part, part.transfer_syntax or response_ts
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise errors.MultipartError(
                    f"GET {exchange.url}: the connection broke after {count} complete parts "
                    f"({type(exc).__name__})"
                ) from None
            except errors.MultipartError as exc:
                raise errors.MultipartError(
                    f"GET {exchange.url}: {exc} (after {count} complete parts)"
                ) from None
        finally:
            response.close()
            self._finish(exchange)

    # ---- frames, rendered, bulk data --------------------------------------------------------

    def frames(
        self,
        study: str,
        series: str,
        instance: str,
        frames: int | Sequence[int] | None = None,
        *,
        transfer_syntax: str | None = "*",
        convert_color: bool = False,
        out: numpy.ndarray | None = None,
    ) -> numpy.ndarray:
        """Pixel frames of an instance as a numpy array (WADO-RS ``.../frames/{list}``).

        ``frames`` is a 1-based frame number (-> one frame, shape ``(rows, columns[, samples])``),
        a list of them, or None for every frame (-> ``(n, rows, columns[, samples])``).
        ``transfer_syntax="*"`` (default) takes the stored syntax and decodes it here; a UID asks
        the server to transcode. Parts are decoded as they arrive into one preallocated array
        (``out`` if given); see :func:`dicomframes.frames.fetch_frames` for the fallbacks.
        """
        from .frames import fetch_frames

        return fetch_frames(self, study, series, instance, frames,
                            transfer_syntax=transfer_syntax, convert_color=convert_color,
                            out=out)

    def volume(self, study: str, series: str, **options: Any) -> numpy.ndarray:
        """Every frame of a series stacked in slice order, shape
        ``(frames, rows, columns[, samples])``; ``options`` as in
        :func:`dicomframes.frames.fetch_volume` (``transfer_syntax``, ``workers``...).
        """
        from .frames import fetch_volume

        return fetch_volume(self, study, series, **options)

    def rendered(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        frame: int | None = None,
        media_type: str = "image/png",
    ) -> numpy.ndarray:
        """A server-rendered picture (WADO-RS ``.../rendered``) as a numpy array (Pillow)."""
        from . import pixels

        path = self._path(study, series, instance)
        if frame is not None:
            if instance is None:
                raise ValueError("a frame needs its instance")
            if int(frame) < 1:
                raise ValueError(f"frame numbers start at 1, got {frame}")
            path += f"/frames/{int(frame)}"
        response = self.request("GET", path + "/rendered", headers={"Accept": media_type})
        return pixels.decode_rendered(response.content)

    def bulkdata(self, uri: str) -> bytes:
        """The bytes behind a ``BulkDataURI`` (absolute, or relative to the service URL).

        An absolute URI on another host is refused (credentials only go to ``client.url``'s
        host), unless it points under this service's path, where it is re-based.
        """
        target = uri
        if uri.startswith(("http://", "https://")):
            mine, theirs = urlsplit(self.url), urlsplit(uri)
            same = (theirs.scheme, theirs.netloc.lower()) == (mine.scheme, mine.netloc.lower())
            if not same:
                if mine.path and theirs.path.startswith(mine.path + "/"):
                    target = self.url + theirs.path[len(mine.path):] + (
                        f"?{theirs.query}" if theirs.query else ""
                    )
                else:
                    raise ValueError(
                        f"refusing to fetch bulk data from {theirs.scheme}://{theirs.netloc} "
                        f"with the credentials of {mine.scheme}://{mine.netloc}"
                    )
        chunks = [part.content for part, _ in self._iter_multipart(
            target, "application/octet-stream", "*")]
        if not chunks:
            return b""
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(bytes(c) for c in chunks)

    # ---- STOW-RS and DELETE -----------------------------------------------------------------

    def store(self, items: Any, study: str | None = None, **options: Any) -> pandas.DataFrame:
        """Store files, folders or pydicom Datasets (STOW-RS); a DataFrame of outcomes.

        See :func:`dicomframes.upload.store` for the options (batching, parallel requests,
        progress, resume).
        """
        from . import upload

        return upload.store(self, items, study=study, **options)

    def delete(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> None:
        """Delete a study, series or instance (``DELETE``; not in the DICOM standard).

        A server without DICOMweb DELETE (Orthanc answers 405) raises
        :class:`dicomframes.MethodNotAllowed` saying so; a missing item raises NotFound.
        """
        path = self._path(study, series, instance)
        try:
            self.request("DELETE", path)
        except errors.MethodNotAllowed as exc:
            self.capabilities["delete"] = False
            allow = exc.headers.get("Allow") or exc.headers.get("allow")
            said = f"; it said: {exc.message}" if exc.message else ""
            raise errors.MethodNotAllowed(
                exc.status,
                exc.method,
                exc.url,
                "the server does not offer DICOMweb DELETE (405 Method Not Allowed"
                + (f", Allow: {allow}" if allow else "") + ")" + said
                + "; delete through the server's own API instead",
                exc.headers,
            ) from None
        self.capabilities["delete"] = True


def connect(
    url: str | None = None,
    *,
    token: str | None = None,
    auth: Any = None,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] | None = 30.0,
    retries: int = 3,
    verify: bool | str = True,
    **options: Any,
) -> Client:
    """Connect to a DICOMweb service and return a :class:`Client`.

    ``url``: the service root (``https://host/dicom-web``, ``https://host/v2``). When None, the
    environment variable ``DICOMWEB_URL`` is used (with ``DICOMWEB_TOKEN`` as bearer token when
    no token is given); without it, the embedded server is started on demand on the folder
    ``DICOMFRAMES_DATA`` or ``~/.cache/dicomframes/archive`` and used.

    Authentication: ``token`` (bearer), ``auth`` (a ``(user, password)`` tuple for basic auth or
    any requests auth object), or ``session`` (a ready ``requests.Session`` such as Google's
    ``AuthorizedSession``). TLS certificates are verified unless ``verify=False``.
    ``timeout`` (seconds) applies to connecting and to each read; ``retries`` is the number of
    retries on 429/503 and on connection errors, for idempotent calls only (never POST).
    Other keyword ``options`` go to :class:`Client` (``page_size``, ``max_pages``,
    ``backoff``, ``history_size``, ``progress``).
    """
    if url is None:
        url = os.environ.get("DICOMWEB_URL") or None
        if url is not None:
            if token is None and auth is None and session is None:
                token = os.environ.get("DICOMWEB_TOKEN") or None
        else:
            from .server import embedded

            url = embedded().url
    return Client(url, token=token, auth=auth, session=session, timeout=timeout,
                  retries=retries, verify=verify, **options)
