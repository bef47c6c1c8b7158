"""Exceptions raised by dicomframes. They carry what a user needs to act, never a credential."""

from __future__ import annotations

import errno
from collections.abc import Mapping


class DicomFramesError(Exception):
    """Base class of every error raised by dicomframes."""


class MultipartError(DicomFramesError):
    """A multipart/related body is malformed or was cut short."""


class DecoderMissing(DicomFramesError):
    """Pixel data uses a transfer syntax that no installed decoder handles."""


class EmptyResponse(DicomFramesError):
    """A call the server answered without error returned nothing where something was needed
    (no metadata for an instance, an empty retrieve, a series without image instances).

    Attributes: ``method``, ``url`` (the full URL, without credentials) and ``message``.
    """

    def __init__(self, method: str, url: str, message: str) -> None:
        self.method = method
        self.url = url
        self.message = message
        super().__init__(f"{method} {url}: {message}")


class ConnectionFailed(DicomFramesError):
    """No answer from the server: the connection could not be made, or broke, or timed out.

    The message is one sentence naming the URL (without credentials) and the cause. The
    subclasses name the usual causes: :class:`ConnectionRefused`, :class:`NameNotResolved`,
    :class:`TLSFailed` and :class:`ConnectionTimedOut`.

    Attributes: ``method``, ``url`` (without credentials), ``cause`` (a few words, e.g.
    ``"connection refused"``), ``hint`` (what to check, may be empty), ``detail`` (the
    underlying library's words, without credentials) and ``attempts`` (tries made).
    """

    default_cause = "connection failed"

    def __init__(self, method: str, url: str, cause: str = "", hint: str = "",
                 detail: str = "", attempts: int = 1) -> None:
        self.method = method
        self.url = url
        self.cause = cause or self.default_cause
        self.hint = hint
        self.detail = detail
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        note = f" ({hint})" if hint else ""
        super().__init__(f"{method} {url}: {self.cause}{tries}{note}")

    def __reduce__(self) -> tuple[type[ConnectionFailed], tuple[str, str, str, str, str, int]]:
        return type(self), (self.method, self.url, self.cause, self.hint, self.detail,
                            self.attempts)


class ConnectionRefused(ConnectionFailed):
    """Nothing listens at the URL's host and port (is the server running, the port right?)."""

    default_cause = "connection refused"


class NameNotResolved(ConnectionFailed):
    """The URL's host name does not resolve to an address."""

    default_cause = "name not resolved"


class TLSFailed(ConnectionFailed):
    """The TLS handshake failed, e.g. the server's certificate could not be verified."""

    default_cause = "TLS handshake failed"


class ConnectionTimedOut(ConnectionFailed):
    """The server did not accept the connection or answer within the timeout."""

    default_cause = "timed out"


class PortInUse(DicomFramesError, OSError):
    """The embedded server cannot listen: another program already uses the port.

    Also an :class:`OSError` (``errno.EADDRINUSE``). Attributes: ``host`` and ``port``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use by "
                         "another program; choose another port, or port 0 for a free one")

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type[PortInUse], tuple[str, int]]:
        return type(self), (self.host, self.port)


class DICOMwebError(DicomFramesError):
    """A DICOMweb server answered with an error status.

    Attributes: ``status`` (int), ``method``, ``url`` (without credentials), ``message`` (the
    server's own words, whatever its Content-Type), ``headers`` (response headers) and ``body``
    (the raw answer, e.g. a STOW response's DICOM JSON with its FailedSOPSequence).
    """

    def __init__(
        self,
        status: int,
        method: str,
        url: str,
        message: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        self.message = message
        self.headers = dict(headers or {})
        detail = f": {message}" if message else ""
        super().__init__(f"{method} {url} -> {status}{detail}")


class BadRequest(DICOMwebError):
    """400: the server could not understand the request (e.g. an unsupported query key)."""


class NotFound(DICOMwebError):
    """404: no such study, series, instance or frame."""


class MethodNotAllowed(DICOMwebError):
    """405: the server does not offer this call (e.g. Orthanc has no DICOMweb DELETE)."""


class NotAcceptable(DICOMwebError):
    """406: the server cannot produce the requested media type or transfer syntax."""


class Conflict(DICOMwebError):
    """409: nothing stored (e.g. every instance already existed)."""


class UnsupportedMediaType(DICOMwebError):
    """415: the server does not accept this Content-Type."""


_BY_STATUS: dict[int, type[DICOMwebError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    409: Conflict,
    415: UnsupportedMediaType,
}


def error_for(
    status: int,
    method: str,
    url: str,
    message: str = "",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> DICOMwebError:
    """Build the most specific :class:`DICOMwebError` subclass for ``status``."""
    cls = _BY_STATUS.get(status, DICOMwebError)
    return cls(status, method, url, message, headers, body)
