"""The embedded DICOMweb server: PS3.18 STOW-RS, WADO-RS, QIDO-RS and DELETE on 127.0.0.1.

Files live on disk under the archive folder, indexed in SQLite (WAL). The app runs on Starlette
under uvicorn in a background thread. Start one with :func:`serve`::

    with dicomframes.serve("archive") as server:
        print(server.url)            # http://127.0.0.1:54321 (also .../v1 and .../v2)

:func:`embedded` returns the process-wide default server that ``dicomframes.connect()`` uses.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from .runner import DEFAULT_MAX_REQUEST_BYTES, Server

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "Server", "default_archive", "embedded", "serve"]


def serve(path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 0,
          *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, durable: bool = True) -> Server:
    """Start a DICOMweb server and return it, already listening.

    ``path``: the archive folder (created if needed; None: a temporary folder deleted by
    :meth:`Server.stop`). ``port=0`` picks a free port. ``max_request_bytes`` limits a STOW
    request body (larger -> 413). ``durable=False`` skips fsync (faster bulk loads; a power
    cut may then lose the last stored files, a crash of the process does not).
    """
    return Server(path, host, port, max_request_bytes=max_request_bytes, durable=durable)


_embedded: dict[Path, Server] = {}
_embedded_lock = threading.Lock()


def default_archive() -> Path:
    """The folder of the embedded archive: env ``DICOMFRAMES_DATA``, else
    ``~/.cache/dicomframes/archive``."""
    value = os.environ.get("DICOMFRAMES_DATA")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dicomframes" / \
        "archive"


def embedded() -> Server:
    """The process-wide embedded server on :func:`default_archive`, started on first use
    (thread-safe; one server per archive folder, stopped when the process exits)."""
    folder = default_archive().resolve()
    with _embedded_lock:
        server = _embedded.get(folder)
        if server is None or not server.running:
            server = serve(folder)
            _embedded[folder] = server
            atexit.register(server.stop)
        return server
