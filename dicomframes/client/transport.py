"""HTTP transport: authentication, retries, timeouts, typed errors, bounded answers.

:class:`Transport` sends one request to the service (a path relative to the base URL or an
absolute URL), retries idempotent calls on 429/503 and connection errors with backoff
(honouring Retry-After), records each exchange and turns error statuses into typed
exceptions. :meth:`Transport.iter_multipart` streams the parts of a multipart/related answer.
Nothing here knows about DataFrames or pixels.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.auth import AuthBase

from .. import errors
from ..standard import multipart
from .bodies import FileBody, body_files
from .concurrency import LatencyMeter
from .deadline import Deadline, active, current
from .exchange import Exchange, PartInfo, Recorder, body_summary, redact_url
from .failures import connection_failure, malformed_head, not_dicom_json, server_message
from .limits import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_DECOMPRESSION_RATIO,
    BoundingHook,
    bound_error_body,
    check_limits,
    next_part,
    parse_json,
)
from .qido import query_string
from .throttle import Throttle, backoff_delay, retry_after_seconds

__all__ = ["IDEMPOTENT", "RETRY_STATUSES", "BearerAuth", "Transport", "connection_failure"]

log = logging.getLogger("dicomframes.client")

IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "PUT"})
RETRY_STATUSES = frozenset({429, 503})


# ---- authentication ------------------------------------------------------------------------


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


# ---- small helpers ---------------------------------------------------------------------------


def _replayable(data: Any) -> bool:
    return data is None or isinstance(data, bytes | bytearray | memoryview | str | FileBody)


# ---- the transport ----------------------------------------------------------------------------

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BODY_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class Transport:
    """Sends requests to the service at ``base_url`` through ``session``.

    The settings (``timeout``, ``deadline``, ``retries``, ``backoff``, ``max_retry_wait``) may
    be changed at any time; ``capabilities`` collects quirks learned from the server's answers.
    ``timeout`` bounds connecting and each read; ``deadline`` bounds a whole call (every retry,
    page and byte of it) and raises :class:`~dicomframes.errors.DeadlineExceeded`.
    ``max_answer_bytes`` and ``max_decompression_ratio`` bound every answer's body as it is
    read (see :mod:`dicomframes.client.limits`).
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
        deadline: float | None = 300.0,
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
        max_decompression_ratio: float | None = DEFAULT_MAX_DECOMPRESSION_RATIO,
    ) -> None:
        check_limits(max_answer_bytes, max_decompression_ratio)
        self.base_url = base_url
        self.session = session
        self.recorder = recorder
        self.auth = auth
        self.verify = verify
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.deadline = deadline
        self.max_answer_bytes = max_answer_bytes
        self.max_decompression_ratio = max_decompression_ratio
        self.capabilities: dict[str, Any] = {}
        self.throttle = Throttle()  # 429/503 pause every thread of this client
        self.latency = LatencyMeter()  # the round trip, to size the requests in flight
        self._bound = BoundingHook(self._max_answer_bytes, self._max_decompression_ratio)

    def _max_answer_bytes(self) -> int | None:
        return self.max_answer_bytes

    def _max_decompression_ratio(self) -> float | None:
        return self.max_decompression_ratio

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the base URL, or already absolute)."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + "/" + path.lstrip("/")

    @contextlib.contextmanager
    def call(self, seconds: float | None = None) -> Iterator[Deadline]:
        """One call's deadline for the requests of the ``with`` block (in this thread).

        Without ``seconds``: the deadline already under way in this thread, else a new one of
        ``self.deadline`` seconds. With ``seconds``: a new deadline of that many seconds.
        """
        own = None if seconds is None else Deadline(seconds)
        try:
            with active(self.deadline, own) as deadline:
                yield deadline
        finally:
            if own is not None:
                own.close()

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
        deadline: Deadline | None = None,
    ) -> tuple[requests.Response, Exchange]:
        """Send one request with retries; the answer (status below 400) and its exchange,
        which the caller announces with ``recorder.finish`` once the body is read.

        Without ``stream`` the body is read here, whole: a body cut short raises
        :class:`~dicomframes.errors.ResponseTruncated`. The call ends within ``deadline`` (the
        one under way in this thread, else ``self.deadline`` seconds).
        """
        with active(self.deadline, deadline) as limit:
            return self._send(method.upper(), path, params, dict(headers or {}), data, stream,
                              summary, limit)

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None,
              headers: dict[str, str], data: Any, stream: bool, summary: str | None,
              limit: Deadline) -> tuple[requests.Response, Exchange]:
        url = self.url_for(path)
        if params:
            query = query_string(params)
            if query:
                url += ("&" if "?" in url else "?") + query
        shown_url = redact_url(url)
        data, files, form = body_files(data, headers)
        described = summary if summary is not None else body_summary(data, headers)
        described = None if described is None else self.recorder.scrub(described)
        can_retry = method in IDEMPOTENT and _replayable(data)
        kwargs: dict[str, Any] = {"stream": True, "hooks": {"response": [self._bound]}}
        if not any(name.lower() == "accept-encoding" for name in headers):
            headers["Accept-Encoding"] = ACCEPT_ENCODING  # the encodings inflated and counted
        if self.auth is not None:
            kwargs["auth"] = self.auth
        if self.verify is not None:
            kwargs["verify"] = self.verify
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            if limit.passed():
                raise self.deadline_error(method, shown_url, limit, attempt - 1)
            closed = self.throttle.wait(limit.remaining())
            if closed is not None:  # another request was told to wait past this deadline
                raise errors.Throttled(429, method, shown_url, "the client is paused by an "
                                       "earlier 429/503", wait=closed, attempts=attempt - 1)
            started = time.perf_counter()
            exchange = Exchange(method, shown_url, self.recorder.scrub_headers(headers),
                                described, attempt=attempt, scrubber=self.recorder.scrub,
                                body_files=files, body_form=form)
            kwargs["timeout"] = self._timeout_within(limit)
            try:
                response = self._follow(method, url, shown_url, headers, data, kwargs)
                if limit.passed():  # headers cut short by the deadline look complete
                    response.close()
                    raise requests.Timeout("the call's deadline passed")
            except (requests.ConnectionError, requests.Timeout) as exc:
                exchange.elapsed = time.perf_counter() - started
                exchange.error = self.recorder.scrub(f"{type(exc).__name__}: {exc}")
                self.recorder.record(exchange)
                if limit.passed():
                    self.recorder.finish(exchange)
                    raise self.deadline_error(method, shown_url, limit, attempt) from None
                refused = malformed_head(exc)
                if refused is not None:  # the same server sends the same header again
                    self.recorder.finish(exchange)
                    raise errors.InvalidResponse(method, shown_url, refused) from None
                failure = connection_failure(exc, method, shown_url, attempts=attempt,
                                             timeout=self.timeout, detail=exchange.error)
                # A name that does not resolve or a certificate refused will not change.
                permanent = isinstance(failure, errors.NameNotResolved | errors.TLSFailed)
                if can_retry and not permanent and attempt <= self.retries:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.info("%s %s failed (%s); retrying in %.1f s", method, shown_url,
                             type(exc).__name__, delay)
                    self.recorder.finish(exchange)
                    self._sleep(delay, limit)
                    continue
                raise failure from exc
            except requests.TooManyRedirects:
                raise errors.InvalidResponse(method, shown_url, "too many redirects") from None
            except requests.RequestException as exc:  # e.g. a redirect to a scheme not spoken
                raise connection_failure(exc, method, shown_url, attempts=attempt,
                                         timeout=self.timeout) from exc
            self._answered(exchange, response, started)
            status = response.status_code
            if status == 401 and not renewed and self._renew(response):
                renewed = True  # a new token, once per request: a second 401 is an error
                if _replayable(data):
                    self._again(response, exchange)
                    continue
            if status in RETRY_STATUSES:
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                delay = asked if asked is not None else backoff_delay(self.backoff, attempt)
                self.throttle.close_for(delay)
                left = limit.remaining()
                retryable = _replayable(data) and (can_retry or status == 429)
                if (retryable and attempt <= self.retries and delay <= self.max_retry_wait
                        and (left is None or delay <= left)):
                    self._again(response, exchange)
                    log.info("%s %s -> %s; retrying in %.1f s", method, shown_url, status,
                             delay)
                    continue  # the wait happens at the top, where every thread waits
                if status == 429 or asked is not None:
                    self._throttled(response, exchange, method, shown_url, asked, attempt)
            break
        self.recorder.record(exchange)
        if response.status_code >= 400:
            self._raise(response, exchange, method, shown_url, limit)
        if stream:
            exchange.streamed = True
        else:
            self.read_body(response, exchange, limit)
        return response, exchange

    def _follow(self, method: str, url: str, shown_url: str, headers: Mapping[str, str],
                data: Any, kwargs: dict[str, Any]) -> requests.Response:
        """Send, following redirects safely. A GET without a body is left to requests (which
        drops the Authorization header on a change of host, port or scheme); any other call
        follows a 307/308 within the same origin only and refuses one to another origin, so
        neither its body nor its credentials go where they were not sent."""
        if method in ("GET", "HEAD") and data is None:
            return self.session.request(method, url, headers=headers, data=data, **kwargs)
        for _ in range(10):
            response = self.session.request(method, url, headers=headers, data=data,
                                            allow_redirects=False, **kwargs)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            target = urljoin(url, location)
            if _origin(target) != _origin(url):
                response.close()
                raise errors.RedirectRefused(method, shown_url, redact_url(target),
                                             response.status_code)
            if response.status_code not in (307, 308):
                return response  # 301/302/303 on a POST: the caller sees the redirect
            response.close()
            url = target
        raise errors.InvalidResponse(method, shown_url, "too many redirects")

    def _timeout_within(self, limit: Deadline) -> Any:
        """The per-read timeout, shortened to what is left of the call's deadline."""
        left = limit.remaining()
        if left is None:
            return self.timeout
        left = max(left, 0.001)
        if self.timeout is None:
            return (left, left)
        if isinstance(self.timeout, tuple):
            return tuple(left if t is None else min(t, left) for t in self.timeout)
        return min(self.timeout, left)

    def _sleep(self, delay: float, limit: Deadline) -> None:
        left = limit.remaining()
        time.sleep(delay if left is None else min(delay, left))

    def deadline_error(self, method: str, shown_url: str, limit: Deadline,
                       attempts: int = 1) -> errors.DeadlineExceeded:
        """The error of a call whose deadline passed."""
        return errors.DeadlineExceeded(method, shown_url, attempts=max(1, attempts),
                                       deadline=limit.seconds)

    def _answered(self, exchange: Exchange, response: requests.Response,
                  started: float) -> None:
        exchange.elapsed = time.perf_counter() - started
        self.latency.add(exchange.elapsed)
        exchange.status = response.status_code
        exchange.reason = response.reason or ""
        exchange.request_headers = self.recorder.scrub_headers(response.request.headers)
        exchange.response_headers = self.recorder.scrub_headers(response.headers)

    def _renew(self, response: requests.Response) -> bool:
        """After a 401: ask the auth for a new token (credentials that cannot refresh: no)."""
        refresh = getattr(self.auth, "refresh", None)
        return bool(callable(refresh) and refresh(response.request))

    def _again(self, response: requests.Response, exchange: Exchange) -> None:
        """Close an answer that will be asked again, keeping its exchange."""
        self._read_preview(response, exchange)
        self.recorder.record(exchange)
        self.recorder.finish(exchange)

    def _throttled(self, response: requests.Response, exchange: Exchange, method: str,
                   shown_url: str, asked: float | None, attempts: int) -> None:
        self._again(response, exchange)
        try:
            content = self.recorder.scrub_bytes(response.content)
        except (*_BODY_ERRORS, errors.InvalidResponse):  # broken, or too large to keep
            response.close()
            content = b""
        raise errors.Throttled(response.status_code, method, shown_url,
                               self.recorder.scrub(server_message(content)),
                               exchange.response_headers, content, wait=asked,
                               attempts=attempts)

    def _raise(self, response: requests.Response, exchange: Exchange, method: str,
               shown_url: str, limit: Deadline) -> None:
        self._read_preview(response, exchange)
        self.recorder.finish(exchange)
        if limit.passed():
            raise self.deadline_error(method, shown_url, limit)
        try:
            content = self.recorder.scrub_bytes(response.content)
        except (*_BODY_ERRORS, errors.InvalidResponse):  # broken, or too large to keep
            response.close()
            content = b""
        message = self.recorder.scrub(server_message(content))
        raise errors.error_for(
            response.status_code, method, shown_url, message, exchange.response_headers,
            content,
        )

    def _read_preview(self, response: requests.Response, exchange: Exchange) -> None:
        """Keep what can be read of an error answer's body (a broken one is left out)."""
        bound_error_body(response)
        try:
            content = response.content
        except (*_BODY_ERRORS, errors.InvalidResponse):
            response.close()
            return
        exchange.keep_body(self.recorder.scrub_bytes(content))

    def read_body(self, response: requests.Response, exchange: Exchange,
                  limit: Deadline | None = None) -> bytes:
        """The whole body of ``response``; one cut short (a connection that broke, fewer bytes
        than its Content-Length) raises :class:`~dicomframes.errors.ResponseTruncated`, one
        the deadline stopped :class:`~dicomframes.errors.DeadlineExceeded`."""
        method = exchange.method
        declared = response.headers.get("Content-Length", "").strip()
        expected = int(declared) if declared.isdigit() else None
        try:
            content = response.content
        except errors.InvalidResponse as exc:  # too large, or a corrupt compressed body
            response.close()
            exchange.error = str(exc)
            raise
        except _BODY_ERRORS as exc:
            response.close()
            exchange.error = self.recorder.scrub(f"body cut short: {type(exc).__name__}: {exc}")
            if limit is not None and limit.passed():
                raise self.deadline_error(method, exchange.url, limit) from None
            raise errors.ResponseTruncated(
                method, exchange.url, "the connection broke while the answer was read "
                f"({type(exc).__name__}); no partial answer is returned", expected) from None
        if limit is not None and limit.passed():  # a body without length ends when cut
            raise self.deadline_error(method, exchange.url, limit)
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        if (expected is not None and not encoded and method != "HEAD"
                and response.status_code not in (204, 304) and len(content) < expected):
            raise errors.ResponseTruncated(
                method, exchange.url, f"the answer declared {expected} bytes (Content-Length) "
                f"but only {len(content)} arrived", expected, len(content))
        exchange.keep_body(self.recorder.scrub_bytes(content))
        return content

    def invalid(self, response: requests.Response, message: str) -> errors.InvalidResponse:
        """An :class:`~dicomframes.errors.InvalidResponse` for ``response``: its URL, type and
        the first bytes of its body, secrets scrubbed."""
        try:
            preview = response.content[:200]
        except (*_BODY_ERRORS, errors.InvalidResponse):
            preview = b""
        return errors.InvalidResponse(
            response.request.method or "GET", redact_url(response.url or ""), message,
            response.headers.get("Content-Type", ""), self.recorder.scrub_bytes(preview))

    def dicom_json(self, response: requests.Response) -> list[dict]:
        """The DICOM JSON objects of an answer (an empty body or 204: none). HTML, invalid
        JSON or JSON that is not DICOM JSON raises
        :class:`~dicomframes.errors.InvalidResponse`."""
        content = response.content
        if response.status_code == 204 or not content.strip():
            return []
        data = parse_json(content, response.request.method or "GET",
                          redact_url(response.url or ""),
                          response.headers.get("Content-Type", ""), self.recorder.scrub_bytes)
        why = not_dicom_json(data)
        if why is not None:
            raise self.invalid(response, f"expected DICOM JSON, got {why}")
        return data if isinstance(data, list) else [data]

    # ---- multipart answers ----------------------------------------------------------------

    def iter_multipart(
        self, path: str, media: str, transfer_syntax: str | None = "*",
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[multipart.Part, str | None]]:
        """GET ``path`` asking for multipart/related of ``media``.

        Yields ``(part, transfer_syntax)``: each part as it arrives, with its own transfer
        syntax or else the one named in the response's Content-Type (or None). A server that
        refuses the transfer syntax asked for is asked again with ``*`` and a warning. A body
        cut short raises :class:`~dicomframes.errors.MultipartError` (a broken connection:
        :class:`~dicomframes.errors.MultipartTruncated`), an HTML or JSON answer
        :class:`~dicomframes.errors.InvalidResponse`; the whole stream ends within the call's
        deadline.
        """
        outer = current()
        limit = outer if outer is not None else Deadline(self.deadline)
        try:
            yield from self._iter_multipart(path, media, transfer_syntax, params, limit)
        finally:
            if outer is None:
                limit.close()

    def _iter_multipart(
        self, path: str, media: str, transfer_syntax: str | None,
        params: Mapping[str, Any] | None, limit: Deadline,
    ) -> Iterator[tuple[multipart.Part, str | None]]:
        response, exchange = self._get_multipart(path, media, transfer_syntax, params, limit)
        try:
            if response.status_code == 206:  # some parts are missing: say so, give the rest
                said = response.headers.get("Warning") or "no Warning header says which"
                warnings.warn(f"GET {exchange.url}: 206 Partial Content, the server left part "
                              f"of the answer out ({said[:500]})", errors.PartialContent,
                              stacklevel=5)
            ctype = response.headers.get("Content-Type", "")
            response_ts = multipart.transfer_syntax_of(ctype) if ctype else None
            if not ctype.lower().startswith("multipart/"):
                # A single body (some servers answer a one-instance retrieve this way).
                content = self.read_body(response, exchange, limit)
                kind = ctype.split(";", 1)[0].strip().lower()
                if kind.startswith("text/") or kind.endswith(("json", "html", "xml")):
                    raise self.invalid(response, f"expected multipart/related; type={media}, "
                                       f"got {kind}")
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
                    if limit.passed():
                        raise self.deadline_error("GET", exchange.url, limit)
                    next_part(response)  # max_answer_bytes bounds each part
                    yield part, part.transfer_syntax or response_ts
            except _BODY_ERRORS as exc:
                if limit.passed():
                    raise self.deadline_error("GET", exchange.url, limit) from None
                raise errors.MultipartTruncated(
                    "GET", exchange.url, f"the connection broke after {count} complete parts "
                    f"({type(exc).__name__})") from None
            except errors.MultipartError as exc:
                if limit.passed():
                    raise self.deadline_error("GET", exchange.url, limit) from None
                raise errors.MultipartError(
                    f"GET {exchange.url}: {exc} (after {count} complete parts)"
                ) from None
        finally:
            response.close()
            self.recorder.finish(exchange)

    def _get_multipart(
        self, path: str, media: str, transfer_syntax: str | None,
        params: Mapping[str, Any] | None, limit: Deadline,
    ) -> tuple[requests.Response, Exchange]:
        def accept(ts: str | None) -> str:
            value = f'multipart/related; type="{media}"'
            return f"{value}; transfer-syntax={ts}" if ts else value

        try:
            return self.send("GET", path, params=params,
                             headers={"Accept": accept(transfer_syntax)}, stream=True,
                             deadline=limit)
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
                stacklevel=7,
            )
            return self.send("GET", path, params=params, headers={"Accept": accept("*")},
                             stream=True, deadline=limit)
