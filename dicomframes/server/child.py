"""The embedded server in a child process (``dicomframes.connect(server="process")``).

Started in this process, the server's request handling and the client's decoding take turns
on one interpreter lock: measured, frames arrive at about 70% of a raw download. In a child
process (running :func:`main` on FOLDER) they run side by side. The child
serves on 127.0.0.1 on a free port, prints its URL on its first line and stops when its stdin
closes: when :meth:`ChildServer.stop` closes it, and also when this process dies, so no server
outlives its parent.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["ChildServer"]

_CHILD = ("import sys\nfrom dicomframes.server.child import main\n"
          "raise SystemExit(main(sys.argv[1:]))\n")
#: Seconds the child may take to finish its requests in flight and exit.
STOP_TIMEOUT = 30.0
#: Seconds the child may take to start serving (a fresh interpreter imports the server).
START_TIMEOUT = 120.0


class ChildServer:
    """``serve(folder)`` run by a child Python process; ``url``, ``running`` and ``stop()``
    as on :class:`~dicomframes.server.Server`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        env = dict(os.environ)
        env.pop("DICOMFRAMES_SERVER_TOKEN", None)  # the embedded default needs no token
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(self.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self._process.stdout is not None
        with selectors.DefaultSelector() as ready:  # a child that hangs must not hang us
            ready.register(self._process.stdout, selectors.EVENT_READ)
            started = bool(ready.select(timeout=START_TIMEOUT))
        first = self._process.stdout.readline().strip() if started else ""
        if not first.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the embedded server process did not start within "
                               f"{START_TIMEOUT:.0f} s (exit status "
                               f"{self._process.returncode}, said {first!r})")
        self._url = first

    @property
    def url(self) -> str:
        """Base URL of the service, e.g. ``http://127.0.0.1:54321``."""
        return self._url

    @property
    def running(self) -> bool:
        """True until the child process has exited."""
        return self._process.poll() is None

    def stop(self) -> None:
        """Close the child's stdin (it stops serving and exits) and wait for it."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<dicomframes ChildServer {self.url} ({state}) data={str(self.path)!r}>"


def main(argv: list[str]) -> int:
    """Serve ``argv[0]`` until stdin closes (the child's side of :class:`ChildServer`)."""
    from .runner import Server

    with Server(argv[0]) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # returns at EOF: the parent stopped us or is gone
    return 0

