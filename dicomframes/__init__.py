"""dicomframes: DICOMweb archives as pandas DataFrames and numpy arrays.

    client = dicomframes.connect()            # no URL: the embedded server on 127.0.0.1
    studies = client.search_studies()         # a typed DataFrame, one row per study
    frames = client.frames(study, series, instance)   # numpy arrays

Where to go next (README.md sections, and the modules that hold each part):

- Searching and metadata: ``connect``, ``Client.search_*``, ``Client.metadata``, and
  ``df.dicom`` on any result (README "Quick start", "Every call and the HTTP request it makes").
- Other servers, tokens, TLS: ``connect(url, token=..., auth=...)`` (README "Connecting to
  other servers").
- Plotting: ``dicomframes.plotting`` (``show_frame``, ``montage``, ``show_series``).
- Sample data: ``dicomframes.samples`` (``write_tutorial_files`` and the tutorial archive).
- Whole archives: ``Client.harvest`` to Parquet, ``dicomframes.dask`` for a cluster (README
  "Archive scale").
- Uploading: ``Client.store`` (files, folders, zips); widgets ``StudyBrowser`` and
  ``Uploader`` in ``dicomframes.widgets``.
- The embedded server: ``serve`` here, ``dicomframes serve`` on the command line, an OHIF
  viewer on it (README "View your archive in OHIF").
- Errors: every exception is a :class:`DicomFramesError`; HTTP answers are
  :class:`DICOMwebError` subclasses named after the status (``NotFound``, ``BadRequest``...),
  transport failures :class:`ConnectionFailed` subclasses (details in ``dicomframes.errors``).
- Notebooks and the layout of the code: README "Notebooks", "How the code is laid out".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Registers the ``df.dicom`` accessor, so DataFrames read back from CSV or Parquet have it too.
from . import accessor as _accessor  # noqa: F401

# Registers the ``image.dicom`` accessor of the DataArrays ``client.image`` returns.
from . import imaging as _imaging  # noqa: F401
from .errors import (
    AnswerTooLarge,
    ArchiveChanged,
    ArchiveNotWritable,
    BadRequest,
    ChangeFeedUnavailable,
    Conflict,
    ConnectionFailed,
    ConnectionRefused,
    ConnectionTimedOut,
    DeadlineExceeded,
    DecoderMissing,
    DicomFramesError,
    DICOMwebError,
    EmptyResponse,
    Forbidden,
    GantryTilt,
    GeometryError,
    GeometryWarning,
    InsecureServer,
    InsufficientStorage,
    InvalidResponse,
    IrregularSpacing,
    MethodNotAllowed,
    MissingGeometry,
    MultipartError,
    MultipartTruncated,
    NameNotResolved,
    NotAcceptable,
    NotFound,
    PartialContent,
    PortInUse,
    RedirectRefused,
    ResponseTruncated,
    ServiceUnavailable,
    Throttled,
    TLSFailed,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from .client import Client, connect
    from .server import Server, serve

__version__ = "0.1.0"

__all__ = [
    "AnswerTooLarge",
    "ArchiveChanged",
    "ArchiveNotWritable",
    "BadRequest",
    "ChangeFeedUnavailable",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ConnectionRefused",
    "ConnectionTimedOut",
    "DICOMwebError",
    "DeadlineExceeded",
    "DecoderMissing",
    "DicomFramesError",
    "EmptyResponse",
    "Forbidden",
    "GantryTilt",
    "GeometryError",
    "GeometryWarning",
    "InsecureServer",
    "InsufficientStorage",
    "InvalidResponse",
    "IrregularSpacing",
    "MethodNotAllowed",
    "MissingGeometry",
    "MultipartError",
    "MultipartTruncated",
    "NameNotResolved",
    "NotAcceptable",
    "NotFound",
    "PartialContent",
    "PortInUse",
    "RedirectRefused",
    "ResponseTruncated",
    "Server",
    "ServiceUnavailable",
    "TLSFailed",
    "Throttled",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "__version__",
    "connect",
    "serve",
]

# The web server and HTTP client load on first use.
_LAZY = {
    "Client": ("client", "Client"),
    "connect": ("client", "connect"),
    "Server": ("server", "Server"),
    "serve": ("server", "serve"),
}


def __dir__() -> list[str]:
    """The public names (the lazily loaded ones included) and this module's globals."""
    return sorted(set(__all__) | set(globals()))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        return getattr(module, attr)
    raise AttributeError(f"module 'dicomframes' has no attribute {name!r}")
