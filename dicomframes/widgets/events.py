"""Widget event handlers that report errors instead of raising, and can be held quiet."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

__all__ = []


class HandlerGuard:
    """Wraps a widget's event handlers.

    A handler's exception goes to ``on_error`` (e.g. a message line) instead of vanishing in
    the widget's log; without ``on_error`` it is raised. Inside :meth:`silently`, handlers do
    nothing: setting several widget values at once must not trigger a cascade of requests.
    """

    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.on_error = on_error
        self.quiet = False

    def guard(self, func: Callable[[], Any]) -> Callable[..., None]:
        """A handler that runs ``func`` unless quiet, reporting any error."""

        @functools.wraps(func)
        def handler(*_: Any) -> None:  # the event's details are not needed
            if self.quiet:
                return
            try:
                func()
            except Exception as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc)

        return handler

    @contextlib.contextmanager
    def silently(self) -> Iterator[None]:
        """Hold every guarded handler quiet inside the block."""
        previous, self.quiet = self.quiet, True
        try:
            yield
        finally:
            self.quiet = previous
