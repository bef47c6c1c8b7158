"""Exceptions (and warnings) raised by dicomframes. They carry what a user needs to act,
never a credential."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any


class DicomFramesError(Exception):
    """Base class of every error raised by dicomframes.

    Every error pickles with its attributes (it can cross a process pool or a Dask worker):
    it is rebuilt from its message and attributes, not by calling ``__init__`` again.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args), dict(self.__dict__)


def _restore(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An unpickled error: its class and message; pickle then sets its attributes."""
    return cls.__new__(cls, *args)


class PartialContent(UserWarning):
    """A retrieve answered 206 Partial Content: the server left some instances out (its
    ``Warning`` header, quoted in the message, usually says which and why). What arrived is
    given; the warning says it is not everything."""


class ArchiveChanged(UserWarning):
    """Rows were read from an archive that changed after the point a read was pinned to (the
    change feed's Sequence): some rows may show the state after it (see
    ``dicomframes.dask.read_dicomweb(pin=...)``)."""


class GeometryError(DicomFramesError, ValueError):
    """Slices that cannot form one volume (different orientation, size or pixel spacing, two at
    one position); the message names two of them."""


class GeometryWarning(UserWarning):
    """A volume whose geometry is not a plain regular grid; the message says what and how the
    answer deals with it."""


class IrregularSpacing(GeometryWarning):
    """Uneven slice spacing (the message names the largest gap); coordinates keep the true
    slice positions, the spacing and affine use the mean."""


class GantryTilt(GeometryWarning):
    """Slices stacked off their normal (a gantry tilt): the grid is sheared."""


class MissingGeometry(GeometryWarning):
    """Position, orientation or pixel spacing are missing: slices ordered by InstanceNumber
    and spacings taken from what is there (or 1 mm)."""


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


class DeadlineExceeded(ConnectionTimedOut):
    """A call took longer than its overall deadline (``connect(..., deadline=)``), however
    steadily the server was sending: a slow drip of bytes or endless pages.

    Attribute ``deadline``: the seconds the call was given (besides those of
    :class:`ConnectionFailed`).
    """

    default_cause = "deadline exceeded"

    def __init__(self, method: str, url: str, cause: str = "", hint: str = "",
                 detail: str = "", attempts: int = 1, deadline: float | None = None) -> None:
        self.deadline = deadline
        if not hint and deadline is not None:
            hint = (f"the call did not finish within its deadline of {deadline:g} s; pass a "
                    "larger deadline= to connect(), or use client.time_limit(seconds)")
        super().__init__(method, url, cause, hint, detail, attempts)


class ResponseTruncated(DicomFramesError):
    """An answer was cut short: fewer bytes than its Content-Length, a connection that broke
    while the body was read, or a multipart body without its closing boundary.

    Attributes: ``method``, ``url`` (without credentials), ``message``, ``expected`` (bytes
    declared, None when unknown) and ``received`` (bytes read, None when unknown).
    """

    def __init__(self, method: str, url: str, message: str, expected: int | None = None,
                 received: int | None = None) -> None:
        self.method = method
        self.url = url
        self.message = message
        self.expected = expected
        self.received = received
        super().__init__(f"{method} {url}: {message}")


class MultipartTruncated(ResponseTruncated, MultipartError):
    """A multipart/related answer cut short (both a :class:`ResponseTruncated` and a
    :class:`MultipartError`)."""


class InvalidResponse(DicomFramesError):
    """An answer that is not what the call asked for: HTML or invalid JSON where DICOM JSON
    was expected, JSON that is not DICOM JSON, a retrieve that is not a DICOM file, an image
    that cannot be decoded.

    Attributes: ``method``, ``url`` (without credentials), ``message``, ``content_type`` and
    ``preview`` (the first bytes of the body, secrets replaced by ``***``).
    """

    def __init__(self, method: str, url: str, message: str, content_type: str = "",
                 preview: bytes = b"") -> None:
        self.method = method
        self.url = url
        self.message = message
        self.content_type = content_type
        self.preview = preview
        shown = f" ({content_type or 'no Content-Type'}"
        if preview:
            text = preview[:80].decode("utf-8", errors="replace")
            text = " ".join(text.split())
            shown += f", body starts {text!r}"
        super().__init__(f"{method} {url}: {message}{shown})")


class AnswerTooLarge(InvalidResponse):
    """An answer larger than the client accepts: more bytes than ``max_answer_bytes``, a
    compressed body that inflates more than ``max_decompression_ratio`` times, or JSON too
    large to parse in the memory this process may use. Nothing of it is returned.

    Attributes (besides those of :class:`InvalidResponse`): ``limit`` (the limit passed, in
    its own unit) and ``received`` (bytes read or decoded when it was stopped, None if none).
    """

    def __init__(self, method: str, url: str, message: str, limit: float | None = None,
                 received: int | None = None, content_type: str = "") -> None:
        self.limit = limit
        self.received = received
        super().__init__(method, url, message, content_type)


class RedirectRefused(DicomFramesError):
    """The server redirected a call that carries a body or credentials to another origin
    (scheme, host or port): it is not followed, so neither goes where it was not sent.

    Attributes: ``method``, ``url`` (the URL asked), ``location`` (where the server pointed)
    and ``status``.
    """

    def __init__(self, method: str, url: str, location: str, status: int) -> None:
        self.method = method
        self.url = url
        self.location = location
        self.status = status
        super().__init__(
            f"{method} {url}: the server redirected ({status}) to another origin, {location}; "
            "not followed, so the request body and credentials stay with the server they "
            "were meant for (use the new URL in connect() if you trust it)")


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


class ArchiveNotWritable(DicomFramesError, OSError):
    """The embedded server cannot start: its archive folder cannot be written (a read-only
    disk or mount, or no permission). Also an :class:`OSError`. Attribute: ``path``."""

    def __init__(self, path: str, reason: str = "") -> None:
        self.path = path
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(errno.EROFS, f"the archive folder {path} cannot be written{why}; "
                         "choose a writable --data folder, or make this one writable")

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type[ArchiveNotWritable], tuple[str, str]]:
        return type(self), (self.path, self.reason)


class InsecureServer(DicomFramesError, ValueError):
    """Refused to serve on an address other hosts can reach without a bearer token: give a
    token (``serve(token=...)``, ``--token-env VAR``), or ``insecure=True`` / ``--insecure``.
    Attribute: ``host``."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"refusing to serve on {host}, which other hosts can reach, without "
                         "a token: anyone could read and delete the archive; give a token "
                         "(--token-env VAR or DICOMFRAMES_SERVER_TOKEN), or --insecure if you "
                         "really mean it")


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


class Unauthorized(DICOMwebError):
    """401: the server wants credentials, or refused the ones sent (check the token or the
    user and password given to ``connect``)."""


class Forbidden(DICOMwebError):
    """403: the credentials were accepted but do not allow this call."""


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


class TooManyRequests(DICOMwebError):
    """429: the server asks the client to slow down (its ``Retry-After`` header, in
    ``headers``, says for how long); raised once the retries are spent."""


class ServiceUnavailable(DICOMwebError):
    """503: the server cannot answer now (overloaded or starting); raised once the retries
    are spent."""


class Throttled(TooManyRequests):
    """429 Too Many Requests (or 503 with Retry-After) and the client could not wait as long
    as asked: retries used up, a wait longer than ``max_retry_wait`` or past the call's
    deadline. Every thread of the client paused meanwhile. A :class:`TooManyRequests`; its
    ``status`` says which answer it was.

    Attributes besides those of :class:`DICOMwebError`: ``wait`` (seconds the server asked
    for, None when it gave no Retry-After) and ``attempts`` (requests sent).
    """

    def __init__(self, status: int, method: str, url: str, message: str = "",
                 headers: Mapping[str, str] | None = None, body: bytes = b"",
                 wait: float | None = None, attempts: int = 1) -> None:
        self.wait = wait
        self.attempts = attempts
        asked = ("no Retry-After" if wait is None
                 else f"the server asked to wait {wait:.3g} s")
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        said = f"{message}; " if message else ""
        super().__init__(status, method, url, f"{said}throttled{tries} ({asked})",
                         headers, body)
        self.message = message


class InsufficientStorage(DICOMwebError):
    """507: the server is out of storage (disk full); resending will not help."""


_BY_STATUS: dict[int, type[DICOMwebError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    409: Conflict,
    415: UnsupportedMediaType,
    429: TooManyRequests,
    503: ServiceUnavailable,
    507: InsufficientStorage,
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


class ChangeFeedUnavailable(DicomFramesError):
    """The server has no change feed (``GET /changefeed/latest`` answered 404, 405, 501 or
    something that is not a feed entry: Orthanc, Google Cloud and most archives other than
    the Azure DICOM service and dicomframes' own server). Attributes: ``url`` and ``status``
    (None when the answer was not a feed entry)."""

    def __init__(self, url: str, status: int | None, detail: str = "") -> None:
        self.url = url
        self.status = status
        self.detail = detail
        said = f" ({detail})" if detail else ""
        super().__init__(f"the server at {url} has no change feed (GET changefeed/latest: "
                         f"{status if status is not None else 'not a feed entry'}){said}; "
                         "harvest(update=True) compares study counts instead")

    def __reduce__(self) -> tuple[type[ChangeFeedUnavailable], tuple[str, int | None, str]]:
        return type(self), (self.url, self.status, self.detail)
