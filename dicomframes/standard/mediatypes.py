"""Media types and content negotiation (RFC 9110, PS3.18 8.7): Content-Type and Accept values.

Written once for the client and the server: parsing and building ``Content-Type`` values with
their parameters (``boundary``, ``type``, ``transfer-syntax``, also inside a quoted ``type`` as
Orthanc sends it) and parsing ``Accept`` headers into ranked media ranges. No I/O here.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from ..errors import MultipartError

__all__ = [
    "DICOM",
    "DICOM_JSON",
    "OCTET_STREAM",
    "MediaRange",
    "boundary_of",
    "new_boundary",
    "parse_accept",
    "parse_media_type",
    "related_content_type",
]

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"

#: Old names of frame media types that some peers still send, and their current names.
MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}

TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 2046 5.1.1: 1 to 70 characters from bchars, not ending with a space.
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a ``Content-Type`` value into its media type and parameters.

    The type/subtype and the parameter names are lowercased; parameter values are unquoted
    (backslash escapes inside quotes are resolved) and keep their case. A ``;`` inside a quoted
    value does not end it, so Orthanc's
    ``multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1";
    boundary=abc`` gives ``{"type": "application/octet-stream; transfer-syntax=...",
    "boundary": "abc"}``. A parameter given twice keeps its first value.
    """
    if not isinstance(value, str):
        raise TypeError(f"a media type is a str, not {type(value).__name__}")
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        j = i
        while j < n and rest[j] not in "=;":
            j += 1
        name = rest[i:j].strip().lower()
        if j >= n or rest[j] == ";":  # a parameter without "=": keep its name with ""
            if name:
                params.setdefault(name, "")
            i = j + 1
            continue
        j += 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            j += 1
            chars: list[str] = []
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(rest[j])
                j += 1
            param_value = "".join(chars)
            end = rest.find(";", j)  # anything between the closing quote and ";" is ignored
        else:
            end = rest.find(";", j)
            param_value = rest[j : n if end < 0 else end].strip()
        if name:
            params.setdefault(name, param_value)
        i = n if end < 0 else end + 1
    return head.strip().lower(), params


def boundary_of(content_type: str) -> str:
    """Return the ``boundary`` parameter of a multipart ``Content-Type`` (quoted or not).

    Raises :class:`MultipartError` when there is none (e.g. a server answered with a single
    part's media type, or an error page).
    """
    _, params = parse_media_type(content_type)
    boundary = params.get("boundary", "")
    if not boundary:
        raise MultipartError(f"no boundary parameter in Content-Type {content_type!r}")
    return boundary


def transfer_syntax_of(content_type: str) -> str | None:
    """Return the ``transfer-syntax`` parameter of a media type, or None.

    Looks at the top-level parameters first, then inside the quoted ``type`` parameter of a
    multipart type, where Orthanc puts it:
    ``multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"``.
    """
    _, params = parse_media_type(content_type)
    syntax = params.get("transfer-syntax")
    if not syntax and params.get("type"):
        syntax = parse_media_type(params["type"])[1].get("transfer-syntax")
    return syntax or None


def new_boundary() -> str:
    """Return a fresh random boundary: 64 hex digits (256 random bits).

    Long on purpose: decoders search for the boundary, and the longer it is the faster their
    search skips through the content (RFC 2046 allows 70 characters).
    """
    return secrets.token_hex(32)


def _quote_parameter(value: str) -> str:
    """A media type parameter value, quoted when it is not a token (RFC 9110 5.6.6)."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"line break or NUL in a media type parameter: {value!r}")
    if TOKEN_RE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def related_content_type(boundary: str, type_: str, **params: str) -> str:
    """Build ``multipart/related; type="..."; <params>; boundary=...``.

    Keyword names have ``_`` replaced by ``-`` (``transfer_syntax="1.2.840.10008.1.2.1"`` ->
    ``transfer-syntax=1.2.840.10008.1.2.1``); values are quoted when they need it.
    """
    check_boundary(boundary)
    items = [f"multipart/related; type={_quote_parameter(type_)}"]
    for name, value in params.items():
        items.append(f"{name.replace('_', '-')}={_quote_parameter(str(value))}")
    items.append(f"boundary={_quote_parameter(boundary)}")
    return "; ".join(items)


def check_boundary(boundary: str) -> bytes:
    """Validate a boundary for encoding (RFC 2046 bchars, 1 to 70 characters)."""
    if not isinstance(boundary, str) or not _BOUNDARY_RE.match(boundary):
        raise ValueError(
            f"invalid multipart boundary {boundary!r}: 1 to 70 characters from "
            "letters, digits and '()+_,-./:=? (not ending with a space)")
    return boundary.encode("ascii")


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: media type, parameters (without q) and quality."""

    type: str
    params: dict[str, str]
    q: float

    @property
    def inner(self) -> tuple[str, str | None]:
        """For ``multipart/related``: the ``type`` parameter and the transfer syntax (given
        as a parameter of the range or inside the quoted ``type``, Orthanc-style)."""
        inner_type, inner_params = parse_media_type(self.params.get("type") or "*/*")
        syntax = self.params.get("transfer-syntax") or inner_params.get("transfer-syntax")
        return MEDIA_ALIASES.get(inner_type, inner_type), syntax or None

    @property
    def syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter of a single-part range."""
        return self.params.get("transfer-syntax") or None


def _split_header_list(value: str) -> list[str]:
    """A comma-separated header value -> its items (commas inside quotes do not split)."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def parse_accept(value: str | None) -> list[MediaRange]:
    """Accept header -> media ranges, best first (stable for equal q). Empty -> ``*/*``."""
    if not value or not value.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges = []
    for piece in _split_header_list(value):
        media, params = parse_media_type(piece)
        try:
            q = float(params.pop("q", "1") or 1)
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(MEDIA_ALIASES.get(media, media), params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges
