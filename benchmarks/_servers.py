"""The embedded server in a child process, shared by the benchmark scripts (so its work does not
compete with the measuring client for this process's GIL, as a real server would not)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CHILD = ("import sys\nfrom dicomframes.server import serve\n"
          "from dicomframes.server.parsers import default_workers\n"
          "with serve(sys.argv[1], parse_workers=default_workers()) as server:\n"
          "    server.archive.parsers.start(wait=True)\n"
          "    print(server.url, flush=True)\n"
          "    sys.stdin.read()\n")


@contextmanager
def embedded_in_child(folder: Path) -> Iterator[tuple[str, int]]:
    """``dicomframes.serve(folder)`` in a child process on 127.0.0.1: yields (url, pid) and
    stops it (closing its stdin) on exit."""
    process = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the embedded server did not start (said {url!r})")
        yield url, process.pid
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
