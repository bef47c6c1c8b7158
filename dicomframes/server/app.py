"""The DICOMweb ASGI app (Starlette): STOW-RS, WADO-RS, QIDO-RS and DELETE (PS3.18).

Every route answers at the root and under ``/v1`` and ``/v2``. Status codes follow PS3.18 and
the Azure tutorial: STOW 200 (all stored) / 202 (some failed) / 409 (none stored) / 415 (not
``multipart/related; type="application/dicom"`` nor ``application/dicom``) / 406 (Accept is not
DICOM JSON) / 413 (body larger than the limit); retrieve 404 (unknown UIDs, frame past the last),
400 (malformed UID or frame list, frame 0), 406 (no acceptable media type or transfer syntax).

The handlers live in :mod:`.store_routes` (STOW-RS), :mod:`.wado` (WADO-RS) and
:mod:`.rendering` (rendered studies and series, thumbnails); this module
adds QIDO-RS, DELETE, the routes and the error answers; the change feed is
:mod:`.changefeed`'s. Content negotiation is
:mod:`.negotiation`'s.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..standard.mediatypes import DICOM_JSON
from ..standard.stow import OUT_OF_RESOURCES, Failed, stow_response
from .budget import CLIENT, Limits, MemoryBudget
from .changefeed import ChangeFeedRoutes
from .connections import ConnectionBoard
from .cors import with_cors
from .negotiation import require_json
from .query import QueryError, parse_query, search
from .rendering import RenderRoutes
from .storage import Archive
from .store_routes import StowRoutes
from .wado import WadoRoutes
from .web import HTTPProblem, json_response, not_found_message, request_path, service_base

log = logging.getLogger(__name__)


class DICOMwebApp:
    """Route handlers bound to one archive."""

    def __init__(self, archive: Archive, max_request_bytes: int,
                 budget: MemoryBudget) -> None:
        self.archive = archive
        self.stow = StowRoutes(archive, max_request_bytes)
        self.wado = WadoRoutes(archive, budget)
        self.render = RenderRoutes(archive, budget)
        self.changefeed = ChangeFeedRoutes(archive)

    # -- QIDO-RS ----------------------------------------------------------------------------

    def _qido(self, level: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            path = request_path(request)
            require_json(request)
            try:
                query = parse_query(level, request.query_params.multi_items(), path.study,
                                    path.series)
            except QueryError as exc:
                raise HTTPProblem(400, str(exc)) from None
            texts = await run_in_threadpool(search, self.archive, query, service_base(request))
            return json_response(texts)

        return handler

    # -- DELETE -----------------------------------------------------------------------------

    async def delete(self, request: Request) -> Response:
        """DELETE a study, series or instance: 204, or 404 when there is nothing to delete."""
        path = request_path(request)
        assert path.study is not None
        count = await run_in_threadpool(self.archive.delete, path.study, path.series,
                                        path.instance)
        if not count:
            raise HTTPProblem(404, not_found_message(path))
        return Response(status_code=204)

    async def root(self, request: Request) -> Response:
        """GET /: a short description of the service."""
        base = service_base(request)
        return PlainTextResponse(
            f"dicomframes DICOMweb server (PS3.18 STOW-RS, WADO-RS, QIDO-RS, DELETE)\n"
            f"studies: {base}/studies\n")

    # -- routing ----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The routes, relative to a service root."""
        s = "/studies/{study}"
        se = s + "/series/{series}"
        i = se + "/instances/{instance}"
        stow, wado, render = self.stow.stow, self.wado, self.render
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/studies", stow, methods=["POST"]),
            Route("/studies", self._qido("study"), methods=["GET"]),
            Route("/series", self._qido("series"), methods=["GET"]),
            Route("/instances", self._qido("instance"), methods=["GET"]),
            Route(s, stow, methods=["POST"]),
            Route(s, wado.retrieve, methods=["GET"]),
            Route(s, self.delete, methods=["DELETE"]),
            Route(s + "/metadata", wado.metadata, methods=["GET"]),
            Route(s + "/rendered", render.rendered, methods=["GET"]),
            Route(s + "/thumbnail", render.thumbnail, methods=["GET"]),
            Route(s + "/series", self._qido("series"), methods=["GET"]),
            Route(s + "/instances", self._qido("instance"), methods=["GET"]),
            Route(se, wado.retrieve, methods=["GET"]),
            Route(se, self.delete, methods=["DELETE"]),
            Route(se + "/metadata", wado.metadata, methods=["GET"]),
            Route(se + "/rendered", render.rendered, methods=["GET"]),
            Route(se + "/thumbnail", render.thumbnail, methods=["GET"]),
            Route(se + "/instances", self._qido("instance"), methods=["GET"]),
            Route(i, wado.retrieve, methods=["GET"]),
            Route(i, self.delete, methods=["DELETE"]),
            Route(i + "/metadata", wado.metadata, methods=["GET"]),
            Route(i + "/rendered", wado.rendered, methods=["GET"]),
            Route(i + "/thumbnail", render.thumbnail, methods=["GET"]),
            Route(i + "/frames/{frames}", wado.frames, methods=["GET"]),
            Route(i + "/frames/{frames}/rendered", wado.rendered, methods=["GET"]),
            Route(i + "/frames/{frames}/thumbnail", render.thumbnail, methods=["GET"]),
            Route(i + "/bulkdata/{path:path}", wado.bulkdata, methods=["GET"]),
            *self.changefeed.routes(),
        ]


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    headers = {**exc.headers, **({"Connection": "close"} if exc.close else {})}
    return PlainTextResponse(exc.message + "\n", status_code=exc.status, headers=headers)


def storage_problem(exc: BaseException) -> str | None:
    """What an error of the archive's disk means for a client ("the disk ... is full", "...
    is read-only"), or None when it is not one of those."""
    code = getattr(exc, "sqlite_errorcode", None)
    number = getattr(exc, "errno", None)
    if number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or code == sqlite3.SQLITE_FULL:
        return "the archive's disk is full: nothing was stored; free space on the server " \
            "before sending again"
    if number in (errno.EROFS, errno.EACCES, errno.EPERM) or code in (
            sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        return "the archive is read-only (its folder cannot be written): nothing was " \
            "stored or deleted; the server's operator must make it writable"
    return None


async def _on_storage_error(request: Request, exc: Exception) -> Response:
    """507 for a full or read-only disk (a STOW answer names the reason in its
    FailedSOPSequence: out of resources, 0xA700); any other error is a 500."""
    problem = storage_problem(exc)
    if problem is None:
        return await _on_crash(request, exc)
    log.error("%s %s: %s (%s)", request.method, request.url.path, problem, exc)
    headers = {"Connection": "close", "Warning": f'299 dicomframes "{problem}"'}
    if request.method == "POST":  # STOW-RS: a DICOM answer the client can read
        answer = stow_response([], [Failed(None, None, OUT_OF_RESOURCES)])
        body = json.dumps(answer, separators=(",", ":")).encode("utf-8")
        return Response(body, status_code=507, media_type=DICOM_JSON, headers=headers)
    return PlainTextResponse(problem + "\n", status_code=507, headers=headers)


async def _on_crash(request: Request, exc: Exception) -> Response:
    """500, saying ``Connection: close`` (the connection is closed after it)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse(f"internal server error ({type(exc).__name__}); the server's log "
                             "has the details\n", status_code=500,
                             headers={"Connection": "close"})


class Guard:
    """ASGI wrapper of the app: the bearer token every request needs (when one is set), the
    pace of request bodies (408 and ``Connection: close`` when a body pauses longer than
    ``body_timeout`` seconds, or, after ``body_grace`` seconds, has come slower than
    ``min_body_rate`` bytes per second on average: a body trickled a byte at a time cannot
    hold a connection), and the end of each answer, told to the connection ``board``."""

    def __init__(self, app: ASGIApp, token: str | None, body_timeout: float | None,
                 min_body_rate: float = 0.0, body_grace: float = 0.0,
                 board: ConnectionBoard | None = None) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.body_grace = body_grace
        self.board = board
        # only a digest is kept: no repr or traceback shows the token
        self._digest = hashlib.sha256(token.encode("utf-8")).digest() if token else None

    @property
    def requires_token(self) -> bool:
        """True when requests must carry ``Authorization: Bearer <token>``."""
        return self._digest is not None

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """True when the request's headers carry the token (or none is needed)."""
        if self._digest is None:
            return True
        given = b""
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, credentials = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        CLIENT.set(str(client[0]) if client else "")  # whose turn the budget counts
        if self.board is not None:
            send = self._telling_board(send, client)
        if not self.authorized(scope.get("headers", [])):
            response = PlainTextResponse(
                "this server needs Authorization: Bearer <token> (connect(url, token=...))\n",
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="dicomframes"',
                                          "Connection": "close"})
            await response(scope, receive, send)
            return
        await self.app(scope, self._timed(receive) if self.body_timeout else receive, send)

    def _telling_board(self, send: Send, client: Any) -> Send:
        board = self.board
        assert board is not None

        async def telling(message: Message) -> None:
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                board.answered(client)

        return telling

    def _timed(self, receive: Receive) -> Receive:
        timeout = float(self.body_timeout or 0)
        rate, grace = self.min_body_rate, self.body_grace
        done = False
        loop = asyncio.get_running_loop()
        start = loop.time()
        received = 0

        async def timed() -> Message:
            nonlocal done, received
            if done:
                return await receive()
            wait = timeout
            if rate > 0:  # the moment the average rate would fall below the minimum
                wait = min(wait, start + grace + received / rate - loop.time())
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):
                    message = await receive()
            except TimeoutError:
                if wait < timeout:
                    raise HTTPProblem(408, f"the request body came slower than {rate:g} bytes "
                                      f"per second ({received} bytes in "
                                      f"{loop.time() - start:.0f} s)", close=True) from None
                raise HTTPProblem(408, f"the request body stopped arriving: nothing for "
                                  f"{timeout:g} s (is it shorter than its Content-Length?)",
                                  close=True) from None
            received += len(message.get("body", b""))
            if message.get("type") != "http.request" or not message.get("more_body"):
                done = True
            return message

        return timed


def create_app(archive: Archive, *, max_request_bytes: int = 2 << 30,
               token: str | None = None, body_timeout: float | None = 30.0,
               host_names: tuple[str, ...] = (),
               cors_origins: tuple[str, ...] | list[str] | None = None,
               limits: Limits | None = None, board: ConnectionBoard | None = None) -> ASGIApp:
    """The ASGI app serving ``archive`` at ``/``, ``/v1`` and ``/v2``.

    ``token``: every request must carry ``Authorization: Bearer <token>`` (else 401).
    ``body_timeout``: seconds a request body may pause before the answer is 408.
    ``host_names``: names of this server that a request's Host header may use in the URLs
    of answers (its own address and ``localhost`` always may).
    ``cors_origins``: browser origins (``scheme://host[:port]``) allowed to call the server
    (CORS, off when empty; preflights answered, ``Authorization`` allowed when ``token`` is
    set; ValueError for a malformed origin). The CORS layer wraps the token check, so that a
    401 is readable by the page. ``limits``: the body pace and the memory budget
    (:class:`.budget.Limits`; ``body_timeout`` wins over its own); ``board``: the
    connections to tell when an answer is done (:mod:`.connections`).
    """
    limits = limits or Limits()
    budget = MemoryBudget(limits.memory_budget, limits.memory_wait, limits.work_per_client)
    handlers = DICOMwebApp(archive, max_request_bytes, budget)
    routes = handlers.routes()
    app = Starlette(routes=[Mount("/v1", routes=routes), Mount("/v2", routes=routes), *routes],
                    exception_handlers={HTTPProblem: _on_problem, OSError: _on_storage_error,
                                        sqlite3.Error: _on_storage_error,
                                        Exception: _on_crash})
    app.state.archive = archive
    app.state.host_names = tuple(name.lower() for name in host_names)
    app.state.budget = budget
    guard = Guard(app, token, body_timeout, limits.min_body_rate, limits.body_grace, board)
    return with_cors(guard, cors_origins,
                     authorization=token is not None)
