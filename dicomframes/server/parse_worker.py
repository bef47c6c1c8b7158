"""A parser process of :class:`dicomframes.server.parsers.ParserPool`: it reads jobs on stdin,
writes and parses their files (:func:`dicomframes.server.parsers.run_jobs`) and writes the
outcomes on stdout, until stdin closes (its parent stopped, or died)."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from typing import IO, Any

from .parsers import READY, read_frame, run_jobs, write_frame


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer requests until stdin closes."""
    stdout.write(READY)
    stdout.flush()
    while (request := read_frame(stdin)) is not None:
        jobs, study = pickle.loads(request)
        outcomes: Any = run_jobs(jobs, study)
        write_frame(stdout, pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the parent stops, and its closed pipe ends us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the answers get a private copy of stdout; a stray print goes to stderr instead
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(BrokenPipeError):
        serve(sys.stdin.buffer, answers)
