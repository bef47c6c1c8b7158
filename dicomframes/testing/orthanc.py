"""Run a real Orthanc with its DICOMweb plugin on loopback, for tests and benchmarks.

Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) is a widely used open-source
DICOM server. dicomframes uses it as an independent peer: the test suite checks that the client
works against it, and ``benchmarks/server.py`` compares the embedded server with it.

>>> from dicomframes.testing.orthanc import orthanc_installed, start_orthanc
>>> with start_orthanc() as orthanc:              # doctest: +SKIP
...     requests.get(orthanc.dicomweb_url + "/studies", auth=orthanc.auth)

Each server gets its own storage and index in a working folder, a free TCP port and a
configuration that keeps it local (``RemoteAccessAllowed`` false: Orthanc refuses clients that
are not on this machine; note that it still listens on all interfaces, it has no bind-address
option), with the DICOM protocol off and HTTP compression off (gzip makes pixel retrieval about
ten times slower). Options that only cost time in a throw-away server (fsync of every file, MD5
of attachments, saving jobs) are turned off, and the in-memory storage cache is enlarged, so
that benchmarks compare against Orthanc at its best.

Environment variables ``ORTHANC_BINARY`` and ``ORTHANC_DICOMWEB_PLUGIN`` override the Debian
paths.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "DEFAULT_BINARY",
    "DEFAULT_DICOMWEB_PLUGIN",
    "OrthancServer",
    "orthanc_binary",
    "orthanc_installed",
    "start_orthanc",
]

DEFAULT_BINARY = "/usr/sbin/Orthanc"
DEFAULT_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
_LOOPBACK = "127.0.0.1"


def orthanc_binary() -> str | None:
    """Return the path of the Orthanc executable, or None when it is not installed."""
    configured = os.environ.get("ORTHANC_BINARY")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return shutil.which("Orthanc")


def _plugin_path() -> str:
    return os.environ.get("ORTHANC_DICOMWEB_PLUGIN", DEFAULT_DICOMWEB_PLUGIN)


def orthanc_installed() -> bool:
    """True when both Orthanc and its DICOMweb plugin are installed on this machine."""
    return orthanc_binary() is not None and Path(_plugin_path()).is_file()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _configuration(workdir: Path, port: int, name: str, username: str | None,
                   password: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Name": name,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "TemporaryDirectory": str(workdir / "tmp"),
        "Plugins": [_plugin_path()],
        "HttpServerEnabled": True,
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "HttpCompressionEnabled": False,
        "HttpDescribeErrors": True,
        "HttpThreadsCount": 50,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "DicomServerEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "MetricsEnabled": False,
        # Speed for a throw-away server: no fsync per file, no MD5, no job persistence, a big
        # in-memory cache of recently read files (MB), no compression on disk.
        "StorageCompression": False,
        "SyncStorageArea": False,
        "StoreMD5ForAttachments": False,
        "SaveJobs": False,
        "MaximumStorageCacheSize": 512,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
        },
    }
    if username is not None:
        config["AuthenticationEnabled"] = True
        config["RegisteredUsers"] = {username: password or ""}
    else:
        config["AuthenticationEnabled"] = False
    return config


class OrthancServer:
    """A running Orthanc process; use as a context manager or call :meth:`stop`.

    Attributes: ``url`` (``http://127.0.0.1:PORT``, also ``rest_url``), ``dicomweb_url``
    (``.../dicom-web``), ``auth`` (a ``(user, password)`` tuple for ``requests`` or None),
    ``workdir`` and ``port``. The password never appears in ``repr``.
    """

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, port: int,
                 auth: tuple[str, str] | None, log_path: Path, owns_workdir: bool) -> None:
        self._process = process
        self.workdir = workdir
        self.port = port
        self.auth = auth
        self.log_path = log_path
        self._owns_workdir = owns_workdir
        self._session = requests.Session()
        self._session.auth = auth

    @property
    def rest_url(self) -> str:
        """Base URL of Orthanc's own REST API (no trailing slash)."""
        return f"http://{_LOOPBACK}:{self.port}"

    url = rest_url

    @property
    def dicomweb_url(self) -> str:
        """Base URL of the DICOMweb service (no trailing slash)."""
        return f"{self.rest_url}/dicom-web"

    @property
    def pid(self) -> int:
        """Process id of the Orthanc server."""
        return self._process.pid

    def running(self) -> bool:
        """True while the Orthanc process is alive."""
        return self._process.poll() is None

    def log(self) -> str:
        """Orthanc's log so far (useful in a failing test's message)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rest(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call Orthanc's REST API (``path`` like ``/patients``); raises on HTTP errors."""
        kwargs.setdefault("timeout", 60)
        response = self._session.request(method, self.rest_url + path, **kwargs)
        response.raise_for_status()
        return response

    def statistics(self) -> Mapping[str, Any]:
        """Orthanc's ``/statistics`` (counts of patients, studies, series, instances)."""
        return self.rest("GET", "/statistics").json()

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance) via the REST API."""
        for patient in self.rest("GET", "/patients").json():
            self.rest("DELETE", f"/patients/{patient}")

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate Orthanc, wait for it to exit and remove a temporary working folder."""
        self._session.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OrthancServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        user = f", user={self.auth[0]!r}" if self.auth else ""
        state = "running" if self.running() else "stopped"
        return f"<OrthancServer {self.dicomweb_url} {state}{user}>"


def _wait_ready(server: OrthancServer, name: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f"Orthanc exited at start-up (code {server._process.returncode});"
                               f" log:\n{server.log()[-4000:]}")
        try:
            response = requests.get(server.rest_url + "/system", auth=server.auth, timeout=2)
            # The name tells our Orthanc from another server that holds the port already.
            if response.status_code == 200 and response.json().get("Name") == name:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"Orthanc did not answer /system in time; log:\n{server.log()[-4000:]}")


def start_orthanc(workdir: str | os.PathLike[str] | None = None, *, username: str | None = None,
                  password: str | None = None, timeout: float = 30.0,
                  extra_config: Mapping[str, Any] | None = None) -> OrthancServer:
    """Start Orthanc with the DICOMweb plugin on a free loopback port and wait until it answers.

    ``workdir`` holds the configuration, storage, index and log (a temporary folder removed on
    :meth:`OrthancServer.stop` when None). With ``username``, HTTP basic authentication is on
    (``password`` defaults to a random token). ``extra_config`` entries override the generated
    configuration (top-level keys; ``DicomWeb`` is merged). Raises RuntimeError when Orthanc is
    not installed or exits, TimeoutError when it does not answer within ``timeout`` seconds.
    """
    binary = orthanc_binary()
    if binary is None or not Path(_plugin_path()).is_file():
        raise RuntimeError("Orthanc with its DICOMweb plugin is not installed "
                           "(apt-get install orthanc orthanc-dicomweb)")
    if password is not None and username is None:
        raise ValueError("a password needs a username")
    if username is not None and password is None:
        password = secrets.token_urlsafe(16)
    owns = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="orthanc-")) if workdir is None else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("storage", "index", "tmp"):
        (folder / sub).mkdir(exist_ok=True)
    auth = (username, password) if username is not None and password is not None else None

    last_error: Exception | None = None
    for _attempt in range(3):  # another process may grab the free port before Orthanc binds it
        port = _free_port()
        name = f"dicomframes-{secrets.token_hex(4)}"
        config = _configuration(folder, port, name, username, password)
        for key, value in (extra_config or {}).items():
            if key == "DicomWeb" and isinstance(value, Mapping):
                config["DicomWeb"] = {**config["DicomWeb"], **value}
            else:
                config[key] = value
        config_path = folder / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        os.chmod(config_path, 0o600)  # it may hold a password
        log_path = folder / "orthanc.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([binary, str(config_path)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        server = OrthancServer(process, folder, port, auth, log_path, owns)
        try:
            _wait_ready(server, name, time.monotonic() + timeout)
            return server
        except RuntimeError as error:
            last_error = error
            server._owns_workdir = False
            server.stop()
            if "already in use" not in server.log().lower():
                break
        except BaseException:
            server.stop()
            raise
    if owns:
        shutil.rmtree(folder, ignore_errors=True)
    assert last_error is not None
    raise last_error
