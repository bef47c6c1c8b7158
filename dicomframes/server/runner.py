"""Run the DICOMweb app under uvicorn in a background thread."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from ..errors import PortInUse
from .app import create_app
from .storage import Archive

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 2 << 30  # 2 GiB


class Server:
    """A running embedded DICOMweb server (see :func:`dicomframes.server.serve`).

    ``url`` is the service root (``http://127.0.0.1:54321``); the same routes also answer under
    ``url + "/v1"`` and ``url + "/v2"``. ``path`` is the archive folder. Use it as a context
    manager, or call :meth:`stop`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1",
                 port: int = 0, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 durable: bool = True) -> None:
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
            self.archive = Archive(folder, durable=durable)
        except BaseException:
            self._socket.close()
            raise
        self.path: Path = self.archive.root
        self.max_request_bytes = int(max_request_bytes)
        self.app = create_app(self.archive, max_request_bytes=self.max_request_bytes)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5,
                                timeout_keep_alive=30, server_header=False)
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
        return f"<dicomframes Server {self.url} ({state}) data={str(self.path)!r}>"
