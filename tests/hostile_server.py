"""A hostile HTTP server on 127.0.0.1 for the client's tests: each path sends one bad answer
(a gzip bomb, an endless chunked body, too many headers, redirects, HTML pages, echoed
credentials, huge or deeply nested JSON). Raw sockets, one request per connection, every loop
bounded; run as a script (``python hostile_server.py``) it prints its URL and serves until
its stdin closes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

GiB = 2**30
MiB = 2**20
JSON_TYPE = "application/dicom+json"
STUDY = "1.2.826.0.1.3680043.8.498.1"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False, default=b"")


def study_json(n: int) -> dict:
    return {"0020000D": {"vr": "UI", "Value": [f"{STUDY}.{n}"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"Doe^John{n}"}]},
            "00080020": {"vr": "DA", "Value": ["20200101"]}}


def head(status: str = "200 OK", ctype: str | None = JSON_TYPE, length: int | None = None,
         extra: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close", *extra]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def gzip_member(size: int) -> bytes:
    """One gzip member of ``size`` zero bytes (64 MiB of zeros gzip to about 64 KB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    out = [packer.compress(block) for _ in range(size // MiB)]
    return b"".join(out) + packer.flush()


class HostileServer:
    """The server; ``requests`` records what arrived, ``sent`` the body bytes written per
    path (so a test can see that the client stopped reading)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.sent: dict[str, int] = {}
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._bomb: bytes | None = None
        self.routes: dict[str, Callable[[socket.socket, Request], None]] = {
            "/bomb/studies": self.gzip_bomb,
            "/endless/studies": self.endless_chunks,
            "/endlesserror/studies": self.endless_error,
            "/headers/studies": self.many_headers,
            "/big/studies": self.big_json,
            "/deep/studies": self.deep_json,
            "/gzip/studies": self.gzip_json,
            "/deflate/studies": self.deflate_json,
            "/rawdeflate/studies": self.raw_deflate_json,
            "/corrupt/studies": self.corrupt_gzip,
            "/gzipbig/studies": self.gzip_big,
            "/members/studies": self.gzip_members,
            "/login": self.login_page,
            "/html": self.html_page,
            "/plain": self.plain_page,
            "/echo": self.echo_credentials,
            "/bigpart": self.big_part,
        }
        threading.Thread(target=self._accept, daemon=True).start()

    # ---- plumbing ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client that stops reading: expected
            conn.settimeout(30)
            request = self._read_request(conn)
            if request is None:
                return
            self.requests.append(request)
            self.route(request)(conn, request)
            conn.shutdown(socket.SHUT_WR)

    def _read_request(self, conn: socket.socket) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            for _ in range(1 << 16):  # until the closing zero-size chunk
                if body.endswith(b"0\r\n\r\n"):
                    break
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                body += chunk
        else:
            length = int(headers.get("content-length", "0") or 0)
            while len(body) < length:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                body += chunk
        return Request(method, target, headers, body)

    def route(self, request: Request) -> Callable[[socket.socket, Request], None]:
        path = request.path.split("?", 1)[0]
        for prefix in ("/redirect-login", "/loop302", "/loop307"):
            if path.startswith(prefix):
                return {"/redirect-login": self.redirect_login, "/loop302": self.loop_302,
                        "/loop307": self.loop_307}[prefix]
        for route, handler in self.routes.items():
            if path.startswith(route):
                return handler
        return self.not_found

    def send_counted(self, conn: socket.socket, path: str, data: bytes) -> None:
        conn.sendall(data)
        self.sent[path] = self.sent.get(path, 0) + len(data)

    def close(self) -> None:
        self.listener.close()

    # ---- the answers -------------------------------------------------------------------------

    def not_found(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(head("404 Not Found", "text/plain", 9) + b"not found")

    def gzip_bomb(self, conn: socket.socket, request: Request) -> None:
        """About 6 MB of gzip that inflate to 6 GiB of zeros (96 members of 64 MiB)."""
        if self._bomb is None:
            self._bomb = gzip_member(64 * MiB)
        members = 96
        conn.sendall(head(length=len(self._bomb) * members,
                          extra=("Content-Encoding: gzip",)))
        for _ in range(members):
            self.send_counted(conn, "/bomb", self._bomb)

    def endless_chunks(self, conn: socket.socket, request: Request) -> None:
        """A chunked JSON body that never ends (bounded here at 4 GiB)."""
        conn.sendall(head(extra=("Transfer-Encoding: chunked",)))
        piece = b"[" + b" " * (MiB - 1)
        for _ in range(4 * 1024):
            self.send_counted(conn, "/endless", b"%x\r\n%s\r\n" % (len(piece), piece))
            piece = b" " * MiB

    def endless_error(self, conn: socket.socket, request: Request) -> None:
        """A 500 whose text body never ends (bounded here at 1 GiB)."""
        conn.sendall(head("500 Internal Server Error", "text/plain",
                          extra=("Transfer-Encoding: chunked",)))
        piece = b"error " * (MiB // 6)
        for _ in range(1024):
            self.send_counted(conn, "/endlesserror", b"%x\r\n%s\r\n" % (len(piece), piece))

    def many_headers(self, conn: socket.socket, request: Request) -> None:
        extra = tuple(f"X-Filler-{n}: {n}" for n in range(150))
        conn.sendall(head(length=2, extra=extra) + b"[]")

    def big_json(self, conn: socket.socket, request: Request) -> None:
        """A valid QIDO answer of about 200 MB, with its Content-Length."""
        item = json.dumps(study_json(1)).encode()
        count = 200 * 10**6 // (len(item) + 1)
        length = 2 + count * len(item) + (count - 1)
        conn.sendall(head(length=length) + b"[")
        batch = b",".join([item] * 10_000)
        full, rest = divmod(count, 10_000)
        for index in range(full):
            self.send_counted(conn, "/big", (b"," if index else b"") + batch)
        if rest:
            self.send_counted(conn, "/big", (b"," if full else b"") + b",".join([item] * rest))
        self.send_counted(conn, "/big", b"]")

    def deep_json(self, conn: socket.socket, request: Request) -> None:
        depth = 1_000_000
        body = b"[" * depth + b"]" * depth
        conn.sendall(head(length=len(body)) + body)

    def _json_body(self) -> bytes:
        return json.dumps([study_json(n) for n in range(3)]).encode()

    def gzip_json(self, conn: socket.socket, request: Request) -> None:
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        body = packer.compress(self._json_body()) + packer.flush()
        conn.sendall(head(length=len(body), extra=("Content-Encoding: gzip",)) + body)

    def deflate_json(self, conn: socket.socket, request: Request) -> None:
        body = zlib.compress(self._json_body())
        conn.sendall(head(length=len(body), extra=("Content-Encoding: deflate",)) + body)

    def raw_deflate_json(self, conn: socket.socket, request: Request) -> None:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = packer.compress(self._json_body()) + packer.flush()
        conn.sendall(head(length=len(body), extra=("Content-Encoding: deflate",)) + body)

    def gzip_big(self, conn: socket.socket, request: Request) -> None:
        """60,000 distinct studies (about 11 MB of JSON, gzip ~20 times): past the floor of
        the ratio check, well within the ratio."""
        body = self.many_studies()
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        packed = packer.compress(body) + packer.flush()
        conn.sendall(head(extra=("Content-Encoding: gzip", "Transfer-Encoding: chunked")))
        for start in range(0, len(packed), 4093):  # odd chunk sizes, across gzip blocks
            piece = packed[start:start + 4093]
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.sendall(b"0\r\n\r\n")

    @staticmethod
    def many_studies(count: int = 60_000) -> bytes:
        return json.dumps([study_json(n) for n in range(count)]).encode()

    def gzip_members(self, conn: socket.socket, request: Request) -> None:
        """The three studies as two gzip members, then trailing zero bytes (ignored)."""
        body = self._json_body()
        half = len(body) // 2
        members = []
        for text in (body[:half], body[half:]):
            packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            members.append(packer.compress(text) + packer.flush())
        packed = b"".join(members) + bytes(16)
        conn.sendall(head(length=len(packed), extra=("Content-Encoding: gzip",)) + packed)

    def corrupt_gzip(self, conn: socket.socket, request: Request) -> None:
        body = b"\x1f\x8b\x08\x00" + b"\x00not gzip at all, really" * 10
        conn.sendall(head(length=len(body), extra=("Content-Encoding: gzip",)) + body)

    def redirect_login(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(head("302 Found", "text/html", 0, ("Location: /login?next=/dicom-web",)))

    def loop_302(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(head("302 Found", None, 0, (f"Location: {request.path}",)))

    def loop_307(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(head("307 Temporary Redirect", None, 0, (f"Location: {request.path}",)))

    def login_page(self, conn: socket.socket, request: Request) -> None:
        body = b"<!DOCTYPE html><html><body><form>Sign in</form></body></html>"
        conn.sendall(head("200 OK", "text/html; charset=utf-8", len(body)) + body)

    html_page = login_page

    def plain_page(self, conn: socket.socket, request: Request) -> None:
        conn.sendall(head("200 OK", "text/plain", 2) + b"OK")

    def echo_credentials(self, conn: socket.socket, request: Request) -> None:
        """A 400 whose body echoes the Authorization header and the token in base64."""
        sent = request.headers.get("authorization", "")
        _, _, credential = sent.partition(" ")
        words = f"bad request from {sent!r}; credential={credential}"
        if sent.lower().startswith("basic "):  # user:password, and the password alone
            decoded = base64.b64decode(credential).decode()
            words += f"; decoded={decoded}; password={decoded.partition(':')[2]}"
        else:  # the token in base64, padded and URL-safe without padding
            raw = credential.encode()
            words += (f"; b64={base64.b64encode(raw).decode()}; "
                      f"urlsafe={base64.urlsafe_b64encode(raw).decode().rstrip('=')}")
        body = words.encode()
        conn.sendall(head("400 Bad Request", "text/plain", len(body)) + body)

    def big_part(self, conn: socket.socket, request: Request) -> None:
        """A multipart answer: three parts of 1 MiB, then one of 32 MiB."""
        boundary = "hostile-boundary"
        ctype = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        parts = [bytes(MiB)] * 3 + [bytes(32 * MiB)]
        body = b"".join(f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
                        .encode() + part + b"\r\n" for part in parts)
        body += f"--{boundary}--\r\n".encode()
        conn.sendall(head("200 OK", ctype, len(body)))
        for start in range(0, len(body), MiB):
            self.send_counted(conn, "/bigpart", body[start:start + MiB])


if __name__ == "__main__":
    server = HostileServer()
    print(server.url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.close()
