"""The embedded DICOMweb server: PS3.18 STOW-RS, WADO-RS, QIDO-RS and DELETE on 127.0.0.1.

Files live on disk under the archive folder, indexed in SQLite (WAL). The app runs on Starlette
under uvicorn in a background thread. Start one with :func:`serve`::

    with dicomframes.serve("archive") as server:
        print(server.url)            # http://127.0.0.1:54321 (also .../v1 and .../v2)

:func:`embedded` returns the process-wide default server that ``dicomframes.connect()`` uses
(in this process, or with ``connect(server="process")`` in a child process:
:mod:`dicomframes.server.child`).
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any

from .budget import Limits
from .child import ChildServer
from .runner import DEFAULT_MAX_REQUEST_BYTES, TOKEN_ENV, Server

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "TOKEN_ENV", "ChildServer", "Limits", "Server",
           "default_archive", "embedded", "serve"]


def serve(path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 0,
          *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, durable: bool = True,
          token: str | None = None, insecure: bool = False,
          limits: Limits | None = None, cors: list[str] | tuple[str, ...] | None = None,
          parse_workers: int | None = None, profile: str = "default") -> Server:
    """Start a DICOMweb server and return it, already listening.

    ``path``: the archive folder (created if needed; None: a temporary folder deleted by
    :meth:`Server.stop`; a folder that cannot be written raises
    :class:`~dicomframes.errors.ArchiveNotWritable`). ``port=0`` picks a free port.
    ``max_request_bytes`` limits a STOW request body (larger -> 413). ``durable=False`` skips
    fsync (faster bulk loads; a power cut may then lose the last stored files, a crash of the
    process does not).

    ``token``: every request must carry ``Authorization: Bearer <token>`` (else 401; connect
    with ``dicomframes.connect(url, token=...)``). A ``host`` other hosts can reach (not
    127.0.0.1, ::1 or localhost) is refused without a token
    (:class:`~dicomframes.errors.InsecureServer`) unless ``insecure=True``, which logs a
    warning. ``limits``: connection cap, header size and slow-client timeouts
    (:class:`Limits`).

    ``cors``: browser origins (``scheme://host[:port]``, e.g. ``["http://localhost:3000"]``
    for an OHIF viewer served there) whose pages may call the server (CORS; off by default;
    preflights answered; ``Authorization`` allowed when a ``token`` is set). ValueError for an
    origin that is not of that form.

    ``parse_workers``: child processes that write and parse the files of a large STOW request
    (16 instances or more) in parallel; None: one per CPU, at most 4, started on the first
    such request; a number: that many, started with the server; 0: none, all in the request's
    thread.

    ``profile="azure"``: the Azure-strict profile; searches that the Azure DICOM service
    refuses (wildcards, attributes it does not search, ``limit`` over 200) answer 400, and a
    search without matches 204 (see :mod:`dicomframes.server.azure_profile`).
    """
    return Server(path, host, port, max_request_bytes=max_request_bytes, durable=durable,
                  token=token, insecure=insecure, limits=limits, cors=cors,
                  parse_workers=parse_workers, profile=profile)


def import_folder(folder: str | os.PathLike[str], data: str | os.PathLike[str],
                  in_place: bool = False, **options: Any) -> Any:
    """Index the DICOM files under ``folder`` into the archive folder ``data`` (copied, or
    linked without copying when ``in_place``); returns a DataFrame of one outcome per file.
    See :func:`dicomframes.server.importer.import_folder` for ``options``."""
    from .importer import import_folder as run

    return run(folder, data, in_place, **options)


_embedded: dict[tuple[Path, bool], Server | ChildServer] = {}
_embedded_lock = threading.Lock()


def default_archive() -> Path:
    """The folder of the embedded archive: env ``DICOMFRAMES_DATA``, else
    ``~/.cache/dicomframes/archive``."""
    value = os.environ.get("DICOMFRAMES_DATA")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dicomframes" / \
        "archive"


def embedded(kind: str = "thread") -> Server | ChildServer:
    """The process-wide embedded server on :func:`default_archive`, started on first use
    (thread-safe; one server per archive folder, stopped when the process exits).

    ``kind="thread"``: served by threads of this process (sharing its interpreter lock with
    the caller); ``"process"``: by a child process (:class:`ChildServer`), so that serving
    does not slow the caller's decoding down. ValueError for another kind."""
    if kind not in ("thread", "process"):
        raise ValueError(f"server is 'thread' or 'process', got {kind!r}")
    process = kind == "process"
    folder = default_archive().resolve()
    with _embedded_lock:
        server = _embedded.get((folder, process))
        if server is None or not server.running:
            server = ChildServer(folder) if process else serve(folder)
            _embedded[(folder, process)] = server
            atexit.register(server.stop)
        return server
