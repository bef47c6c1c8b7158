"""Request and response helpers shared by the route handlers: error answers, the service base
URL, the resource a request names, and DICOM JSON, file and multipart bodies."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..standard.mediatypes import DICOM_JSON
from ..standard.multipart import encode
from ..standard.paths import ResourcePath

CHUNK = 1 << 20
SMALL_BODY = 4 << 20  # multipart answers up to this size are built at once, not streamed


class HTTPProblem(Exception):
    """An error answer: status and a message for the client (text/plain)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def encode_parts(parts: Any, boundary: str) -> Iterator[bytes]:
    """A multipart body. Every answer part carries its Content-Length, so a client can jump to
    the next boundary instead of searching the content for it."""
    return encode(parts, boundary, CHUNK, content_length=True)


def service_base(request: Request) -> str:
    """The URL of the service root this request came through (with /v1 or /v2 if used)."""
    root = request.scope.get("root_path", "")
    app_root = request.scope.get("app_root_path", "")
    prefix = root[len(app_root):] if root.startswith(app_root) else root
    base = str(request.base_url).rstrip("/")
    server = request.scope.get("server")
    host = request.headers.get("host", "")
    # some clients (dicomweb-client) send Host without the port: use the port we listen on
    if server and server[1] not in (None, 80, 443) and host and not re.search(r":\d+$", host):
        base = f"{request.url.scheme}://{host}:{server[1]}{app_root.rstrip('/')}"
    return base + prefix


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
