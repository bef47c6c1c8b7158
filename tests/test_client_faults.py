"""Faults on the wire (issue 12): every client call raises a typed package error naming the URL,
never partial or empty data; calls have an overall deadline; secrets never show; redirects
never carry a body or credentials to another origin.

The misbehaving servers are real loopback servers written here on purpose (raw sockets and
``http.server``); the well-behaved counterpart is the embedded server.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import pickle
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from support import make_instances

import dicomframes
from dicomframes import connect, errors

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"
TOKEN = "s3cr3t-T0KEN-value-42"
JSON_TYPE = "application/dicom+json"


def instance_json(n: int) -> dict:
    return {"0020000D": {"vr": "UI", "Value": [STUDY]},
            "0020000E": {"vr": "UI", "Value": [SERIES]},
            "00080018": {"vr": "UI", "Value": [f"1.2.3.{n}"]}}


FORTY = json.dumps([instance_json(n) for n in range(40)]).encode()


# ---- a raw loopback server: each connection is handed to a function that writes bytes ---------


class Raw:
    """A TCP server on 127.0.0.1. Each request (head and Content-Length body) is recorded in
    ``requests``; ``answer(conn, head)`` writes whatever it likes, then the connection closes."""

    def __init__(self, answer: Callable[[socket.socket, str], None]) -> None:
        self.answer = answer
        self.requests: list[str] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            self.requests.append(head)
            with contextlib.suppress(OSError):  # the client gave up: what these tests expect
                self.answer(conn, head)

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[socket.socket, str], None]], Raw]]:
    servers: list[Raw] = []

    def start(answer: Callable[[socket.socket, str], None]) -> Raw:
        servers.append(Raw(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def head(status: str = "200 OK", ctype: str = JSON_TYPE, length: int | None = None,
         extra: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def cut_short(conn: socket.socket, _: str) -> None:
    """Declares the 40-instance answer, sends its first 300 bytes, closes."""
    conn.sendall(head(length=len(FORTY)) + FORTY[:300])


def reset(conn: socket.socket, _: str) -> None:
    """Declares the 40-instance answer, sends its first 300 bytes, resets the connection."""
    conn.sendall(head(length=len(FORTY)) + FORTY[:300])
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def chunk_cut(conn: socket.socket, _: str) -> None:
    """A chunked answer that stops after its first chunk (no closing zero-size chunk)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 300 + FORTY[:300] + b"\r\n")


def answer_with(body: bytes, ctype: str = JSON_TYPE, status: str = "200 OK",
                extra: str = "") -> Callable[[socket.socket, str], None]:
    def answer(conn: socket.socket, _: str) -> None:
        conn.sendall(head(status, ctype, len(body), extra) + body)
    return answer


# ---- 1. an answer cut short raises, never 0 rows ------------------------------------------------


@pytest.mark.parametrize("answer", [cut_short, reset, chunk_cut])
def test_search_and_metadata_cut_short_raise_instead_of_returning_nothing(
        raw, answer: Any) -> None:
    server = raw(answer)
    client = connect(server.url, retries=0)
    with pytest.raises(errors.ResponseTruncated) as info:
        client.search_instances(STUDY)
    error = info.value
    assert error.url == f"{server.url}/studies/{STUDY}/instances?limit=100"
    assert error.url in str(error)
    assert error.expected == (None if answer is chunk_cut else len(FORTY))
    for call in (lambda: client.metadata(STUDY), lambda: client.metadata_json(STUDY, SERIES)):
        with pytest.raises(errors.ResponseTruncated, match=r"/metadata: "):
            call()
    ok = raw(answer_with(FORTY))
    assert len(connect(ok.url).search_instances(STUDY)) == 40  # the same answer, whole


def test_cli_search_cut_short_fails_with_one_line(raw) -> None:
    server = raw(reset)
    result = subprocess.run(
        [sys.executable, "-m", "dicomframes", "search", "instances", "--study", STUDY,
         "--url", server.url], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "(no results)" not in result.stdout
    assert "Traceback" not in result.stderr and server.url in result.stderr


def _multipart(parts: list[bytes], close: bool) -> bytes:
    body = b"".join(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts)
    return body + (b"--XyZ--\r\n" if close else b"")


MULTI = 'multipart/related; type="application/dicom"; boundary=XyZ'


def test_retrieve_without_closing_boundary_names_the_url(raw) -> None:
    body = _multipart(make_instances(2), close=False)
    server = raw(answer_with(body, MULTI))
    with pytest.raises(errors.MultipartError) as info:
        connect(server.url).retrieve(STUDY)
    assert f"GET {server.url}/studies/{STUDY}:" in str(info.value)


def test_retrieve_cut_short_against_its_length_is_truncated(raw) -> None:
    body = _multipart(make_instances(2), close=True)

    def answer(conn: socket.socket, _: str) -> None:
        conn.sendall(head(ctype=MULTI, length=len(body)) + body[: len(body) // 2])

    server = raw(answer)
    with pytest.raises(errors.MultipartTruncated) as info:
        connect(server.url, retries=0).retrieve(STUDY)
    assert isinstance(info.value, errors.ResponseTruncated | errors.MultipartError)
    assert info.value.url == f"{server.url}/studies/{STUDY}"


# ---- 2. bodies that are not what was asked for ------------------------------------------------

HTML = b"<!doctype html><html><body><h1>Sign in</h1>session " + TOKEN.encode() + b"</body></html>"


@pytest.mark.parametrize("body,ctype,words", [
    (HTML, "text/html", "not valid JSON"),
    (b"[{\"0020000D\": ", JSON_TYPE, "not valid JSON"),
    (b'{"error": "nope", "count": 3}', "application/json", "not DICOM JSON"),
    (b'["1.2.3", "1.2.4"]', JSON_TYPE, "not DICOM JSON"),
    (b'[{"0020000D": "1.2.3"}]', JSON_TYPE, "not DICOM JSON"),
])
def test_search_and_metadata_of_a_wrong_body_raise_invalid_response(
        raw, body: bytes, ctype: str, words: str) -> None:
    server = raw(answer_with(body, ctype))
    client = connect(server.url, token=TOKEN)
    for call, path in ((lambda: client.search_studies(), "/studies"),
                       (lambda: client.metadata(STUDY), f"/studies/{STUDY}/metadata")):
        with pytest.raises(errors.InvalidResponse, match=words) as info:
            call()
        error = info.value
        assert error.url.startswith(server.url + path) and error.url in str(error)
        assert error.content_type == ctype and error.preview.startswith(body[:10])
        assert TOKEN not in str(error) and TOKEN.encode() not in error.preview


def test_html_retrieve_and_rendered_raise_invalid_response(raw) -> None:
    server = raw(answer_with(HTML, "text/html"))
    client = connect(server.url, token=TOKEN)
    with pytest.raises(errors.InvalidResponse, match="text/html") as info:
        client.retrieve(STUDY, SERIES, SOP)
    assert TOKEN not in str(info.value) and b"Sign in" in info.value.preview
    with pytest.raises(errors.InvalidResponse, match="not a picture"):
        client.rendered(STUDY, SERIES, SOP)
    not_dicom = raw(answer_with(HTML, "application/dicom"))
    with pytest.raises(errors.InvalidResponse, match="not a DICOM file") as info:
        connect(not_dicom.url, token=TOKEN).retrieve(STUDY, SERIES, SOP)
    assert f"{not_dicom.url}/studies/{STUDY}/series/{SERIES}/instances/{SOP}" in str(info.value)
    assert TOKEN.encode() not in info.value.preview


# ---- 3. an overall deadline besides the per-read timeout --------------------------------------


def drip_body(conn: socket.socket, _: str) -> None:
    """A valid answer of 150 bytes, one byte every 0.1 s (15 s in all)."""
    body = json.dumps([instance_json(1)]).encode().ljust(150)
    conn.sendall(head(length=len(body)))
    for byte in body:
        threading.Event().wait(0.1)
        conn.sendall(bytes([byte]))


def drip_head(conn: socket.socket, _: str) -> None:
    """The status line, then the headers one byte every 0.1 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for byte in (b"X-Slow: " + b"x" * 150 + b"\r\n"):
        threading.Event().wait(0.1)
        conn.sendall(bytes([byte]))


@pytest.mark.parametrize("answer", [drip_body, drip_head], ids=["body", "headers"])
def test_a_dripping_server_is_stopped_by_the_deadline(raw, answer: Any) -> None:
    server = raw(answer)
    client = connect(server.url, timeout=3, deadline=1, retries=0)
    with pytest.raises(errors.DeadlineExceeded) as info:
        client.search_instances(STUDY)
    error = info.value
    assert isinstance(error, errors.ConnectionTimedOut) and error.deadline == 1
    assert error.url == f"{server.url}/studies/{STUDY}/instances?limit=100"
    assert "deadline of 1 s" in str(error) and len(server.requests) == 1


def test_endless_fresh_pages_stop_at_the_deadline(raw) -> None:
    count = iter(range(10**9))

    def endless(conn: socket.socket, _: str) -> None:
        body = json.dumps([instance_json(next(count))]).encode()
        conn.sendall(head(length=len(body)) + body)

    server = raw(endless)
    client = connect(server.url, page_size=1, max_pages=10**6, deadline=1, progress=False)
    with pytest.raises(errors.DeadlineExceeded, match="/instances"):
        client.search_instances(STUDY)
    assert len(server.requests) > 1  # several pages, one deadline for all of them
    # a per-call limit overrides the client's deadline, for the calls of the block only
    client.deadline = None
    with pytest.raises(errors.DeadlineExceeded, match=r"0\.5 s"), client.time_limit(0.5):
        client.search_instances(STUDY)


def test_deadline_leaves_a_normal_call_alone(embedded) -> None:
    client = connect(embedded.url, deadline=60)
    assert client.deadline == 60
    with client.time_limit(30):
        client.search_studies(limit=1)
    client.search_studies(limit=1)


# ---- 4. secrets and redirects -------------------------------------------------------------------


class Echo(http.server.BaseHTTPRequestHandler):
    """Echoes the Authorization header back in a header and the body, with status 400."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        body = json.dumps({"message": f"bad request from {auth}"}).encode()
        self.send_response(400)
        self.send_header("X-Echo", f"you sent {auth}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url_of(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_an_echoed_token_never_shows() -> None:
    server = serve(Echo)
    try:
        client = connect(url_of(server), token=TOKEN)
        trace = io.StringIO()
        with client.trace(trace), pytest.raises(errors.BadRequest) as info:
            client.search_studies(limit=1)
    finally:
        server.shutdown()
        server.server_close()
    error = info.value
    assert error.headers["X-Echo"] == "you sent Bearer ***"
    shown = [str(error), error.message, json.dumps(error.headers), trace.getvalue(),
             error.body.decode(), *(e.transcript() for e in client.history),
             *(json.dumps(e.response_headers) for e in client.history)]
    assert all(TOKEN not in text for text in shown)
    assert all(TOKEN.encode() not in e.body_preview for e in client.history)
    assert "you sent Bearer ***" in trace.getvalue()


def test_basic_credentials_echoed_base64_never_show() -> None:
    server = serve(Echo)
    try:
        client = connect(url_of(server), auth=("alice", "wonderland-99"))
        with pytest.raises(errors.BadRequest) as info:
            client.search_studies(limit=1)
    finally:
        server.shutdown()
        server.server_close()
    assert "Basic" in info.value.headers["X-Echo"]
    assert "YWxpY2U6d29uZGVybGFuZC05OQ" not in json.dumps(info.value.headers) + str(info.value)


class Target(http.server.BaseHTTPRequestHandler):
    """Records every request (method, path, Authorization, body) and answers 200 with []."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while (size := int(self.rfile.readline().strip() or b"0", 16)):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization"),
                                body))
        self.send_response(200)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    do_GET = do_POST = do_DELETE = _any

    def log_message(self, *args: object) -> None:
        pass


def redirector(location: str, status: int = 307) -> type[http.server.BaseHTTPRequestHandler]:
    class Redirect(Target):
        seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

        def _any(self) -> None:
            if self.path.startswith("/moved"):
                return super()._any()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            type(self).seen.append((self.command, self.path, None, b""))
            self.send_response(status)
            self.send_header("Location", location + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_DELETE = _any

    return Redirect


@pytest.fixture
def other_origin() -> Iterator[tuple[str, type[Target]]]:
    class Other(Target):
        seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    server = serve(Other)
    yield url_of(server), Other
    server.shutdown()
    server.server_close()


def test_stow_redirected_to_another_origin_is_refused(other_origin) -> None:
    other_url, other = other_origin
    handler = redirector(other_url)
    server = serve(handler)
    try:
        client = connect(url_of(server), token=TOKEN)
        data = make_instances(1)[0]
        for call in (lambda: client.request("POST", "studies", data=data,
                                            headers={"Content-Type": "application/dicom"}),
                     lambda: client.delete(STUDY)):
            with pytest.raises(errors.RedirectRefused) as info:
                call()
            assert info.value.url.startswith(url_of(server))
            assert info.value.location.startswith(other_url) and other_url in str(info.value)
        outcome = client.store(data, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert other.seen == []  # neither the DICOM body nor the token went there
    assert outcome["status"].tolist() == ["failed"]
    assert "another origin" in outcome["message"].iloc[0]


def test_stow_redirected_within_the_origin_is_followed() -> None:
    holder: dict[str, str] = {}

    class Same(Target):
        seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

        def _any(self) -> None:
            if self.path.startswith("/moved"):
                return super()._any()
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(308)
            self.send_header("Location", holder["url"] + "/moved" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = _any

    server = serve(Same)
    holder["url"] = url_of(server)
    try:
        client = connect(holder["url"], token=TOKEN)
        response = client.request("POST", "studies", data=b"payload",
                                  headers={"Content-Type": "application/dicom"})
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    assert Same.seen == [("POST", "/moved/studies", f"Bearer {TOKEN}", b"payload")]


def test_get_redirected_to_another_origin_drops_the_credentials(other_origin) -> None:
    other_url, other = other_origin
    server = serve(redirector(other_url, 302))
    try:
        client = connect(url_of(server), token=TOKEN)
        assert len(client.search_studies(limit=5)) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert [(m, p, a) for m, p, a, _ in other.seen] == [("GET", "/studies?limit=5", None)]


def test_new_errors_are_exported_and_typed() -> None:
    for name in ("ResponseTruncated", "MultipartTruncated", "InvalidResponse",
                 "DeadlineExceeded", "RedirectRefused", "InsufficientStorage"):
        assert name in dicomframes.__all__
        assert issubclass(getattr(dicomframes, name), dicomframes.DicomFramesError)
    made = [errors.ResponseTruncated("GET", "http://h/x", "cut", 10, 3),
            errors.MultipartTruncated("GET", "http://h/x", "cut"),
            errors.InvalidResponse("GET", "http://h/x", "not JSON", "text/html", b"<html>"),
            errors.DeadlineExceeded("GET", "http://h/x", deadline=2.5),
            errors.RedirectRefused("POST", "http://h/x", "http://other/x", 307)]
    for error in made:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert "http://h/x" in str(error)


def test_a_206_retrieve_gives_what_came_and_warns_naming_what_is_missing(tmp_path):
    from pathlib import Path

    with dicomframes.serve(tmp_path / "archive") as server:
        client = connect(server.url, progress=False)
        outcome = client.store(make_instances(3), progress=False)
        study = outcome["StudyInstanceUID"].iloc[0]
        victim = next(Path(server.path, "files").rglob("*.dcm"))
        victim.write_bytes(victim.read_bytes()[:-10])  # changed behind the server's back
        with pytest.warns(errors.PartialContent, match=victim.stem) as caught:
            got = client.retrieve(study)
        assert "206 Partial Content" in str(caught[0].message)
        assert server.url in str(caught[0].message)
        assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(
            s for s in outcome["SOPInstanceUID"] if s != victim.stem)
