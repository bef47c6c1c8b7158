"""How many requests to keep in flight: enough to hide the round trip, no more than the CPU
needs on loopback.

Against a server on the same machine a request costs CPU on both sides and nothing else: more
requests in flight than cores only wait. Across a network a request costs a round trip before
any byte moves, during which neither side works: there, requests in flight hide the round trip
whatever the cores. :class:`LatencyMeter` keeps the shortest time-to-headers of the client's
recent requests (the shortest is the nearest to the bare round trip, as TCP's own estimators
take it); :func:`in_flight` turns it into a number.

The rule (documented in the README): below :data:`LOCAL_ROUND_TRIP` (10 ms, a server on this
machine or the same rack) the CPU default; above it, one more request per
:data:`PER_REQUEST` (5 ms) of round trip, up to the caller's cap (e.g. 50 ms: 10 more). The
HTTP session's connection pool holds :data:`POOL_SIZE` connections per host, more than any cap.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from typing import Any

__all__ = ["LOCAL_ROUND_TRIP", "PER_REQUEST", "POOL_SIZE", "LatencyMeter", "cpu_default",
           "in_flight", "throttled_so_far", "workers_for"]

LOCAL_ROUND_TRIP = 0.010
PER_REQUEST = 0.005
POOL_SIZE = 32


def cpu_default(low: int = 2, high: int = 4) -> int:
    """One per CPU, from ``low`` to ``high``."""
    return min(high, max(low, os.cpu_count() or 1))


class LatencyMeter:
    """The shortest time-to-headers among the last ``window`` answers, in seconds."""

    def __init__(self, window: int = 32) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Note one answer's time to headers."""
        with self._lock:
            self._samples.append(max(0.0, seconds))

    def round_trip(self) -> float | None:
        """The estimate, None before the first answer."""
        with self._lock:
            return min(self._samples) if self._samples else None


def in_flight(round_trip: float | None, default: int, cap: int) -> int:
    """Requests to keep in flight for a measured ``round_trip`` (None: not measured yet):
    ``default`` on a local link, one more per :data:`PER_REQUEST` of round trip beyond, at most
    ``cap`` (and at most :data:`POOL_SIZE`)."""
    cap = max(1, min(cap, POOL_SIZE))
    if round_trip is None or round_trip < LOCAL_ROUND_TRIP:
        return max(1, min(default, cap))
    return max(1, min(cap, default + math.ceil(round_trip / PER_REQUEST)))


def workers_for(client: Any, default: int, cap: int) -> int:
    """:func:`in_flight` for the round trip ``client``'s transport has measured so far."""
    meter = getattr(getattr(client, "transport", None), "latency", None)
    return in_flight(meter.round_trip() if isinstance(meter, LatencyMeter) else None,
                     default, cap)


def throttled_so_far(client: Any) -> int:
    """The 429/503 answers ``client`` has met (0 for a client without a throttle)."""
    throttle = getattr(getattr(client, "transport", None), "throttle", None)
    return int(getattr(throttle, "throttled", 0))
