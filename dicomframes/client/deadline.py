"""Overall deadlines of client calls: besides the per-read ``timeout``, a whole call (every
page of a search, every byte of a body) must end within ``deadline`` seconds.

A :class:`Deadline` is the time limit of one call. The connections that carry its requests
register with it (:func:`current` tells them which one applies in this thread); one watchdog
thread shuts their sockets down when the time is up, which wakes a read blocked on a server
that drips a byte now and then. The transport then sees :attr:`Deadline.expired` and raises
:class:`~dicomframes.errors.DeadlineExceeded`. Nothing here sends a request.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = ["Deadline", "active", "current"]

_local = threading.local()
# The deadline each connection serves now, kept here rather than on urllib3's objects.
_serving: weakref.WeakKeyDictionary[Any, Deadline] = weakref.WeakKeyDictionary()


class Deadline:
    """The time limit of one call: ``seconds`` from its creation (None: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.ends = None if seconds is None else time.monotonic() + max(0.0, seconds)
        self.expired = False
        self.closed = False
        self.connections: list[tuple[Any, Any]] = []
        self.lock = threading.Lock()
        if self.ends is not None:
            _WATCHDOG.add(self)

    def remaining(self) -> float | None:
        """Seconds left (never negative), None without a limit."""
        if self.ends is None:
            return None
        return max(0.0, self.ends - time.monotonic())

    def passed(self) -> bool:
        """True once the time is up."""
        return self.expired or (self.ends is not None and time.monotonic() >= self.ends)

    def watch(self, connection: Any) -> None:
        """Shut ``connection``'s socket down when the time is up (while it still serves this
        call: a connection handed to another call meanwhile is left alone). Called when the
        connection is given a request and once it is connected: its socket is kept here, as
        the connection forgets it when the server says ``Connection: close``."""
        _serving[connection] = self
        sock = getattr(connection, "sock", None)
        if sock is None:
            return
        with self.lock:
            if not self.closed:
                self.connections.append((connection, sock))

    def fire(self) -> None:
        """Time is up: wake every read of this call by shutting its sockets down."""
        with self.lock:
            if self.closed:
                return
            self.expired = True
            connections, self.connections = self.connections, []
        for connection, sock in connections:
            if _serving.get(connection) is self:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """The call is over: forget its connections and cancel the watchdog's alarm."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.connections = []
        if self.ends is not None:
            _WATCHDOG.forget()


class _Watchdog:
    """One daemon thread that fires the deadlines in time order."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Deadline]] = []
        self.counter = itertools.count()
        self.condition = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closed = 0

    def forget(self) -> None:
        """A deadline was closed: drop the closed ones once they make up most of the heap."""
        with self.condition:
            self.closed += 1
            if self.closed > 256 and self.closed * 2 > len(self.heap):
                self.heap = [entry for entry in self.heap if not entry[2].closed]
                heapq.heapify(self.heap)
                self.closed = 0

    def add(self, deadline: Deadline) -> None:
        assert deadline.ends is not None
        with self.condition:
            heapq.heappush(self.heap, (deadline.ends, next(self.counter), deadline))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="dicomframes-deadlines",
                                               daemon=True)
                self.thread.start()
            self.condition.notify()

    def run(self) -> None:
        while True:
            with self.condition:
                while self.heap and self.heap[0][2].closed:
                    heapq.heappop(self.heap)
                if not self.heap:
                    self.condition.wait(30.0)
                    if not self.heap:
                        self.thread = None
                        return
                    continue
                ends, _, deadline = self.heap[0]
                wait = ends - time.monotonic()
                if wait > 0:
                    self.condition.wait(min(wait, 30.0))
                    continue
                heapq.heappop(self.heap)
            deadline.fire()


_WATCHDOG = _Watchdog()


def current() -> Deadline | None:
    """The deadline of the call under way in this thread, if any."""
    return getattr(_local, "deadline", None)


@contextlib.contextmanager
def active(seconds: float | None, given: Deadline | None = None) -> Iterator[Deadline]:
    """Make a deadline current in this thread for the ``with`` block: ``given``, else the one
    already current (a nested call shares its caller's), else a new one of ``seconds``
    (closed when the block ends)."""
    outer = current()
    deadline = given or outer
    own = deadline is None
    if deadline is None:
        deadline = Deadline(seconds)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = outer
        if own:
            deadline.close()
