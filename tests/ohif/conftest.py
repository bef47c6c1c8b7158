"""Fixtures of the OHIF browser test: the viewer's dist/ served on one loopback port, the
embedded server with CORS on another, loaded with the tutorial files and a few pydicom files."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import uvicorn
from pydicom.data import get_testdata_file
from support import TUTORIAL_DATA, TUTORIAL_NAMES, DicomwebServer, require

from dicomframes.server.app import create_app
from dicomframes.server.cors import with_cors
from dicomframes.server.storage import Archive

from .viewer import StaticViewer, dist

CHROMIUM = "/usr/bin/chromium"
# pydicom's files stored besides the tutorial's: one study each (CT, MR, JPEG lossless RGB)
PYDICOM_NAMES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_gdcm.dcm")


def app_config(server_url: str) -> str:
    """OHIF 3.13's app-config.js with one DICOMweb data source: the embedded server.

    The data source is the shipped default's (dist/app-config.js), pointed at ``server_url``.
    """
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomframes",
        "configuration": {
            "friendlyName": "dicomframes embedded server",
            "name": "dicomframes",
            "wadoUriRoot": server_url,
            "qidoRoot": server_url,
            "wadoRoot": server_url,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "thumbnail",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "dicomframes",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    """The pinned OHIF viewer's dist/, installed beforehand (.ci/run does it). Like the npm
    client's tests (tests/clients), the tests never download from npm by themselves: on a
    user's machine they skip, naming the command that installs the viewer."""
    require(importlib.util.find_spec("playwright") is not None, "Playwright",
            "pip install playwright (no browser download: the system Chromium is used)")
    require(Path(CHROMIUM).is_file(), "Chromium", "apt-get install chromium")
    folder = dist()
    if folder is None:
        require(shutil.which("npm") is not None, "Node.js and npm", "apt-get install nodejs npm")
        require(False, "the pinned OHIF viewer",
                "python tests/ohif/viewer.py install: about 200 MB from npm")
    assert folder is not None
    return folder


@dataclass
class OhifSetup:
    """The viewer's URL, the embedded server (``url``, ``port``) and the studies stored."""

    viewer_url: str
    server_url: str
    server_port: int
    studies: dict[str, str]  # StudyInstanceUID -> PatientName


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free port of 127.0.0.1 (its port is known before serving)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running(app: object, sock: socket.socket) -> Iterator[str]:
    """Serve the ASGI ``app`` under uvicorn on ``sock`` (as server/runner.py does) from a
    thread; yields its URL. The socket is closed on exit."""
    config = uvicorn.Config(app, log_level="warning", access_log=False,  # type: ignore[arg-type]
                            lifespan="off", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="ohif-dicomweb")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:  # a hang guard
                pytest.fail("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def ohif(ohif_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OhifSetup]:
    """The viewer on one loopback port and the embedded server, CORS allowing the viewer's
    origin, on another; the server holds the tutorial's study and three pydicom studies.

    Until ``create_app(..., cors_origins=...)`` exists, the app is wrapped here with
    :func:`dicomframes.server.cors.with_cors` and run under uvicorn as the runner does.
    """
    sock = loopback_socket()
    port = int(sock.getsockname()[1])
    server_url = f"http://127.0.0.1:{port}"
    viewer = StaticViewer(ohif_dist, {"/app-config.js": app_config(server_url).encode()})
    archive = Archive(tmp_path_factory.mktemp("ohif-archive"), durable=False)
    app = with_cors(create_app(archive, host_names=("127.0.0.1",)), [viewer.url])
    try:
        with running(app, sock):
            yield _loaded(viewer.url, server_url, port)
    finally:
        viewer.stop()
        archive.close()


def _loaded(viewer_url: str, server_url: str, port: int) -> OhifSetup:
    """Store the tutorial's and pydicom's files (a plain STOW-RS POST); the set-up."""
    files = [TUTORIAL_DATA / name for name in TUTORIAL_NAMES]
    files += [Path(get_testdata_file(name)) for name in PYDICOM_NAMES]
    DicomwebServer("embedded", server_url, None).stow(files)
    studies = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies[str(ds.StudyInstanceUID)] = str(ds.PatientName)
    return OhifSetup(viewer_url, server_url, port, studies)
