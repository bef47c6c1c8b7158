"""A request that gets no answer raises one typed package error whose message is one sentence
naming the URL and the cause: refused, name not resolved, TLS failure, timeout. Real loopback
servers only."""

from __future__ import annotations

import http.server
import ipaddress
import os
import pickle
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import require

import dicomframes
from dicomframes import connect, errors
from dicomframes.client.transport import connection_failure


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_the_errors_are_exported() -> None:
    names = ("ConnectionFailed", "ConnectionRefused", "NameNotResolved", "TLSFailed",
             "ConnectionTimedOut", "PortInUse")
    for name in names:
        assert name in dicomframes.__all__ and name in dir(dicomframes)
        assert issubclass(getattr(dicomframes, name), dicomframes.DicomFramesError)
    assert "connect" in dir(dicomframes) and "serve" in dir(dicomframes)


def test_refused_connection(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    client = connect(url, retries=0)
    with pytest.raises(errors.ConnectionRefused) as info:
        client.search_studies(limit=1)
    error = info.value
    assert isinstance(error, errors.ConnectionFailed) and error.cause == "connection refused"
    text = str(error)
    assert text.startswith(f"GET {url}/studies?limit=1: connection refused (")
    assert "\n" not in text and f"127.0.0.1:{closed_port}" in error.hint
    assert len(client.history) == 1  # retries=0: one attempt, no wait
    assert error.attempts == 1 and "Connection refused" in error.detail
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is errors.ConnectionRefused and str(again) == text


def test_refused_connection_retried_as_asked_and_without_credentials(closed_port: int) -> None:
    client = connect(f"http://someone:pa55word@127.0.0.1:{closed_port}", retries=2,
                     backoff=0.01)
    with pytest.raises(errors.ConnectionRefused) as info:
        client.search_studies(limit=1)
    assert len(client.history) == 3 and info.value.attempts == 3
    assert "after 3 attempts" in str(info.value)
    assert "pa55word" not in str(info.value) + info.value.detail


def test_timeout_when_the_server_never_answers() -> None:
    held: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)  # accepted, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        client = connect(url, timeout=0.3, retries=0)
        with pytest.raises(errors.ConnectionTimedOut) as info:
            client.search_studies(limit=1)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    text = str(info.value)
    assert text.startswith(f"GET {url}/studies?limit=1: timed out (no answer within 0.3 s")
    assert "\n" not in text and held  # the server did accept the connection


def _self_signed(folder: Path) -> tuple[Path, Path]:
    require(shutil.which("openssl") is not None, "the openssl command", "apt install openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class _Empty(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args: object) -> None:
        pass


class _QuietTLSServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the refused handshakes of the test


def test_tls_certificate_not_trusted(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = _QuietTLSServer(("127.0.0.1", 0), _Empty)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{httpd.server_address[1]}"
    try:
        client = connect(url)  # retries=3, yet a refused certificate is not tried again
        with pytest.raises(errors.TLSFailed) as info:
            client.search_studies(limit=1)
        assert len(client.history) == 1
        trusting = connect(url, verify=str(cert))  # the same server, its certificate trusted
        assert len(trusting.search_studies(limit=1)) == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    text = str(info.value)
    assert text.startswith(f"GET {url}/studies?limit=1: TLS certificate verification failed (")
    assert "self-signed certificate" in text and "verify=" in text and "\n" not in text


def test_https_to_a_plain_http_server() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Empty)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = connect(f"https://127.0.0.1:{httpd.server_address[1]}", retries=0)
        with pytest.raises(errors.TLSFailed) as info:
            client.search_studies(limit=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "TLS handshake failed" in str(info.value) and "try http://" in str(info.value)


_LOOKUP = """
import dicomframes
client = dicomframes.connect("http://dicomframes-test.invalid", retries=0)
try:
    client.search_studies(limit=1)
except dicomframes.NameNotResolved as exc:
    print("NameNotResolved:", exc)
"""


def test_name_not_resolved() -> None:
    """A real lookup that fails, in a network namespace of its own with no interfaces
    (``unshare -n``), so that no DNS query can leave the machine."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        require(False, "unshare -n (root, util-linux)",
                "run the tests as root: a lookup is only tried without any network")
    done = subprocess.run([unshare, "-n", sys.executable, "-c", _LOOKUP], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "NameNotResolved:" in done.stdout
    assert "name not resolved" in done.stdout and "dicomframes-test.invalid" in done.stdout


def test_resolver_failure_is_named() -> None:
    """The resolver's own exception (socket.gaierror, as getaddrinfo raises it) is classified
    without any lookup."""
    failure = connection_failure(socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
                                 "GET", "https://pacs.invalid/dicom-web/studies")
    assert isinstance(failure, errors.NameNotResolved)
    assert str(failure) == ("GET https://pacs.invalid/dicom-web/studies: name not resolved (no "
                            "address for host 'pacs.invalid'; check the URL)")


def test_busy_port_is_a_typed_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.PortInUse) as info:
            dicomframes.serve(tmp_path / "archive", port=port)
    assert isinstance(info.value, OSError) and info.value.port == port
    assert str(info.value).startswith(f"port {port} on 127.0.0.1 is already in use")
    assert not (tmp_path / "archive").exists()  # nothing left behind
    assert ipaddress.ip_address(info.value.host).is_loopback
