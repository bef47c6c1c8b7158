"""Exceptions raised by dicomframes. They carry what a user needs to act, never a credential."""

from __future__ import annotations

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
