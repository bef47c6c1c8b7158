"""CORS for the embedded server: browser apps served from other origins (the OHIF viewer, a
teacher's own page) may call it, but only from the origins the operator names. Off by default.

:func:`with_cors` wraps the whole ASGI app, outside the token check: a browser sends a
preflight (``OPTIONS`` with ``Access-Control-Request-Method``) without credentials, so it is
answered here, and a 401 for a missing token still carries the CORS headers that let the page
read it. For an allowed origin every answer gets ``Access-Control-Allow-Origin`` echoing that
origin (never ``*``), ``Vary: Origin`` and the headers a DICOMweb client reads
(``Access-Control-Expose-Headers``); a preflight is answered 204 with the methods GET, POST,
DELETE and OPTIONS and the request headers a DICOMweb client sends, ``Authorization`` among them
only when the server requires a token. A preflight from another origin, or asking for another
method or header, is answered 403 naming what was refused. A request with no ``Origin`` (curl,
Python clients) is served as before.

Why not Starlette's ``CORSMiddleware`` (checked against Starlette 1.x): it answers a refused
preflight 400 "Disallowed CORS origin" without naming the origin, method or header refused
(and cannot say "this server requires no token: send no Authorization header"), answers an
accepted one 200 instead of 204, and compares origins as typed, so ``--cors
http://LocalHost:3000/`` would never match what a browser sends. The person setting up a
viewer sees only the preflight's answer in the browser's network tab; the reason there is
what this module is for. tests/ohif/test_cors.py holds each of these behaviours.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = []

_ALLOWED_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
# Request headers a DICOMweb client sends that are not CORS-safelisted for every value (an
# Accept of multipart/related; type=... is not), besides Authorization.
REQUEST_HEADERS = ("accept", "accept-language", "content-language", "content-type",
                   "cache-control", "if-none-match", "if-modified-since", "x-requested-with")
# Answer headers a DICOMweb client reads beyond the safelisted ones.
_EXPOSED_HEADERS = ("Content-Length", "Content-Location", "Content-Disposition", "Location",
                   "Warning", "WWW-Authenticate", "Retry-After", "ETag", "Last-Modified")
MAX_AGE = 600  # seconds a browser may reuse a preflight answer


def normalize_origin(origin: str) -> str:
    """``origin`` as a browser sends it in ``Origin``: ``scheme://host[:port]``, lower case,
    without a default port or trailing slash. ValueError for anything else (a path, a query,
    ``*``, ``null``), naming the form expected."""
    text = origin.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or \
            parts.username or parts.password:
        raise ValueError(f"CORS origin {origin!r} is not scheme://host[:port] (e.g. "
                         "http://localhost:3000): name each allowed origin exactly, no path, "
                         "no wildcard")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"CORS origin {origin!r} has an invalid port") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _allowed_headers(authorization: bool) -> tuple[str, ...]:
    """The request headers a preflight may ask for (``Authorization`` when ``authorization``)."""
    return REQUEST_HEADERS + (("authorization",) if authorization else ())


class Cors:
    """ASGI wrapper answering CORS for the ``origins`` allowed (see the module's docstring).

    ``authorization``: allow the ``Authorization`` request header (the server requires a
    token). ``app`` stays reachable as ``.app``.
    """

    def __init__(self, app: ASGIApp, origins: Iterable[str], *,
                 authorization: bool = False) -> None:
        self.app = app
        self.origins = frozenset(normalize_origin(origin) for origin in origins)
        self.authorization = authorization
        self.request_headers = frozenset(_allowed_headers(authorization))

    def allowed(self, origin: str) -> bool:
        """True when a request with this ``Origin`` header may read the answers."""
        try:
            return normalize_origin(origin) in self.origins
        except ValueError:
            return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin is not None and \
                "access-control-request-method" in headers:
            await self.preflight(origin, headers)(scope, receive, send)
            return
        allowed = origin is not None and self.allowed(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer.add_vary_header("Origin")
                if allowed:
                    answer["Access-Control-Allow-Origin"] = origin or ""
                    answer["Access-Control-Expose-Headers"] = ", ".join(_EXPOSED_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def preflight(self, origin: str, headers: Headers) -> Response:
        """The answer to a preflight from ``origin``: 204 with the CORS headers, or 403 naming
        the origin, method or header refused."""
        vary = {"Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        if not self.allowed(origin):
            return self.refuse(f"origin {origin} is not allowed to call this server (allowed: "
                               f"{', '.join(sorted(self.origins))}; add it with "
                               "dicomframes serve --cors ORIGIN)", vary)
        method = headers["access-control-request-method"].strip().upper()
        if method not in _ALLOWED_METHODS:
            return self.refuse(f"method {method} is not allowed (allowed: "
                               f"{', '.join(_ALLOWED_METHODS)})", vary)
        asked = [name.strip().lower() for name in
                 headers.get("access-control-request-headers", "").split(",") if name.strip()]
        refused = [name for name in asked if name not in self.request_headers]
        if refused:
            why = " (this server requires no token: send no Authorization header)" \
                if "authorization" in refused and not self.authorization else ""
            return self.refuse(f"request header {', '.join(refused)} is not allowed (allowed: "
                               f"{', '.join(sorted(self.request_headers))}){why}", vary)
        answer = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(_ALLOWED_METHODS),
            "Access-Control-Allow-Headers": ", ".join(sorted(self.request_headers)),
            "Access-Control-Max-Age": str(MAX_AGE),
            **vary,
        }
        # Chromium's Private Network Access: a public page (a hosted OHIF) asking for loopback.
        if headers.get("access-control-request-private-network", "").lower() == "true":
            answer["Access-Control-Allow-Private-Network"] = "true"
        return Response(status_code=204, headers=answer)

    @staticmethod
    def refuse(message: str, headers: dict[str, str]) -> Response:
        """403 for a preflight that is refused, saying why."""
        return PlainTextResponse(f"CORS preflight refused: {message}\n", status_code=403,
                                 headers=headers)


def with_cors(app: ASGIApp, origins: Iterable[str] | None, *,
              authorization: bool = False) -> ASGIApp:
    """``app`` answering CORS for ``origins`` (see :class:`Cors`); ``app`` itself when no
    origin is given (CORS is off by default). ``authorization``: allow the ``Authorization``
    request header, i.e. the server requires a token. ValueError for an origin that is not
    ``scheme://host[:port]``."""
    origins = list(origins or ())
    if not origins:
        return app
    return Cors(app, origins, authorization=authorization)
