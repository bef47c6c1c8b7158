"""The connections under the client's requests Session: a query's ``^`` travels raw, and the
deadline of the call under way (:mod:`dicomframes.client.deadline`) watches each connection.

requests and urllib3 always percent-encode ``^``; Orthanc compares query values without
decoding them, so a person-name filter such as ``Doe^John`` must travel raw. Neither library
offers an option for it, so the adapter gives urllib3's pool manager connection pools whose
connection class undoes that one encoding. ``PoolManager.pool_classes_by_scheme`` and
``HTTPConnectionPool.ConnectionCls`` are public attributes but not a documented extension
point: urllib3 is bounded below its next major version in pyproject.toml, and
tests/test_client_hostile.py fails loudly when a urllib3 3 is installed, so that this module is
checked again then.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .concurrency import POOL_SIZE
from .deadline import current

__all__ = ["URLLIB3_MAJOR", "new_session"]

URLLIB3_MAJOR = 2
"""The urllib3 major version this module was written and checked against."""


def _keep_caret(url: str) -> str:
    """Undo the percent-encoding of ``^`` in the query part of a request target.

    We never encode ``^`` ourselves, so every ``%5E`` in the query came from the libraries'
    re-encoding. In a percent-encoded
    string each ``%`` starts a triplet, so a literal ``%5E`` typed by a user (sent as ``%255E``)
    is not touched.
    """
    head, sep, query = url.partition("?")
    if not sep or "%5E" not in query:
        return url
    return head + sep + query.replace("%5E", "^")


class _WatchedKeepCaret:
    """Sends ``^`` raw in the query; hands itself to the call's deadline."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        deadline = current()
        if deadline is not None:  # its watchdog shuts this connection down when time is up
            deadline.watch(self)
        return super().request(method, _keep_caret(url), *args, **kwargs)  # type: ignore[misc]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        deadline = current()
        if deadline is not None:
            deadline.watch(self)


class _KeepCaretHTTPConnection(_WatchedKeepCaret, HTTPConnection):
    pass


class _KeepCaretHTTPSConnection(_WatchedKeepCaret, HTTPSConnection):
    pass


class _KeepCaretHTTPPool(HTTPConnectionPool):
    ConnectionCls = _KeepCaretHTTPConnection


class _KeepCaretHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _KeepCaretHTTPSConnection


class _KeepCaretAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections send ``^`` in query strings unencoded (see above)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _KeepCaretHTTPPool,
            "https": _KeepCaretHTTPSPool,
        }


def new_session() -> requests.Session:
    """A requests Session whose connections keep ``^`` raw in query strings."""
    session = requests.Session()
    adapter = _KeepCaretAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
