"""Limits on connections that the HTTP protocol itself does not set: a cap per client address,
a deadline and a size limit for each request's head, however its bytes arrive.

:class:`GuardedProtocol` is the asyncio protocol uvicorn runs (its documented ``http``
setting takes a protocol class). It holds uvicorn's own HTTP/1.1 protocol and passes every
event of the connection to it through the public :class:`asyncio.Protocol` methods, after
looking at the bytes: nothing of uvicorn is subclassed and none of its attributes is read.
Between requests it counts the bytes of the head until the blank line that ends it (a head
larger than the limit is refused whether it came in one read or in many) and closes a
connection whose head does not arrive in time. The request body and the answer are the
ASGI layer's business: :class:`ConnectionBoard` is where that layer says an answer is done
(``scope["client"]`` names the connection), so that the next head is watched again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from .budget import Limits

HEAD_END = b"\r\n\r\n"


def _answer(status: str, message: str) -> bytes:
    body = (message + "\n").encode("utf-8")
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


class ConnectionBoard:
    """The open connections of one server: how many per client address, and each one's
    protocol by (address, port), for the ASGI layer to report finished answers."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.per_address: Counter[str] = Counter()
        self.by_peer: dict[tuple[str, int], GuardedProtocol] = {}

    def answered(self, client: Any) -> None:
        """The answer on the connection of ``client`` (ASGI ``scope["client"]``) is sent."""
        if client:
            protocol = self.by_peer.get((str(client[0]), int(client[1])))
            if protocol is not None:
                protocol.await_head()


class GuardedProtocol(asyncio.Protocol):
    """One connection: refused when its address holds too many, its heads watched, every
    event passed on to uvicorn's protocol (made with the arguments uvicorn gives).
    ``board`` is set on a subclass made per server (see :func:`protocol_for`)."""

    board: ConnectionBoard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        self.inner = H11Protocol(*args, **kwargs)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.accepted = False
        self.watching = False  # between requests: the bytes are a head
        self.head_bytes = 0
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse the connection when its address holds the cap, else pass it on."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else None
        limits = self.board.limits
        address = self.peer[0] if self.peer else ""
        if self.peer and self.board.per_address[address] >= limits.connections_per_client:
            transport.write(_answer("503 Service Unavailable",
                                    f"too many connections from {address}: at most "
                                    f"{limits.connections_per_client} at once"))
            transport.close()
            return
        self.accepted = True
        if self.peer:
            self.board.per_address[address] += 1
            self.board.by_peer[self.peer] = self
        self.inner.connection_made(transport)
        self.await_head()

    def data_received(self, data: bytes) -> None:
        """Watch the head's size, then pass the bytes on."""
        if not self.accepted or self.transport is None or self.transport.is_closing():
            return
        if self.watching and not self._head_fits(data):
            return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        """The client closed its side (pass it on; the transport then closes)."""
        if self.accepted:
            self.inner.eof_received()
        return None

    def pause_writing(self) -> None:
        """Pass on: the transport's buffer is full."""
        if self.accepted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Pass on: the transport's buffer drained."""
        if self.accepted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and pass the loss on."""
        self._disarm()
        if not self.accepted:
            return
        self.accepted = False
        if self.peer:
            address = self.peer[0]
            self.board.per_address[address] -= 1
            if self.board.per_address[address] <= 0:
                del self.board.per_address[address]
            if self.board.by_peer.get(self.peer) is self:
                del self.board.by_peer[self.peer]
        self.inner.connection_lost(exc)

    # -- the head of each request ---------------------------------------------------------

    def await_head(self) -> None:
        """The connection is ready for a request: its head must come in time and in size."""
        self._disarm()
        if self.transport is None or self.transport.is_closing():
            return
        self.watching = True
        self.head_bytes = 0
        self.tail = b""
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.board.limits.header_timeout, self._head_late)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_fits(self, data: bytes) -> bool:
        """Count ``data`` into the head; False (and the connection refused) past the limit."""
        limit = self.board.limits.header_bytes
        if not self.head_bytes:  # blank lines before a request are not its head
            stripped = data.lstrip(b"\r\n")
            if not stripped:
                return True
            data = stripped
        seen = self.tail + data
        end = seen.find(HEAD_END)
        if end >= 0:
            size = self.head_bytes - len(self.tail) + end + len(HEAD_END)
        else:
            size = self.head_bytes + len(data)
        if size > limit:
            self._refuse("400 Bad Request", f"the request line and headers are larger than "
                         f"{limit} bytes")
            return False
        if end >= 0:  # the head is whole: the body and the answer are the app's
            self.watching = False
            self._disarm()
        else:
            self.head_bytes += len(data)
            self.tail = seen[-(len(HEAD_END) - 1):]
        return True

    def _head_late(self) -> None:
        """No whole head in time: close (408 when one was begun)."""
        self.timer = None
        if not self.watching or self.transport is None or self.transport.is_closing():
            return
        if self.head_bytes:
            self._refuse("408 Request Timeout",
                         "the request line and headers did not arrive in time")
        else:
            self.transport.close()

    def _refuse(self, status: str, message: str) -> None:
        self._disarm()
        self.watching = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_answer(status, message))
            self.transport.close()


def protocol_for(board: ConnectionBoard) -> type[GuardedProtocol]:
    """The protocol class of one server (uvicorn makes one instance per connection)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"board": board})
