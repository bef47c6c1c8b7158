"""The part of :class:`~dicomframes.client.Client` that the helper modules use.

``frames``, ``store`` and ``download`` are called by the Client and call it back through these
public methods only; typing them against this Protocol keeps them from importing the facade.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import requests

from ..standard import multipart
from .metadata_cache import MetadataCache

if TYPE_CHECKING:
    import pandas
    import pydicom

__all__ = ["DicomwebClient"]


class DicomwebClient(Protocol):
    """A DICOMweb client: its base URL, learned quirks and the calls the helpers make."""

    url: str
    capabilities: dict[str, Any]
    metadata_cache: MetadataCache

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, data: Any = None,
                stream: bool = False, summary: str | None = None) -> requests.Response:
        """Send one HTTP request (see :meth:`Client.request`)."""
        ...

    def iter_multipart(self, path: str, media: str = ..., transfer_syntax: str | None = ...,
                       params: Mapping[str, Any] | None = None,
                       ) -> Iterator[tuple[multipart.Part, str | None]]:
        """Stream the parts of a multipart answer (see :meth:`Client.iter_multipart`)."""
        ...

    def metadata_json(self, study: str, series: str | None = None,
                      instance: str | None = None) -> list[dict]:
        """DICOM JSON metadata (see :meth:`Client.metadata_json`)."""
        ...

    def search_json(self, level: str, path: str | None = None, **filters: Any) -> list[dict]:
        """DICOM JSON objects of a search (see :meth:`Client.search_json`)."""
        ...

    def retrieve(self, study: str, series: str | None = None, instance: str | None = None,
                 transfer_syntax: str = "*") -> list[pydicom.Dataset]:
        """Retrieve instances (see :meth:`Client.retrieve`)."""
        ...

    def iter_retrieve(self, study: str, series: str | None = None,
                      instance: str | None = None,
                      transfer_syntax: str = "*") -> Iterator[pydicom.Dataset]:
        """Retrieve instances one by one (see :meth:`Client.iter_retrieve`)."""
        ...

    def search_series(self, study: str | None = None, **filters: Any) -> pandas.DataFrame:
        """Search series (see :meth:`Client.search_series`)."""
        ...

    def search_instances(self, study: str | None = None, series: str | None = None,
                         **filters: Any) -> pandas.DataFrame:
        """Search instances (see :meth:`Client.search_instances`)."""
        ...
