"""What the embedded server prints: uvicorn's warnings, said so that a user can act on them.

uvicorn logs "Invalid HTTP request received." for anything that is not HTTP/1.1, most often a
browser or client given an ``https://`` URL to this plain-HTTP server (the TLS handshake is
not HTTP). A logging filter (the ``logging`` module's public hook) rewrites that line to say
what to do; the answer on the wire (400) is unchanged.
"""

from __future__ import annotations

import logging

__all__ = []

#: The line printed instead of uvicorn's "Invalid HTTP request received.".
NOT_HTTP = ("a client sent something that is not HTTP and was refused (400); an https:// URL? "
            "This server speaks plain http:// only: use http://host:port (or put a TLS proxy "
            "in front of it)")


class _ExplainNotHttp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "Invalid HTTP request received.":
            record.msg, record.args, record.exc_info = NOT_HTTP, (), None
        return True


def explain_uvicorn_warnings() -> None:
    """Install the filter on uvicorn's error logger (once per process)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ExplainNotHttp) for f in logger.filters):
        logger.addFilter(_ExplainNotHttp())
