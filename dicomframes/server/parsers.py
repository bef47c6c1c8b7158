"""Worker processes that write and parse a batch of DICOM files in parallel (STOW, import).

Writing a small file (its creation in the file system) and reading its header with pydicom are
what a stored instance costs the server most, and both are CPU-bound: threads would contend
for the interpreter lock. The workers are plain child processes (``python -m
dicomframes.server.parse_worker``, without the package's front door), not
:mod:`multiprocessing`: nothing of the caller's main module is imported again (a script or a
notebook that starts a server needs no ``if __name__ == "__main__"`` guard, and no process that
runs threads is forked), and a worker exits as soon as its standard input closes, so workers
never outlive a server killed with kill -9.

A :class:`Job` names the temporary file of one instance and where its bytes come from (a STOW
part's content, or a file to copy or link for an import). :class:`Batch` collects the jobs of
one request and sends them to the workers in chunks while the request is still being read;
:meth:`Batch.outcomes` gives one :func:`.index.prepare_file` outcome per job, in order. Requests
and answers are length-prefixed pickles on the workers' stdin and stdout (pickle is safe here:
both ends are this package). The pool starts in the background on the first large batch;
until it runs, and whenever a worker fails, jobs are done in the calling thread: a batch is
never lost to the pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..standard.stow import PROCESSING_FAILURE
from .budget import DEFAULT_MAX_INFLATED
from .index import PreparedInstance, StoreFailure, prepare_outcome

log = logging.getLogger("dicomframes.server")

#: Jobs per request to a worker (and batches smaller than this stay in the calling thread).
CHUNK = 16
#: Jobs per request to a worker when the jobs carry paths only (an import): fewer round trips.
IMPORT_CHUNK = 64
READY = b"ready\n"
_LENGTH = struct.Struct("<Q")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding dicomframes/
# A worker needs pydicom and the index module, not the package's front door (pandas for the
# accessor, the web server): it registers the two packages without running their __init__,
# then runs parse_worker as ``python -m`` would. Start-up of a worker is about 3x shorter.
_BOOT = ("import runpy, sys, types\n"
         "for name, path in (('dicomframes', sys.argv[1]),\n"
         "                   ('dicomframes.server', sys.argv[1] + '/server')):\n"
         "    module = types.ModuleType(name)\n"
         "    module.__path__ = [path]\n"
         "    sys.modules[name] = module\n"
         "runpy.run_module('dicomframes.server.parse_worker', run_name='__main__')\n")

Outcome = PreparedInstance | StoreFailure


@dataclass(frozen=True)
class Job:
    """One instance to store: its temporary file ``temp`` is written from ``content`` (a STOW
    part), copied from ``source`` or, with ``link``, made a symbolic link to it (an import), or
    already exists (neither given); then it is parsed (a deflated file inflated first, to at
    most ``max_inflated`` bytes)."""

    temp: Path
    content: bytes | None = None
    source: Path | None = None
    link: bool = False
    max_inflated: int = DEFAULT_MAX_INFLATED


def run_jobs(jobs: Sequence[Job], study: str | None) -> list[Outcome | OSError]:
    """Write (or copy, or link) and parse each job's file, in order. A source that cannot be
    read fails its job; a content that cannot be written (a full disk) is returned as the
    OSError, for the caller to raise."""
    out: list[Outcome | OSError] = []
    for job in jobs:
        try:
            if job.content is not None:
                with open(job.temp, "wb") as fp:
                    fp.write(job.content)
            elif job.source is not None and job.link:
                os.symlink(job.source.resolve(), job.temp)
            elif job.source is not None:
                shutil.copyfile(job.source, job.temp)
        except OSError as exc:
            if job.content is not None:
                out.append(exc)
            else:
                out.append(StoreFailure(PROCESSING_FAILURE, f"cannot read: {exc}"))
            continue
        out.append(prepare_outcome(job.temp, study, max_inflated=job.max_inflated))
    return out


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    """Write one length-prefixed payload."""
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed payload; None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


class _Worker:
    """One child process and its pipes; used by one thread at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # the child imports this very copy of dicomframes, installed or not
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(Path(_PACKAGE_ROOT) / "dicomframes")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)

    def wait_ready(self) -> None:
        """Wait until the child has imported what it needs; OSError if it did not start."""
        assert self.process.stdout is not None
        if self.process.stdout.readline() != READY:
            self.close()
            raise OSError("a parser process did not start")

    def call(self, jobs: Sequence[Job], study: str | None) -> list[Outcome | OSError]:
        """:func:`run_jobs` in the child. Raises ChildProcessError when the child is gone."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            write_frame(self.process.stdin, pickle.dumps((list(jobs), study)))
            answer = read_frame(self.process.stdout)
        except (OSError, ValueError) as exc:
            raise ChildProcessError(f"a parser process failed: {exc}") from exc
        if answer is None:
            raise ChildProcessError(f"a parser process ended (exit code "
                                    f"{self.process.poll()})")
        outcomes: list[Outcome | OSError] = pickle.loads(answer)
        if len(outcomes) != len(jobs):
            raise ChildProcessError("a parser process answered for another batch")
        return outcomes

    def close(self) -> None:
        """Close the child's stdin (it exits) and reap it."""
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ParserPool:
    """``workers`` parser processes shared by every thread of a server (or an import)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a parser pool needs at least one worker, not {workers}")
        self.workers = workers
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._state = "cold"  # cold -> starting -> ready | failed; closed
        self._lock = threading.Lock()
        self._settled = threading.Event()  # set once the workers run, or could not start
        # one thread per worker waits for its answers (waiting releases the interpreter lock)
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="dicomframes-parse")

    def __repr__(self) -> str:
        return f"ParserPool(workers={self.workers}, state={self._state!r})"

    @property
    def state(self) -> str:
        """"cold" (never started), "starting", "ready", "failed" or "closed"."""
        return self._state

    @property
    def ready(self) -> bool:
        """True once the worker processes run."""
        return self._state == "ready"

    def start(self, wait: bool = False) -> None:
        """Start the workers in the background (``wait``: until they run or failed)."""
        with self._lock:
            if self._state == "cold":
                self._state = "starting"
                threading.Thread(target=self._start, name="dicomframes-parse-start",
                                 daemon=True).start()
        if wait:
            self._settled.wait()

    def _start(self) -> None:
        started: list[_Worker] = []
        try:
            for _ in range(self.workers):  # all launched, then all awaited: they start together
                started.append(_Worker())
            for worker in started:
                worker.wait_ready()
        except OSError as exc:
            log.warning("parsing in the server process: parser processes did not start (%s)",
                        exc)
            for worker in started:
                worker.close()
            with self._lock:
                self._state = "failed" if self._state != "closed" else "closed"
            self._settled.set()
            return
        with self._lock:
            if self._state != "closed":
                self._all = started
                for worker in started:
                    self._idle.put(worker)
                self._state = "ready"
                started = []
        for worker in started:  # closed while starting
            worker.close()
        self._settled.set()

    def submit(self, jobs: Sequence[Job], study: str | None
               ) -> Future[list[Outcome | OSError]]:
        """:func:`run_jobs` by the next free worker (in this process if it fails)."""
        return self._threads.submit(self._run, list(jobs), study)

    def _run(self, jobs: list[Job], study: str | None) -> list[Outcome | OSError]:
        worker = self._idle.get()
        try:
            return worker.call(jobs, study)
        except Exception as exc:  # a dead worker, or an answer that cannot be read
            log.warning("%s; doing its jobs in the server process", exc)
            worker = self._replace(worker)
            for job in jobs:  # start again from what the job says
                if job.content is not None or job.source is not None:
                    with contextlib.suppress(OSError):
                        job.temp.unlink()
            return run_jobs(jobs, study)
        finally:
            self._idle.put(worker)

    def _replace(self, dead: _Worker) -> _Worker:
        dead.close()
        try:
            fresh = _Worker()
            fresh.wait_ready()
        except OSError:
            return dead  # tried again (and done in-process) on the next chunk
        with self._lock:
            self._all = [fresh if w is dead else w for w in self._all]
        return fresh

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        with self._lock:
            self._state = "closed"
            workers, self._all = self._all, []
        self._settled.set()
        self._threads.shutdown(wait=True)
        for worker in workers:
            worker.close()


class Batch:
    """The jobs of one request, done a chunk at a time as they are added: by the pool when it
    runs (at most two chunks per worker in flight, so that memory stays flat however fast the
    request arrives), else in the calling thread."""

    def __init__(self, pool: ParserPool | None, study: str | None, *, bounded: bool = True,
                 chunk: int = CHUNK) -> None:
        """``bounded``: wait for a chunk to finish before a chunk beyond two per worker is
        sent (for jobs that carry their content; an import's jobs carry paths only).
        ``chunk``: jobs per request to a worker (larger chunks cost fewer round trips, each of
        which waits for this process's interpreter lock)."""
        self.pool = pool
        self.study = study
        self.bounded = bounded
        self.chunk = max(1, chunk)
        self._parts: list[Future[list[Outcome | OSError]] | list[Outcome | OSError]] = []
        self._pending: list[Job] = []
        self.count = 0

    def add(self, job: Job) -> None:
        """Queue one job."""
        self.count += 1
        self._pending.append(job)
        if len(self._pending) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Send the jobs added so far (a last, short chunk) without waiting for them."""
        if not self._pending:
            return
        jobs, self._pending = self._pending, []
        if self.pool is not None and self.count >= CHUNK:
            self.pool.start()
            if self.pool.ready:
                in_flight = [p for p in self._parts if isinstance(p, Future) and not p.done()]
                if self.bounded and len(in_flight) >= 2 * self.pool.workers:
                    in_flight[0].result()
                self._parts.append(self.pool.submit(jobs, self.study))
                return
        self._parts.append(run_jobs(jobs, self.study))

    def outcomes(self) -> list[Outcome]:
        """One outcome per job, in order, once every job is done. Raises the first OSError
        of writing a content (after every job finished, so no worker still writes)."""
        self.flush()
        done: list[Outcome | OSError] = []
        for part in self._parts:
            done += part.result() if isinstance(part, Future) else part
        for outcome in done:
            if isinstance(outcome, OSError):
                raise outcome
        return [o for o in done if not isinstance(o, OSError)]

    def wait(self) -> None:
        """Wait until no job is running (before removing what the jobs wrote)."""
        for part in self._parts:
            if isinstance(part, Future):
                with contextlib.suppress(Exception):
                    part.result()


def default_workers() -> int:
    """Parser processes for this machine: one per CPU, at most 4 (the server's own thread
    stores what they parse)."""
    return max(1, min(4, os.cpu_count() or 1))
