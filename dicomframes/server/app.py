"""The DICOMweb ASGI app (Starlette): STOW-RS, WADO-RS, QIDO-RS and DELETE (PS3.18).

Every route answers at the root and under ``/v1`` and ``/v2``. Status codes follow PS3.18 and
the Azure tutorial: STOW 200 (all stored) / 202 (some failed) / 409 (none stored) / 415 (not
``multipart/related; type="application/dicom"`` nor ``application/dicom``) / 406 (Accept is not
DICOM JSON) / 413 (body larger than the limit); retrieve 404 (unknown UIDs, frame past the last),
400 (malformed UID or frame list, frame 0), 406 (no acceptable media type or transfer syntax).

The handlers live in :mod:`.store_routes` (STOW-RS) and :mod:`.wado` (WADO-RS); this module
adds QIDO-RS, DELETE, the routes and the error answers. Content negotiation is
:mod:`.negotiation`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from .negotiation import require_json
from .query import QueryError, parse_query, search
from .storage import Archive
from .store_routes import StowRoutes
from .wado import WadoRoutes
from .web import HTTPProblem, json_response, not_found_message, request_path, service_base


class DICOMwebApp:
    """Route handlers bound to one archive."""

    def __init__(self, archive: Archive, max_request_bytes: int) -> None:
        self.archive = archive
        self.stow = StowRoutes(archive, max_request_bytes)
        self.wado = WadoRoutes(archive)

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
        stow, wado = self.stow.stow, self.wado
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
            Route(s + "/series", self._qido("series"), methods=["GET"]),
            Route(s + "/instances", self._qido("instance"), methods=["GET"]),
            Route(se, wado.retrieve, methods=["GET"]),
            Route(se, self.delete, methods=["DELETE"]),
            Route(se + "/metadata", wado.metadata, methods=["GET"]),
            Route(se + "/instances", self._qido("instance"), methods=["GET"]),
            Route(i, wado.retrieve, methods=["GET"]),
            Route(i, self.delete, methods=["DELETE"]),
            Route(i + "/metadata", wado.metadata, methods=["GET"]),
            Route(i + "/rendered", wado.rendered, methods=["GET"]),
            Route(i + "/frames/{frames}", wado.frames, methods=["GET"]),
            Route(i + "/frames/{frames}/rendered", wado.rendered, methods=["GET"]),
            Route(i + "/bulkdata/{path:path}", wado.bulkdata, methods=["GET"]),
        ]


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return PlainTextResponse(exc.message + "\n", status_code=exc.status)


def create_app(archive: Archive, *, max_request_bytes: int = 2 << 30) -> Starlette:
    """The Starlette app serving ``archive`` at ``/``, ``/v1`` and ``/v2``."""
    handlers = DICOMwebApp(archive, max_request_bytes)
    routes = handlers.routes()
    app = Starlette(routes=[Mount("/v1", routes=routes), Mount("/v2", routes=routes), *routes],
                    exception_handlers={HTTPProblem: _on_problem})
    app.state.archive = archive
    return app
