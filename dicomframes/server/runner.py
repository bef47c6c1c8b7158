"""Run the DICOMweb app under uvicorn in a background thread, with limits on connections,
header sizes and slow clients (:mod:`.connections`, :mod:`.budget`), and optional
bearer-token authentication."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from ..errors import ArchiveNotWritable, InsecureServer, PortInUse
from .app import create_app, storage_problem
from .azure_profile import PROFILES, AzureStrict
from .budget import DEFAULT_MAX_INFLATED, Limits
from .connections import ConnectionBoard, protocol_for
from .cors import normalise_origin
from .parsers import default_workers
from .storage import Archive

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 2 << 30  # 2 GiB
TOKEN_ENV = "DICOMFRAMES_SERVER_TOKEN"


def _addresses(host: str) -> list[str]:
    """The IP addresses ``host`` names (itself when it is one)."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except OSError:
        return []


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse (:class:`~dicomframes.errors.InsecureServer`) to serve on an address other hosts
    can reach without a token, unless ``insecure``; then log a warning. A token of only
    whitespace is refused (ValueError): no client could send it, so nobody could be served."""
    if token is not None and not token.strip():
        raise ValueError("the bearer token is empty or only whitespace; give a real token")
    addresses = _addresses(host)
    if addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses):
        return
    if token:
        return
    if not insecure:
        raise InsecureServer(host)
    log.warning("serving on %s without authentication (insecure=True): anyone who can reach "
                "it can read, store and delete", host)


def _open_archive(folder: Path, durable: bool, parse_workers: int = 0,
                  max_inflated: int = DEFAULT_MAX_INFLATED) -> Archive:
    """The archive in ``folder``; :class:`~dicomframes.errors.ArchiveNotWritable` when the
    folder cannot be written (checked by writing a file in its tmp/)."""
    try:
        archive = Archive(folder, durable=durable, parse_workers=parse_workers,
                          max_inflated=max_inflated)
    except (OSError, sqlite3.Error) as exc:
        if storage_problem(exc) is None:
            raise
        raise ArchiveNotWritable(str(folder), str(exc)) from None
    try:
        probe = archive.temp_path(".probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        archive.close()
        raise ArchiveNotWritable(str(archive.root), exc.strerror or str(exc)) from None
    return archive


class Server:
    """A running embedded DICOMweb server (see :func:`dicomframes.server.serve`).

    ``url`` is the service root (``http://127.0.0.1:54321``); the same routes also answer under
    ``url + "/v1"`` and ``url + "/v2"``. ``path`` is the archive folder. Use it as a context
    manager, or call :meth:`stop`. ``cors``: browser origins allowed to call it (see
    :func:`dicomframes.server.serve`); ``cors_origins`` holds them, normalised.
    ``parse_workers``: processes that parse large STOW requests (None: one per CPU, at most
    4, started on the first large request; a number: that many, started with the server; 0:
    none, parse in the request's thread). ``profile="azure"``: searches refused where the
    Azure DICOM service refuses them (see :mod:`dicomframes.server.azure_profile`).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1",
                 port: int = 0, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 durable: bool = True, token: str | None = None, insecure: bool = False,
                 limits: Limits | None = None, cors: list[str] | tuple[str, ...] | None = None,
                 parse_workers: int | None = None, profile: str = "default") -> None:
        check_exposure(host, token, insecure)
        if profile not in PROFILES:
            raise ValueError(f"unknown server profile {profile!r}: use one of {PROFILES}")
        cors = [normalise_origin(origin) for origin in cors or ()]  # ValueError before binding
        self.limits = limits or Limits()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without
        # it Nagle + delayed ACK add 40 ms to every small keep-alive response.
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:  # before the archive exists, so nothing is left behind
            self._socket.close()
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)):
                raise PortInUse(host, port) from None
            raise
        self.host: str = host
        self.port: int = self._socket.getsockname()[1]
        self._temporary = path is None
        try:
            folder = Path(tempfile.mkdtemp(prefix="dicomframes-")) if path is None else Path(path)
            self.archive = _open_archive(
                folder, durable, default_workers() if parse_workers is None else parse_workers,
                self.limits.max_inflated)
            if parse_workers and self.archive.parsers is not None:
                self.archive.parsers.start()  # asked for: ready before the first upload
        except BaseException:
            self._socket.close()
            raise
        self.path: Path = self.archive.root
        self.max_request_bytes = int(max_request_bytes)
        self.requires_token = bool(token)
        self.connections = ConnectionBoard(self.limits)
        self.app = create_app(self.archive, max_request_bytes=self.max_request_bytes,
                              token=token or None, body_timeout=self.limits.body_timeout,
                              host_names=(f"[{host}]" if ":" in host else host,),
                              cors_origins=cors, limits=self.limits, board=self.connections)
        self.profile = profile
        if profile == "azure":
            self.app = AzureStrict(self.app)
        self.cors_origins: tuple[str, ...] = tuple(cors or ())
        # uvicorn's documented ``http`` setting: a protocol class; ours wraps uvicorn's own
        protocol = protocol_for(self.connections)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5,
                                timeout_keep_alive=self.limits.keep_alive,  # type: ignore[arg-type]
                                server_header=False, http=protocol,
                                h11_max_incomplete_event_size=self.limits.header_bytes,
                                # uvicorn counts the connection asking: +1 serves the cap
                                limit_concurrency=self.limits.connections() + 1)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"dicomframes-server-{self.port}",
                                        daemon=True)
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread.start()
        self._wait_started()

    def _run(self) -> None:
        try:
            self._uvicorn.run(sockets=[self._socket])
        except BaseException as exc:  # reported to the thread that started the server
            self._error = exc
        finally:
            self._stopped.set()

    def _wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if self._stopped.is_set() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the DICOMweb server did not start: {self._error!r}")
            time.sleep(0.005)

    @property
    def url(self) -> str:
        """Base URL of the service, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True until the server has stopped."""
        return not self._stopped.is_set()

    def stop(self) -> None:
        """Stop serving (finishing requests in flight for up to 5 s) and release the archive;
        a temporary archive (``path=None``) is deleted."""
        self._uvicorn.should_exit = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=15)
        with contextlib.suppress(OSError):
            self._socket.close()
        self.archive.close()
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)

    def wait(self) -> None:
        """Block until the server stops (Ctrl+C in the calling thread interrupts the wait)."""
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        auth = " token required" if self.requires_token else ""
        return f"<dicomframes Server {self.url} ({state}) data={str(self.path)!r}{auth}>"
