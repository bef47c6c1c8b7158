"""Failures in words: a request without an answer as one typed error naming the URL and the
cause (:func:`connection_failure`), the server's own words from an error body
(:func:`server_message`), and why a JSON answer is not DICOM JSON (:func:`not_dicom_json`).
Nothing here sends a request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from .. import errors

__all__ = ["MAX_HEADERS", "connection_failure", "malformed_head", "not_dicom_json", "not_done",
           "server_message"]

MAX_HEADERS = 100
"""Python's http.client refuses an answer with more header lines than this."""

_TAG_LENGTH = 8


_TAG_KEY = re.compile(r"^[0-9A-Fa-f]{8}$")


def server_message(body: bytes, limit: int = 1000) -> str:
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



def not_dicom_json(data: Any, checked: int = 1000) -> str | None:
    """Why ``data`` (parsed JSON) is not a DICOM JSON answer (a list of objects keyed by
    8-character tags whose values are objects), or None when it is.

    Every item must be an object; the elements of the first ``checked`` objects are looked at
    one by one (a server sends one kind of answer: that finds a wrong one and keeps a large
    metadata answer from paying for a second pass over all of it)."""
    objects = data if isinstance(data, list) else [data]
    for index, obj in enumerate(objects):
        if type(obj) is not dict:
            return f"a JSON {type(data).__name__} of {type(obj).__name__}, not DICOM JSON objects"
        if index >= checked:
            continue
        for key, value in obj.items():
            if len(key) != _TAG_LENGTH or type(value) is not dict:
                return f"JSON that is not DICOM JSON (key {key[:40]!r})"
    return None


def not_done(status: int, headers: Mapping[str, str], body: bytes,
             done: frozenset[int] = frozenset({200, 202, 204})) -> str | None:
    """What came back instead of "done" for a call that changes the archive (DELETE, STOW),
    or None when ``status`` is one of ``done`` and the body, if any, is not a web page.

    A redirect (a login page, a loop), an HTML or text page with 200, or another 2xx status
    are not "done": the caller must not be told the change happened."""
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    kind = ctype.split(";", 1)[0].strip().lower()
    if 300 <= status < 400:
        location = next((v for k, v in headers.items() if k.lower() == "location"), "")
        where = f" to {location[:200]}" if location else ""
        return (f"the server answered {status}, a redirect{where} (a login page?), not a "
                "confirmation; nothing is known to have changed")
    if status not in done:
        return f"the server answered {status}, which does not say the change was made"
    if body.strip() and (kind in ("text/html", "application/xhtml+xml") or (
            not kind and body.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")))):
        return (f"the server answered {status} with an HTML page (a login or error page?), not "
                "a DICOMweb answer; nothing is known to have changed")
    if body.strip() and kind and not (kind.endswith("json") or kind.endswith("xml")):
        return (f"the server answered {status} with {kind}, not a DICOMweb answer; nothing is "
                "known to have changed")
    return None


# ---- connection failures as one sentence -------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (arguments, urllib3's ``reason``, causes)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
    return found


def malformed_head(exc: BaseException) -> str | None:
    """Why the HTTP parser refused an answer's header (more than :data:`MAX_HEADERS` lines, a
    line over 64 KiB), or None when ``exc`` is another failure: a server that sends such a
    header sends it again, so it is an invalid answer, not a connection to retry."""
    for inner in _chain(exc):
        if isinstance(inner, http.client.LineTooLong):
            return f"the answer's header has a line longer than the HTTP parser takes ({inner})"
        if isinstance(inner, http.client.HTTPException) and "headers" in str(inner):
            return (f"the answer has more header lines than the HTTP parser takes "
                    f"({MAX_HEADERS}): {inner}")
    return None


def _seconds(timeout: Any, index: int) -> str:
    value = timeout[index] if isinstance(timeout, tuple) else timeout
    return "the timeout" if value is None else f"{value:g} s"


def connection_failure(exc: BaseException, method: str, url: str, *, attempts: int = 1,
                       timeout: Any = None, detail: str = "") -> errors.ConnectionFailed:
    """The package error for a request that got no answer: refused, name not resolved, TLS
    failure, timeout, or a connection that broke. ``url`` must already be without credentials.
    """
    chain = _chain(exc)
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    detail = detail or f"{type(exc).__name__}: {exc}"

    def first(*kinds: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kinds)), None)

    def make(cls: type[errors.ConnectionFailed], cause: str, hint: str = ""
             ) -> errors.ConnectionFailed:
        return cls(method, url, cause, hint, detail, attempts)

    verify = first(ssl.SSLCertVerificationError)
    if verify is not None:
        reason = getattr(verify, "verify_message", "") or "untrusted certificate"
        return make(errors.TLSFailed, "TLS certificate verification failed",
                    f"{reason}; trust the server's CA with verify='ca.pem' or "
                    "REQUESTS_CA_BUNDLE, or pass verify=False for a test server")
    tls = first(ssl.SSLError) or first(requests.exceptions.SSLError,
                                       urllib3.exceptions.SSLError)
    if tls is not None:
        reason = str(getattr(tls, "reason", "") or "")
        hint = ("does the server speak https? try http://"
                if "VERSION" in reason or "RECORD_LAYER" in reason
                else (reason or str(tls)).replace("_", " ").lower())
        return make(errors.TLSFailed, "TLS handshake failed", hint)
    if first(socket.gaierror, urllib3.exceptions.NameResolutionError) is not None:
        return make(errors.NameNotResolved, "name not resolved",
                    f"no address for host {host!r}; check the URL")
    if first(ConnectionRefusedError) is not None:
        return make(errors.ConnectionRefused, "connection refused",
                    f"nothing listens at {where}; is the server running and the URL right?")
    connect_timeout = first(requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)
    if connect_timeout is not None and not isinstance(
            connect_timeout, urllib3.exceptions.NewConnectionError):
        return make(errors.ConnectionTimedOut, "timed out",
                    f"could not connect to {where} within {_seconds(timeout, 0)}")
    if first(requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError) is not None:
        return make(errors.ConnectionTimedOut, "timed out",
                    f"no answer within {_seconds(timeout, 1)}; pass a larger timeout= for a "
                    "slow server")
    if first(ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
             urllib3.exceptions.ProtocolError) is not None:
        return make(errors.ConnectionFailed, "the server closed the connection")
    last = chain[-1]
    return make(errors.ConnectionFailed, "connection failed",
                str(last).strip() or type(last).__name__)


