"""HTTP transport: the session, authentication, the caret-keeping adapter, retries, timeouts.

:class:`Transport` sends one request to the service (a path relative to the base URL or an
absolute URL), retries idempotent calls on 429/503 and connection errors with backoff
(honouring Retry-After), records each exchange and turns error statuses into typed
exceptions. :meth:`Transport.iter_multipart` streams the parts of a multipart/related answer.
Nothing here knows about DataFrames or pixels.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import re
import socket
import ssl
import time
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .. import errors
from ..standard import multipart
from .exchange import Exchange, PartInfo, Recorder, body_summary, redact_headers, redact_url
from .qido import query_string

__all__ = ["IDEMPOTENT", "RETRY_STATUSES", "BearerAuth", "Transport", "connection_failure",
           "new_session"]

log = logging.getLogger("dicomframes.client")

IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "PUT"})
RETRY_STATUSES = frozenset({429, 503})


# ---- authentication and the caret-keeping adapter -------------------------------------------


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


def new_session() -> requests.Session:
    """A requests Session whose connections keep ``^`` raw in query strings."""
    session = requests.Session()
    adapter = _KeepCaretAdapter(pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session



# ---- small helpers ---------------------------------------------------------------------------


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


# ---- the transport ----------------------------------------------------------------------------


class Transport:
    """Sends requests to the service at ``base_url`` through ``session``.

    The settings (``timeout``, ``retries``, ``backoff``, ``max_retry_wait``) may be changed at
    any time; ``capabilities`` collects quirks learned from the server's answers.
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        recorder: Recorder,
        *,
        auth: Any = None,
        verify: bool | str | None = None,
        timeout: float | tuple[float, float] | None = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.session = session
        self.recorder = recorder
        self.auth = auth
        self.verify = verify
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.capabilities: dict[str, Any] = {}

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the base URL, or already absolute)."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + "/" + path.lstrip("/")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request (see :meth:`send`) and announce its completed exchange."""
        response, exchange = self.send(method, path, **kwargs)
        self.recorder.finish(exchange)
        return response

    def send(
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
        """Send one request with retries; the answer (status below 400) and its exchange,
        which the caller announces with ``recorder.finish`` once the body is read."""
        method = method.upper()
        url = self.url_for(path)
        if params:
            query = query_string(params)
            if query:
                url += ("&" if "?" in url else "?") + query
        shown_url = redact_url(url)
        headers = dict(headers or {})
        described = summary if summary is not None else body_summary(data, headers)
        can_retry = method in IDEMPOTENT and _replayable(data)
        kwargs: dict[str, Any] = {"timeout": self.timeout, "stream": True}
        if self.auth is not None:
            kwargs["auth"] = self.auth
        if self.verify is not None:
            kwargs["verify"] = self.verify
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            exchange = Exchange(method, shown_url, redact_headers(headers), described,
                                attempt=attempt, scrubber=self.recorder.scrub)
            try:
                response = self.session.request(method, url, headers=headers, data=data, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                exchange.elapsed = time.perf_counter() - started
                exchange.error = self.recorder.scrub(f"{type(exc).__name__}: {exc}")
                self.recorder.record(exchange)
                failure = connection_failure(exc, method, shown_url, attempts=attempt,
                                             timeout=self.timeout, detail=exchange.error)
                # A name that does not resolve or a certificate refused will not change.
                permanent = isinstance(failure, errors.NameNotResolved | errors.TLSFailed)
                if can_retry and not permanent and attempt <= self.retries:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.info("%s %s failed (%s); retrying in %.1f s", method, shown_url,
                             type(exc).__name__, delay)
                    self.recorder.finish(exchange)
                    time.sleep(delay)
                    continue
                raise failure from exc
            self._answered(exchange, response, started)
            if response.status_code in RETRY_STATUSES and can_retry and (
                attempt <= self.retries
            ):
                delay = self._retry_delay(response, attempt)
                self._read_preview(response, exchange)
                self.recorder.record(exchange)
                self.recorder.finish(exchange)
                log.info("%s %s -> %s; retrying in %.1f s", method, shown_url,
                         response.status_code, delay)
                time.sleep(delay)
                continue
            break
        self.recorder.record(exchange)
        if response.status_code >= 400:
            self._raise(response, exchange, method, shown_url)
        if stream:
            exchange.streamed = True
        else:
            self._read_preview(response, exchange)
        return response, exchange

    @staticmethod
    def _answered(exchange: Exchange, response: requests.Response, started: float) -> None:
        exchange.elapsed = time.perf_counter() - started
        exchange.status = response.status_code
        exchange.reason = response.reason or ""
        exchange.request_headers = redact_headers(response.request.headers)
        exchange.response_headers = redact_headers(response.headers)

    def _retry_delay(self, response: requests.Response, attempt: int) -> float:
        wait = _retry_after(response.headers.get("Retry-After"))
        delay = self.backoff * 2 ** (attempt - 1) if wait is None else wait
        return min(delay, self.max_retry_wait)

    def _raise(self, response: requests.Response, exchange: Exchange, method: str,
               shown_url: str) -> None:
        self._read_preview(response, exchange)
        self.recorder.finish(exchange)
        message = self.recorder.scrub(_server_message(response.content))
        raise errors.error_for(
            response.status_code, method, shown_url, message, exchange.response_headers,
            self.recorder.scrub_bytes(response.content),
        )

    @staticmethod
    def _read_preview(response: requests.Response, exchange: Exchange) -> None:
        try:
            content = response.content
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            return
        exchange.keep_body(content)

    # ---- multipart answers ----------------------------------------------------------------

    def iter_multipart(
        self, path: str, media: str, transfer_syntax: str | None = "*",
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[multipart.Part, str | None]]:
        """GET ``path`` asking for multipart/related of ``media``.

        Yields ``(part, transfer_syntax)``: each part as it arrives, with its own transfer
        syntax or else the one named in the response's Content-Type (or None). A server that
        refuses the transfer syntax asked for is asked again with ``*`` and a warning.
        """
        response, exchange = self._get_multipart(path, media, transfer_syntax, params)
        try:
            ctype = response.headers.get("Content-Type", "")
            response_ts = multipart.transfer_syntax_of(ctype) if ctype else None
            if not ctype.lower().startswith("multipart/"):
                # A single body (some servers answer a one-instance retrieve this way).
                content = response.content
                exchange.parts.append(PartInfo({"Content-Type": ctype}, len(content)))
                single = multipart.Part(headers=multipart.Headers({"Content-Type": ctype}),
                                        content=content)
                yield single, response_ts
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
            self.recorder.finish(exchange)

    def _get_multipart(
        self, path: str, media: str, transfer_syntax: str | None,
        params: Mapping[str, Any] | None,
    ) -> tuple[requests.Response, Exchange]:
        def accept(ts: str | None) -> str:
            value = f'multipart/related; type="{media}"'
            return f"{value}; transfer-syntax={ts}" if ts else value

        try:
            return self.send("GET", path, params=params,
                             headers={"Accept": accept(transfer_syntax)}, stream=True)
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
                stacklevel=6,
            )
            return self.send("GET", path, params=params, headers={"Accept": accept("*")},
                             stream=True)
