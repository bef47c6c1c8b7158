"""Request and response helpers shared by the route handlers: error answers, the service base
URL, the resource a request names, and DICOM JSON, file and multipart bodies."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..standard.mediatypes import DICOM_JSON
from ..standard.multipart import encode
from ..standard.paths import ResourcePath

CHUNK = 1 << 20
SMALL_BODY = 4 << 20  # multipart answers up to this size are built at once, not streamed
SPOOL_MEMORY = 64 << 20  # contents made before answering stay in memory up to this total


class HTTPProblem(Exception):
    """An error answer: status and a message for the client (text/plain). ``close``: the
    answer says ``Connection: close`` and the connection is closed after it (e.g. when the
    request body was not read to its end). ``headers``: more headers of the answer (e.g.
    Retry-After)."""

    def __init__(self, status: int, message: str, *, close: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = dict(headers or {})


def encode_parts(parts: Any, boundary: str) -> Iterator[bytes]:
    """A multipart body. Every answer part carries its Content-Length, so a client can jump to
    the next boundary instead of searching the content for it."""
    return encode(parts, boundary, CHUNK, content_length=True)


def _host_port(value: str) -> tuple[str, int | None]:
    """("host", port) of a Host header value (port None when absent or not a number)."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?", value.strip())
    if not match:
        return "", None
    return match.group(1).lower(), int(match.group(2)) if match.group(2) else None


def service_base(request: Request) -> str:
    """The URL of the service root this request came through (with /v1 or /v2 if used).

    Built from the address the connection was accepted on; the request's Host header is used
    only when it names this server (its own address, the name it was started with, or
    ``localhost`` on a loopback address), so that a forged Host never leaks into RetrieveURLs.
    Some clients (dicomweb-client) send Host without the port: the port listened on is used.
    """
    root = request.scope.get("root_path", "")
    app_root = request.scope.get("app_root_path", "")
    prefix = root[len(app_root):] if root.startswith(app_root) else root
    scheme = request.url.scheme
    server = request.scope.get("server")
    if not server:
        return str(request.base_url).rstrip("/") + prefix
    address, port = str(server[0]), server[1]
    own = f"[{address}]" if ":" in address else address
    names = {own.lower(), *getattr(request.app.state, "host_names", ())}
    if address in ("127.0.0.1", "::1"):
        names.add("localhost")
    host, host_port = _host_port(request.headers.get("host", ""))
    if host in names and host_port in (None, port):
        own = host
    return f"{scheme}://{own}:{port}{app_root.rstrip('/')}{prefix}"


def request_path(request: Request) -> ResourcePath:
    """The study, series or instance a request names (400 for a malformed UID)."""
    params = request.path_params
    try:
        return ResourcePath(params.get("study"), params.get("series"), params.get("instance"))
    except ValueError as exc:
        raise HTTPProblem(400, str(exc)) from None


def not_found_message(path: ResourcePath) -> str:
    """What a 404 says about a study, series or instance that is not stored."""
    if path.instance is not None:
        return f"instance {path.instance} not found in series {path.series} of study " \
            f"{path.study}"
    if path.series is not None:
        return f"series {path.series} not found in study {path.study}"
    return f"study {path.study} not found"


def json_response(texts: list[str], status: int = 200) -> Response:
    """A DICOM JSON array made of the object texts ``texts``."""
    body = ("[" + ",".join(texts) + "]").encode("utf-8")
    return Response(body, status_code=status, media_type=DICOM_JSON)


def file_chunks(path: os.PathLike[str] | str, offset: int = 0,
                length: int | None = None) -> Iterator[bytes]:
    """A file's bytes (from ``offset``, ``length`` of them or to the end) in chunks."""
    with open(path, "rb") as fp:
        fp.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            chunk = fp.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


async def multipart_response(parts: Callable[[], Any], boundary: str, content_type: str,
                             size: int | None, exact: bool = False) -> Response:
    """A multipart answer: built in one go when small (fewer thread hand-offs), else streamed
    (with Content-Length when ``size`` is the ``exact`` encoded length)."""
    if size is not None and size <= SMALL_BODY:
        body = await run_in_threadpool(lambda: b"".join(encode_parts(parts(), boundary)))
        return Response(body, media_type=content_type)
    headers = {"Content-Length": str(size)} if exact and size is not None else None
    return StreamingResponse(encode_parts(parts(), boundary), media_type=content_type,
                             headers=headers)


class Spool:
    """Contents made before an answer starts (transcoded instances, decoded frames), so that
    nothing can fail once the status line is out: kept in memory up to ``SPOOL_MEMORY`` bytes
    in all, then appended to ONE unnamed temporary file (a part past the memory is a
    :class:`SpooledPart` of it: however many parts, one file descriptor). :meth:`close`
    releases the file."""

    def __init__(self, memory: int = SPOOL_MEMORY) -> None:
        self.memory = memory
        self.used = 0
        self.file: IO[bytes] | None = None
        self.on_close: Callable[[], None] | None = None  # e.g. give memory back to a budget

    def add(self, data: bytes) -> bytes | SpooledPart:
        """``data`` as a part content: the bytes, or a window of the temporary file."""
        if self.used + len(data) <= self.memory:
            self.used += len(data)
            return data
        if self.file is None:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.file.seek(0, os.SEEK_END)
        offset = self.file.tell()
        self.file.write(data)
        return SpooledPart(self.file, offset, len(data))

    def close(self) -> None:
        """Close (and so delete) the temporary file; call ``on_close`` once."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.on_close is not None:
            callback, self.on_close = self.on_close, None
            callback()

    def __del__(self) -> None:  # an answer cut short may never run its background task
        self.close()


class SpooledPart:
    """``length`` bytes at ``offset`` of a spool's file, read as a file object: each
    :meth:`read` seeks first, so the parts of one file are read one after the other."""

    def __init__(self, fp: IO[bytes], offset: int, length: int) -> None:
        self.fp = fp
        self.offset = offset
        self.length = length
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that are left when negative)."""
        left = self.length - self.position
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self.fp.seek(self.offset + self.position)
        data = self.fp.read(size)
        self.position += len(data)
        return data

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        """Move within the part (as a file)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.length}[whence]
        self.position = max(0, base + position)
        return self.position

    def tell(self) -> int:
        """The position within the part."""
        return self.position

    def seekable(self) -> bool:
        """True: its size is known (multipart encoders ask)."""
        return True
