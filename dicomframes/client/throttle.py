"""Throttling for a whole client: a 429 (or a 503 with Retry-After) pauses every thread.

A service that throttles counts the requests of the client, not of one thread: when one
request is told to wait, its siblings would be told the same. :class:`Throttle` is one gate
per client: an answer 429/503 closes it for the time the server asked (``Retry-After`` as
delta-seconds or an HTTP date, parsed by urllib3), or for an exponential backoff with jitter
when it gave none; every request of that client waits at the gate before it is sent. A wait
that would outlast the call's deadline is not waited: the request raises
:class:`~dicomframes.errors.Throttled` at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from .. import errors

__all__ = ["Throttle", "backoff_delay", "resend", "retry_after_seconds"]

T = TypeVar("T")

_PARSER = Retry()


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP date; a date in the past
    gives 0); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(_PARSER.parse_retry_after(value.strip())))
    except (InvalidHeader, ValueError, OverflowError):
        return None


def backoff_delay(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry ``attempt`` (1, 2...) without Retry-After: ``base * 2**(attempt-1)``
    with "equal jitter" (between half of it and all of it), so that threads throttled together
    do not come back together."""
    full = max(0.0, base) * 2 ** max(0, attempt - 1)
    return full / 2 + (rng or random).uniform(0.0, full / 2)


class Throttle:
    """The gate shared by every thread of one client.

    ``throttled`` counts the 429/503 answers met, ``waited`` the seconds threads spent at the
    gate (summed over threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_at = 0.0  # time.monotonic() when requests may go again
        self.throttled = 0
        self.waited = 0.0

    def close_for(self, seconds: float) -> None:
        """Hold every request of this client for ``seconds`` from now (or longer if already
        held longer), and count one throttled answer."""
        with self._lock:
            self._open_at = max(self._open_at, time.monotonic() + max(0.0, seconds))
            self.throttled += 1

    def pause_left(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._open_at - time.monotonic())

    def wait(self, budget: float | None) -> float | None:
        """Wait until the gate opens, if it opens within ``budget`` seconds (None: no limit).
        Returns None when waited (or open), else the seconds the gate stays closed (nothing
        waited: the caller gives up)."""
        while True:
            left = self.pause_left()
            if left <= 0:
                return None
            if budget is not None and left > budget:
                return left
            time.sleep(left)
            with self._lock:
                self.waited += left
            if budget is not None:
                budget -= left


def resend(client: Any, send: Callable[[], T]) -> T:
    """``send()`` (a request whose body cannot be replayed by the transport, e.g. a STOW body
    streamed from disk, so ``send`` builds it anew each time), sent again after a
    :class:`~dicomframes.errors.Throttled` once the client's gate opens (``client.retries``
    times, waits up to ``client.max_retry_wait``), and once after a 401 when the client's token
    was refreshed."""
    transport = getattr(client, "transport", None)
    throttle = getattr(transport, "throttle", None)
    provider = getattr(getattr(transport, "auth", None), "provider", None)
    renewed = False
    tries = 0
    while True:
        try:
            return send()
        except errors.Throttled:
            tries += 1
            if not isinstance(throttle, Throttle) or tries > int(getattr(client, "retries", 0)):
                raise
            if throttle.wait(getattr(client, "max_retry_wait", None)) is not None:
                raise
        except errors.DICOMwebError as exc:
            if exc.status != 401 or renewed or not getattr(provider, "refreshable", False):
                raise
            renewed = True  # the transport asked for a new token when the 401 came
