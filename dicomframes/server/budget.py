"""What one request, one client and the whole server may cost: every limit of the embedded
server in one place, with its default (the README's "Limits" table lists them).

:class:`Limits` is what :func:`dicomframes.server.serve` and ``dicomframes serve`` configure;
:class:`MemoryBudget` shares the configured memory among the requests running at once (a
request that would pass it waits briefly, then is answered 503 with Retry-After). The QIDO
and frame-list limits are constants: they bound how large a query or a frame list may be,
whatever the archive holds.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass

from .web import HTTPProblem

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

MiB = 1 << 20

#: Values of one QIDO list (``Modality=CT,MR``, a UID list) or words of a fuzzy name.
MAX_QUERY_VALUES = 200
#: Matching keys of one QIDO request (each is a clause of the search).
MAX_QUERY_KEYS = 64
#: Sequences a dotted QIDO key may go through (``A.B.C`` goes through 2).
MAX_SEQUENCE_DEPTH = 8
#: Numbers in one frame list (duplicates count; a list is also at most as long as the
#: instance has frames, or FRAME_LIST_REPEATS when that is more).
MAX_FRAME_LIST = 10_000
FRAME_LIST_REPEATS = 16
#: The address of the client whose request is being handled (set by the app's guard).
CLIENT: ContextVar[str] = ContextVar("dicomframes_client", default="")

#: Bytes a Deflated Transfer Syntax data set may inflate to (see :attr:`Limits.max_inflated`).
DEFAULT_MAX_INFLATED = 256 * MiB


@dataclass(frozen=True)
class Limits:
    """What one client, one request and the whole server may hold.

    Connections: ``max_connections`` open at once (one more is answered 503 and closed; None:
    256, or a quarter of the open-file limit if lower); ``connections_per_client`` from one
    client address (more are answered 503 and closed at once). ``header_bytes``: size of a
    request line and headers, however the bytes arrive (larger: 400 and closed).
    ``header_timeout``: seconds for a request's head to arrive once the connection is ready
    for it (else 408 and closed).
    ``body_timeout``: seconds a request body may pause; ``min_body_rate`` (bytes per second):
    after ``body_grace`` seconds a body must have come at least this fast on average (else 408
    and closed: a body trickled a byte at a time cannot hold a connection).
    ``keep_alive``: seconds an idle connection is kept after an answer.

    Memory: ``memory_budget`` bytes that the requests running at once may use for decoding,
    rendering and transcoding (a request that would pass it waits up to ``memory_wait``
    seconds, then gets 503 with Retry-After; one that needs more than the whole budget gets
    413); ``work_per_client``: such requests of one client address that run at once (more
    wait their turn the same way, so that one client cannot take every core).
    ``max_inflated``: bytes a Deflated Transfer Syntax data set may inflate to at STOW
    (it is stored inflated, once; larger is refused with 409).
    """

    max_connections: int | None = None
    connections_per_client: int = 32
    header_bytes: int = 64 << 10
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    min_body_rate: int = 1024
    body_grace: float = 10.0
    keep_alive: float = 15.0
    memory_budget: int = 768 * MiB
    memory_wait: float = 5.0
    work_per_client: int = 2
    max_inflated: int = DEFAULT_MAX_INFLATED

    def connections(self) -> int:
        """The connection cap in effect."""
        if self.max_connections is not None:
            return max(1, int(self.max_connections))
        if resource is not None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft != resource.RLIM_INFINITY:
                return max(8, min(256, soft // 4))
        return 256


def parse_size(text: str) -> int:
    """Bytes of a size written ``512M``, ``2G``, ``64K`` or plain bytes (ValueError else)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    clean = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = clean[-1:] if clean[-1:] in units else ""
    number = float(clean[:len(clean) - len(unit)] if unit else clean)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"a size must be positive, not {text!r}")
    return int(number * units[unit])


def size_text(nbytes: int) -> str:
    """``nbytes`` for a person (``512 MiB``)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes} bytes"


class Reservation:
    """Memory held by one request until :meth:`release` (idempotent)."""

    def __init__(self, budget: MemoryBudget, nbytes: int, client: str) -> None:
        self.budget = budget
        self.nbytes = nbytes
        self.client = client
        self.held = True

    def release(self) -> None:
        """Give the memory (and the client's turn) back to the budget."""
        if self.held:
            self.held = False
            self.budget.give_back(self.nbytes, self.client)


class MemoryBudget:
    """The memory the requests of one server may use at once (bytes; see :class:`Limits`).

    Used from the server's event loop only: :meth:`reserve` waits there without a lock."""

    def __init__(self, total: int, wait: float, per_client: int = 0) -> None:
        self.total = int(total)
        self.wait = float(wait)
        self.per_client = int(per_client)
        self.used = 0
        self.running: Counter[str] = Counter()
        self._freed: asyncio.Event | None = None

    def give_back(self, nbytes: int, client: str = "") -> None:
        """Memory (and a turn of ``client``) a reservation no longer holds."""
        self.used = max(0, self.used - nbytes)
        if client:
            self.running[client] -= 1
            if self.running[client] <= 0:
                del self.running[client]
        if self._freed is not None:
            self._freed.set()

    def _fits(self, nbytes: int, client: str) -> bool:
        busy = bool(client) and 0 < self.per_client <= self.running[client]
        return self.used + nbytes <= self.total and not busy

    async def reserve(self, nbytes: int, what: str) -> Reservation:
        """Hold ``nbytes`` for ``what`` (e.g. "rendering frame 3"), and a turn of the client
        of the request (:data:`CLIENT`): 413 when it is more than the whole budget, 503 with
        Retry-After when the budget stays full (or the client keeps ``per_client`` such
        requests running) for ``wait`` seconds."""
        nbytes = max(0, int(nbytes))
        if nbytes == 0:  # nothing to decode (bytes as stored): no memory, no turn
            return Reservation(self, 0, "")
        if nbytes > self.total:
            raise HTTPProblem(413, f"{what} would need about {size_text(nbytes)} of memory, "
                              f"more than the server's memory budget of "
                              f"{size_text(self.total)} (--memory-budget)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        client = CLIENT.get()
        while not self._fits(nbytes, client):
            left = deadline - loop.time()
            if left <= 0:
                why = (f"{self.per_client} such requests of {client} are running"
                       if self.used + nbytes <= self.total else
                       f"{what} needs about {size_text(nbytes)} of memory and its memory "
                       f"budget of {size_text(self.total)} is in use")
                raise HTTPProblem(503, f"the server is busy: {why}; try again shortly",
                                  headers={"Retry-After": "2"})
            if self._freed is None:
                self._freed = asyncio.Event()
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), left)
            except TimeoutError:
                continue
        self.used += nbytes
        if client:
            self.running[client] += 1
        return Reservation(self, nbytes, client)
