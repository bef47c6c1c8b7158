"""Starting and stopping the server: serve(), embedded() and `dicomframes serve`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

import dicomframes
from dicomframes import server as server_module
from dicomframes.server import Server, serve

from .server_helpers import stow


def test_serve_with_temporary_storage(tutorial_files) -> None:
    with serve() as server:
        assert isinstance(server, Server)
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.host == "127.0.0.1" and server.port > 0
        folder = Path(server.path)
        assert folder.is_dir()
        assert stow(server.url + "/v2", tutorial_files[:1]).status_code == 200
        assert requests.get(server.url + "/").status_code == 200
        assert str(server.port) in repr(server)
    assert not server.running
    assert not folder.exists()  # temporary storage is removed
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/studies", timeout=2)
    server.stop()  # stopping twice is harmless


def test_data_survive_a_restart_and_two_servers_share_a_folder(tmp_path, tutorial_files) -> None:
    with serve(tmp_path) as first:
        assert stow(first.url, tutorial_files).status_code == 200
        with serve(tmp_path) as second:  # a second process or thread on the same folder
            assert len(requests.get(second.url + "/instances").json()) == 3
    with dicomframes.serve(tmp_path, port=0) as again:
        assert len(requests.get(again.url + "/instances").json()) == 3
    assert (tmp_path / "files").is_dir()


def test_wait_returns_when_stopped(tmp_path) -> None:
    server = serve(tmp_path)
    stopper = threading.Timer(0.2, server.stop)
    stopper.start()
    server.wait()
    stopper.join()
    assert not server.running


def test_embedded_is_one_server_per_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DICOMFRAMES_DATA", str(tmp_path / "embedded"))
    found: list[Server] = []
    threads = [threading.Thread(target=lambda: found.append(server_module.embedded()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len({id(s) for s in found}) == 1
        server = found[0]
        assert Path(server.path) == (tmp_path / "embedded").resolve()
        assert server_module.embedded() is server
        assert requests.get(server.url + "/studies").json() == []
    finally:
        found[0].stop()


def test_cli_prints_the_url_and_stops_on_ctrl_c(tmp_path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomframes", "serve", "--data", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = next(word for word in line.split() if word.startswith("http://127.0.0.1:"))
        assert requests.get(f"{url}/v1/studies").json() == []
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0


def test_an_https_url_to_the_server_is_explained(tmp_path) -> None:
    """A TLS handshake to this plain-HTTP server: the console says to use http://, not
    uvicorn's bare "Invalid HTTP request received."."""
    import logging
    import socket
    import ssl

    from dicomframes.server.console import NOT_HTTP

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    with serve(tmp_path) as server:
        logger = logging.getLogger("uvicorn.error")
        logger.addHandler(keep)
        try:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock, \
                    pytest.raises(ssl.SSLError):
                context.wrap_socket(sock)
            for _ in range(100):  # the server logs from its own thread
                if seen:
                    break
                threading.Event().wait(0.05)
        finally:
            logger.removeHandler(keep)
    assert seen == [NOT_HTTP]
    assert "https://" in NOT_HTTP and "http://" in NOT_HTTP
