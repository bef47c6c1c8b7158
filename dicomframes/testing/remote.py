"""A remote-like DICOMweb archive on one machine: a loopback proxy that makes a local server
behave like a cloud service, for tests, benchmarks and teaching.

:class:`RemoteLike` listens on 127.0.0.1 and forwards every request to a DICOMweb server on
this machine (the embedded server, Orthanc...), adding what a real link and a real service add:

- a round trip (``round_trip`` seconds, default 0.05) before each answer;
- a bandwidth cap (``bandwidth`` bytes per second, default 50 MB/s) shared by every
  connection, in each direction;
- a QIDO page cap of ``page_cap`` rows (default 200, as the Azure DICOM service): a search
  asking for more is refused with 400 (``page_cap_mode="refuse"``, what Azure's conformance
  statement says it does) or answered with ``page_cap`` rows (``"cap"``, what other servers
  do); a search without ``limit`` gets ``default_limit`` rows (100, as Azure);
- throttling: a share ``throttle`` of the requests (default 0) is answered
  ``429 Too Many Requests`` with a ``Retry-After`` of ``retry_after`` seconds, sent as
  delta-seconds or as an HTTP date (``retry_after_form``);
- bearer tokens that expire: with ``token_file``, the proxy writes a fresh token to that file
  every ``rotate_every`` seconds and accepts a token for ``token_lifetime`` seconds after it
  was written; an older or unknown token is answered 401.

``dicomframes remote --data FOLDER`` runs one from the command line (see the README). Only
loopback: the proxy binds 127.0.0.1 and forwards only to a loopback server.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["LOOPBACK_HOSTS", "Link", "RemoteLike", "Seen", "TokenIssuer", "start"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_QIDO_LEVELS = ("studies", "series", "instances")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                         "upgrade", "proxy-authorization", "proxy-authenticate"})
_CHUNK = 64 << 10


class Link:
    """The simulated network: one round trip per request and a token bucket of ``bandwidth``
    bytes per second per direction, shared by every connection (None: no cap)."""

    def __init__(self, round_trip: float = 0.05, bandwidth: float | None = 50e6) -> None:
        if round_trip < 0:
            raise ValueError(f"round_trip must be >= 0 seconds, got {round_trip}")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes per second, got {bandwidth}")
        self.round_trip = float(round_trip)
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self._lock = threading.Lock()
        self._free_at = {"up": 0.0, "down": 0.0}

    def carry(self, nbytes: int, direction: str) -> None:
        """Wait until ``nbytes`` have crossed the link in ``direction`` ("up" or "down")."""
        if self.bandwidth is None or nbytes <= 0:
            return
        with self._lock:  # the link is a queue: each transfer starts when the previous ends
            now = time.monotonic()
            start = max(now, self._free_at[direction])
            self._free_at[direction] = start + nbytes / self.bandwidth
            done = self._free_at[direction]
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class TokenIssuer:
    """Writes a new random token to ``path`` every ``rotate_every`` seconds (atomically) and
    accepts each for ``lifetime`` seconds after it was issued.

    The file holds the token alone on one line, readable by its owner only.
    """

    def __init__(self, path: str | os.PathLike[str], lifetime: float = 3600.0,
                 rotate_every: float | None = None) -> None:
        if lifetime <= 0:
            raise ValueError(f"token_lifetime must be > 0 seconds, got {lifetime}")
        self.path = Path(path)
        self.lifetime = float(lifetime)
        self.rotate_every = float(rotate_every if rotate_every is not None else lifetime / 2)
        if not 0 < self.rotate_every <= self.lifetime:
            raise ValueError("rotate_every must be > 0 and at most the token lifetime")
        self._valid: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.issued = 0
        self.rotate()
        self._thread = threading.Thread(target=self._run, name="dicomframes-token-issuer",
                                        daemon=True)
        self._thread.start()

    def rotate(self) -> str:
        """Issue a new token now, write it to the file and return it."""
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._valid = {t: end for t, end in self._valid.items() if end > now}
            self._valid[token] = now + self.lifetime
            self.issued += 1
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        os.replace(temp, self.path)
        return token

    def accepts(self, token: str) -> bool:
        """True while ``token`` was issued here and has not outlived its lifetime."""
        with self._lock:
            end = self._valid.get(token)
        return end is not None and end > time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.rotate_every):
            self.rotate()

    def close(self) -> None:
        """Stop rotating (the file stays)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return (f"TokenIssuer({str(self.path)!r}, lifetime={self.lifetime:g} s, "
                f"rotate_every={self.rotate_every:g} s)")


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it: arrival time (``time.monotonic()``, taken when its
    head was read), method, path with query, the status answered, the Retry-After sent
    (seconds asked, or None) and the time it named (for an HTTP date: the date)."""

    at: float
    method: str
    path: str
    status: int
    retry_after: float | None = None
    retry_until: float | None = None  # time.monotonic() before which nothing may be sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log
        return

    def _body(self) -> bytes:
        link = self.server.remote.link
        length = self.headers.get("Content-Length")
        chunks: list[bytes] = []
        if length is not None:
            left = int(length)
            while left > 0:
                piece = self.rfile.read(min(_CHUNK, left))
                if not piece:
                    break
                link.carry(len(piece), "up")
                chunks.append(piece)
                left -= len(piece)
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                piece = self.rfile.read(size)
                self.rfile.readline()
                link.carry(len(piece), "up")
                chunks.append(piece)
        return b"".join(chunks)

    def _handle(self) -> None:
        remote = self.server.remote
        self.arrived = time.monotonic()
        body = self._body()
        if remote.link.round_trip:
            time.sleep(remote.link.round_trip)
        refusal = remote.refusal(self.headers.get("Authorization", ""))
        if refusal is not None:
            status, headers, text = refusal
            self._answer_simple(status, headers, text)
            return
        target = remote.rewrite_target(self.command, self.path)
        if target is None:
            self._answer_simple(400, {}, json.dumps(
                {"error": f"limit must be between 1 and {remote.page_cap}"}))
            return
        self._forward(target, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _answer_simple(self, status: int, headers: dict[str, str], text: str) -> None:
        data = text.encode()
        headers = dict(headers)
        wait = headers.pop("_wait", None)
        # noted before it is sent: the client's clock for the wait starts after this one
        self.server.remote.record(self.arrived, self.command, self.path, status, wait,
                                  headers.get("Retry-After"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, target: str, body: bytes) -> None:
        remote = self.server.remote
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in _HOP_BY_HOP
                   and name.lower() not in ("authorization", "host", "content-length")}
        if body or self.command in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        answer = None
        for _ in range(2):  # a kept-alive connection the upstream closed meanwhile: once more
            upstream, reused = remote.upstream_connection()
            try:
                upstream.request(self.command, remote.upstream_path + target,
                                 body=body or None, headers=headers)
                answer = upstream.getresponse()
                break
            except (OSError, http.client.HTTPException):
                upstream.close()
                remote.drop_upstream()
                if not reused:
                    break
        if answer is None:
            self.close_connection = True
            self._answer_simple(502, {}, '{"error": "the upstream server did not answer"}')
            return
        self.send_response(answer.status, answer.reason)
        kept = [(n, v) for n, v in answer.getheaders() if n.lower() not in _HOP_BY_HOP
                and n.lower() != "content-length"]
        kind = (answer.getheader("Content-Type") or "").lower()
        if "json" in kind:  # URLs in the answer point at the upstream: point them here
            data = remote.local_urls(answer.read())
            for name, value in kept:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                remote.link.carry(len(data), "down")
                self.wfile.write(data)
        else:
            length = answer.getheader("Content-Length")
            for name, value in kept:
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while self.command != "HEAD":
                piece = answer.read(_CHUNK)
                if not piece:
                    break
                remote.link.carry(len(piece), "down")
                self.wfile.write(piece if length is not None
                                 else b"%x\r\n%s\r\n" % (len(piece), piece))
            if length is None and self.command != "HEAD":
                self.wfile.write(b"0\r\n\r\n")
        answer.close()
        remote.record(self.arrived, self.command, self.path, answer.status)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    remote: RemoteLike


class RemoteLike:
    """A loopback proxy in front of the DICOMweb server at ``upstream`` that behaves like a
    remote cloud archive (see the module docstring). Use as a context manager or call
    :meth:`stop`.

    ``url`` is the base URL to connect to; ``seen`` the requests it answered (a bounded
    :class:`Seen` log), ``throttled`` and ``refused`` count its 429 and 401 answers.
    :meth:`throttle_next` makes the next requests 429 whatever the ``throttle`` share.
    """

    def __init__(self, upstream: str, *, port: int = 0, round_trip: float = 0.05,
                 bandwidth: float | None = 50e6, page_cap: int | None = 200,
                 page_cap_mode: str = "refuse", default_limit: int | None = 100,
                 throttle: float = 0.0,
                 retry_after: float = 1.0, retry_after_form: str = "seconds",
                 token_file: str | os.PathLike[str] | None = None,
                 token_lifetime: float = 3600.0, rotate_every: float | None = None,
                 seed: int | None = None, log_size: int = 100_000) -> None:
        parts = urlsplit(upstream.rstrip("/"))
        if (parts.hostname or "").lower() not in LOOPBACK_HOSTS or parts.scheme != "http":
            raise ValueError(f"the remote-like proxy forwards only to an http:// server on "
                             f"loopback (127.0.0.1, ::1, localhost), not {upstream!r}")
        if not 0.0 <= throttle <= 1.0:
            raise ValueError(f"throttle is a share of requests from 0 to 1, got {throttle}")
        if retry_after_form not in ("seconds", "date"):
            raise ValueError("retry_after_form must be 'seconds' or 'date'")
        if page_cap is not None and page_cap < 1:
            raise ValueError(f"page_cap must be at least 1, got {page_cap}")
        if page_cap_mode not in ("refuse", "cap"):
            raise ValueError("page_cap_mode must be 'refuse' or 'cap'")
        self.page_cap_mode = page_cap_mode
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_path = parts.path.rstrip("/")
        self.link = Link(round_trip, bandwidth)
        self.page_cap = page_cap
        self.default_limit = default_limit
        self.throttle = float(throttle)
        self.retry_after = float(retry_after)
        self.retry_after_form = retry_after_form
        self.seen: deque[Seen] = deque(maxlen=log_size)
        self.throttled = 0
        self.refused = 0
        self._forced: deque[tuple[float, str]] = deque()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.issuer = (None if token_file is None
                       else TokenIssuer(token_file, token_lifetime, rotate_every))
        self.owned: Any = None  # a server started with the proxy (see start), stopped with it
        self._server = _ProxyServer(("127.0.0.1", port), _Handler)
        self._server.remote = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"dicomframes-remote-{self.port}", daemon=True)
        self._thread.start()

    # ---- what the service does -----------------------------------------------------------

    def throttle_next(self, count: int = 1, retry_after: float | None = None,
                      form: str | None = None) -> None:
        """Answer the next ``count`` requests 429 with this Retry-After (default: the
        proxy's) in this form ("seconds" or "date")."""
        with self._lock:
            for _ in range(count):
                self._forced.append((self.retry_after if retry_after is None else retry_after,
                                     form or self.retry_after_form))

    def refusal(self, authorization: str) -> tuple[int, dict[str, str], str] | None:
        """The 401 or 429 this request gets, or None to forward it."""
        if self.issuer is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not self.issuer.accepts(token.strip()):
                with self._lock:
                    self.refused += 1
                return (401, {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                        '{"error": "invalid_token", "error_description": '
                        '"the access token is missing, unknown or expired"}')
        with self._lock:
            if self._forced:
                wait, form = self._forced.popleft()
            elif self.throttle and self._random.random() < self.throttle:
                wait, form = self.retry_after, self.retry_after_form
            else:
                return None
            self.throttled += 1
        if form == "date":
            # An HTTP date has whole seconds: round up so the wait is at least ``wait``.
            value = email.utils.formatdate(int(time.time() + wait) + 1, usegmt=True)
        else:
            value = str(max(0, round(wait)) if float(wait).is_integer() else wait)
        return 429, {"Retry-After": value, "_wait": str(wait)}, (
            '{"error": "TooManyRequests", "message": "request rate too large"}')

    def rewrite_target(self, method: str, target: str) -> str | None:
        """A QIDO search's target with ``limit`` capped at ``page_cap`` (and set to
        ``default_limit`` when absent), None when it is to be refused; other targets as they
        are."""
        path, _, query = target.partition("?")
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if method != "GET" or last not in _QIDO_LEVELS or self.page_cap is None:
            return target
        pairs = parse_qsl(query, keep_blank_values=True)
        asked = [v for k, v in pairs if k == "limit"]
        pairs = [(k, v) for k, v in pairs if k != "limit"]
        try:
            limit = int(asked[-1]) if asked else self.default_limit
        except ValueError:
            return target  # the server answers a bad limit itself
        if limit is not None:
            if limit > self.page_cap and self.page_cap_mode == "refuse":
                return None
            pairs.append(("limit", str(min(limit, self.page_cap))))
        return path + ("?" + urlencode(pairs, safe="*^,") if pairs else "")

    def local_urls(self, data: bytes) -> bytes:
        """``data`` with the upstream's base URL replaced by this proxy's."""
        return data.replace(self.upstream.encode(), self.url.encode())

    def record(self, at: float, method: str, path: str, status: int, wait: str | None = None,
               header: str | None = None) -> None:
        """Note one answered request in :attr:`seen`."""
        until = None
        if header is not None and wait is not None:
            when = email.utils.parsedate_to_datetime(header) if not header[0].isdigit() else None
            until = (time.monotonic() + float(wait) if when is None
                     else time.monotonic() + (when.timestamp() - time.time()))
        self.seen.append(Seen(at, method, path, status, None if wait is None else float(wait),
                              until))

    # ---- plumbing --------------------------------------------------------------------------

    def upstream_connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's keep-alive connection to the upstream server, and whether it served
        an earlier request (the upstream may have closed it since)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                              timeout=300)
            self._local.conn = conn
            return conn, False
        return conn, True

    def drop_upstream(self) -> None:
        """Forget this thread's upstream connection (it broke)."""
        self._local.conn = None

    @property
    def token_file(self) -> Path | None:
        """The file that holds the current token (None without tokens)."""
        return None if self.issuer is None else self.issuer.path

    def stop(self) -> None:
        """Stop the proxy and the token rotation (the upstream server keeps running)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        if self.issuer is not None:
            self.issuer.close()
        if self.owned is not None:
            self.owned.stop()

    def __enter__(self) -> RemoteLike:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        bandwidth = ("no cap" if self.link.bandwidth is None
                     else f"{self.link.bandwidth / 1e6:g} MB/s")
        tokens = "" if self.issuer is None else f", tokens rotated every " \
            f"{self.issuer.rotate_every:g} s"
        return (f"<RemoteLike {self.url} -> {self.upstream} ({self.link.round_trip * 1e3:g} ms, "
                f"{bandwidth}, page cap {self.page_cap} ({self.page_cap_mode}), "
                f"{self.throttle:.0%} throttled{tokens})>")


def start(path: str | os.PathLike[str] | None = None, **options: Any) -> RemoteLike:
    """Start the embedded server on the archive folder ``path`` (None: a temporary one) and a
    :class:`RemoteLike` proxy in front of it (``options`` as for :class:`RemoteLike`);
    stopping the proxy stops the server too."""
    from ..server import serve

    server = serve(path)
    try:
        remote = RemoteLike(server.url, **options)
    except BaseException:
        server.stop()
        raise
    remote.owned = server
    return remote


# ---- the command line: dicomframes remote ------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """The options of ``dicomframes remote`` (an argparse parser)."""
    parser.add_argument("--data", help="archive folder of the embedded server behind the proxy "
                        "(default: a temporary one, deleted at exit)")
    parser.add_argument("--upstream", metavar="URL", help="forward to this loopback DICOMweb "
                        "server instead (e.g. Orthanc's http://127.0.0.1:8042/dicom-web)")
    parser.add_argument("--port", type=int, default=8043, help="port (default 8043; 0: any)")
    parser.add_argument("--round-trip", type=float, default=50.0, metavar="MS",
                        help="milliseconds added to every request (default 50)")
    parser.add_argument("--bandwidth", type=float, default=50.0, metavar="MB/S",
                        help="link speed in MB/s each way (default 50; 0: no cap)")
    parser.add_argument("--page-cap", type=int, default=200,
                        help="most QIDO rows per answer (default 200, as Azure)")
    parser.add_argument("--page-cap-mode", choices=("refuse", "cap"), default="refuse",
                        help="a larger limit is refused with 400 (default, as Azure) or "
                        "answered with --page-cap rows")
    parser.add_argument("--throttle", type=float, default=0.0, metavar="SHARE",
                        help="share of requests answered 429 (e.g. 0.05; default 0)")
    parser.add_argument("--retry-after", type=float, default=1.0, metavar="S",
                        help="seconds asked in Retry-After (default 1)")
    parser.add_argument("--retry-after-date", action="store_true",
                        help="send Retry-After as an HTTP date instead of seconds")
    parser.add_argument("--token-file", metavar="PATH",
                        help="require bearer tokens: write the current one to PATH")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, metavar="S",
                        help="seconds a token is accepted (default 3600)")
    parser.add_argument("--rotate-every", type=float, metavar="S",
                        help="seconds between new tokens (default: half the lifetime)")


def run_from_arguments(args: Any) -> int:
    """Run ``dicomframes remote`` until interrupted."""
    options: dict[str, Any] = {
        "port": args.port, "round_trip": args.round_trip / 1000.0,
        "bandwidth": args.bandwidth * 1e6 if args.bandwidth > 0 else None,
        "page_cap": args.page_cap, "page_cap_mode": args.page_cap_mode,
        "throttle": args.throttle, "retry_after": args.retry_after,
        "retry_after_form": "date" if args.retry_after_date else "seconds",
        "token_file": args.token_file, "token_lifetime": args.token_lifetime,
        "rotate_every": args.rotate_every}
    remote = (RemoteLike(args.upstream, **options) if args.upstream
              else start(args.data, **options))
    print(f"remote-like DICOMweb archive at {remote.url}: {remote!r}", flush=True)
    if remote.token_file is not None:
        print(f"current token in {remote.token_file}; connect with "
              f"dicomframes.connect({remote.url!r}, "
              f"token=dicomframes.client.TokenFile({str(remote.token_file)!r}))", flush=True)
    print("Ctrl+C stops it", flush=True)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # a terminated command cleans up too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        remote.stop()
    return 0
