"""Plain-HTTP helpers for the server conformance tests.

Request bodies are built and response bodies split here with bytes operations only, on
purpose: the tests check the server independently of dicomframes' own multipart module.
"""

from __future__ import annotations

import http.client
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import requests

DICOM_JSON = "application/dicom+json"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def uids_of(path: Path | str) -> tuple[str, str, str]:
    """(study, series, sop) UIDs of a file."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def instance_url(base: str, path: Path | str) -> str:
    """The WADO-RS URL of the instance stored from ``path``."""
    study, series, sop = uids_of(path)
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


def multipart_body(contents: Iterable[bytes], boundary: str,
                   part_type: str | None = "application/dicom") -> bytes:
    """A multipart/related body (RFC 2046) made by hand."""
    out = bytearray()
    for content in contents:
        out += b"--" + boundary.encode() + b"\r\n"
        if part_type:
            out += f"Content-Type: {part_type}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return bytes(out)


def stow(base: str, files: Iterable[Path | str | bytes], study: str | None = None, *,
         quoted: bool = True, type_param: bool = True,
         accept: str | None = DICOM_JSON) -> requests.Response:
    """POST files as multipart/related to /studies[/{study}]."""
    boundary = "b" + secrets.token_hex(12)
    contents = [f if isinstance(f, bytes) else Path(f).read_bytes() for f in files]
    ctype = "multipart/related"
    if type_param:
        ctype += '; type="application/dicom"'
    ctype += f'; boundary="{boundary}"' if quoted else f"; boundary={boundary}"
    headers = {"Content-Type": ctype}
    if accept:
        headers["Accept"] = accept
    url = f"{base}/studies" + (f"/{study}" if study else "")
    return requests.post(url, data=multipart_body(contents, boundary), headers=headers,
                         timeout=60)


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a Content-Type."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, f"no boundary in {content_type!r}"
    return match.group(1)


def split_multipart(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart response into (headers, content) pairs; checks the closing boundary."""
    ctype = response.headers["Content-Type"]
    assert ctype.startswith("multipart/related"), ctype
    delim = b"--" + boundary_of(ctype).encode()
    body = response.content
    assert body.startswith(delim + b"\r\n"), body[:80]
    end = body.rfind(b"\r\n" + delim + b"--")
    assert end > 0, "no closing boundary"
    parts = []
    for raw in body[len(delim) + 2 : end].split(b"\r\n" + delim + b"\r\n"):
        head, sep, content = raw.partition(b"\r\n\r\n")
        assert sep, "part without a blank line after its headers"
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def failure_reasons(answer: dict) -> list[int]:
    """FailureReason values of a STOW response's FailedSOPSequence."""
    items = answer.get("00081198", {}).get("Value", [])
    return [item["00081197"]["Value"][0] for item in items]


def referenced(answer: dict) -> list[str]:
    """ReferencedSOPInstanceUIDs of a STOW response's ReferencedSOPSequence."""
    items = answer.get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def value(obj: dict, tag: str):
    """First value of an element in a DICOM JSON object (None when absent/empty)."""
    element = obj.get(tag) or {}
    values = element.get("Value") or [None]
    return values[0]


def native_bytes(arr) -> bytes:
    """Little-endian bytes of a numpy array (the Explicit VR Little Endian frame)."""
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def raw_get(base: str, path: str) -> int:
    """GET a path sent exactly as written (no dot-segment normalisation); returns the status."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
