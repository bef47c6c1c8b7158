"""A well-behaved client's latency while hostile clients hit the embedded server (issue 18).

    python benchmarks/hostile.py                  # 20 s idle, then 20 s under the hostile set
    python benchmarks/hostile.py --seconds 60 --no-cap

The server runs in a child process (``dicomframes.testing.hostile.CappedServer``: default
limits, address space capped at 4 GiB unless ``--no-cap``). The well-behaved client, from
127.0.0.1 with one keep-alive session, loops over a search, a metadata request, one frame
and one rendered image of a 256x256 instance; its latencies are measured first on the idle
server, then while the hostile set runs from other loopback addresses (127.0.0.2 to .9):

* deflate bombs (600 MiB of zeros in 620 KB) and files declaring two billion or fifty
  million frames, stored again and again;
* a 2-frame RLE instance asked for ``frames/1,1,1,...`` (30,000 repeats) and 1024x1024
  images rendered four at a time;
* QIDO values made only of separators, 1,000-item lists, 63-level sequence keys;
* 128 connections trickling STOW bodies a byte at a time, reconnecting when cut off, and
  70 KB request heads.

Printed: the well-behaved client's p50 and p99 per phase and their ratio, its failed
requests, how the hostile requests were answered, and the server's peak resident memory
(VmHWM). Targets: peak < 1 GB, well-behaved p99 < 500 ms under attack.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import pydicom
import requests

from dicomframes.server import Limits
from dicomframes.testing.hostile import (
    CappedServer,
    declared_sizes,
    deflate_bomb,
    image,
    peak_rss,
    rle_two_frames,
    to_bytes,
)

JSON = {"Accept": "application/dicom+json"}
DICOM = {"Content-Type": "application/dicom", "Accept": "application/dicom+json"}


def _url_of(base: str, data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def _well_behaved(base: str, instance: str, seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of the polite loop for ``seconds``, and how many answers were not 200."""
    calls = [(base + "/studies?PatientID=HOSTILE", JSON),
             (instance + "/metadata", JSON),
             (instance + "/frames/1", {"Accept": "application/octet-stream"}),
             (instance + "/rendered", {"Accept": "image/png"})]
    times, failed = [], 0
    end = time.monotonic() + seconds
    with requests.Session() as session:
        while time.monotonic() < end:
            for url, headers in calls:
                start = time.perf_counter()
                try:
                    ok = session.get(url, headers=headers, timeout=30).status_code == 200
                except requests.RequestException:
                    ok = False
                times.append(time.perf_counter() - start)
                failed += not ok
    return times, failed


class Hostile:
    """The hostile set, run in threads until :meth:`stop`; ``answers`` counts statuses."""

    def __init__(self, base: str, bomb: bytes, rle_url: str, big_url: str) -> None:
        parts = urlsplit(base)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.base, self.bomb, self.rle_url, self.big_url = base, bomb, rle_url, big_url
        self.answers: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def _count(self, what: str, status: object) -> None:
        with self.lock:
            self.answers[f"{what} {status}"] += 1

    def _request(self, source: str, method: str, url: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> int | str:
        path = url[len(self.base):] if url.startswith(self.base) else url
        connection = http.client.HTTPConnection(*self.address, timeout=30,
                                                source_address=(source, 0))
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            answer.read()
            return answer.status
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        finally:
            connection.close()

    def _loop(self, name: str, source: str, make: Callable[[], tuple[str, str, bytes | None,
                                                                     dict[str, str]]]) -> None:
        while not self.stopping.is_set():
            method, url, body, headers = make()
            self._count(name, self._request(source, method, url, body, headers))

    def _trickle(self, source: str, count: int) -> None:
        head = (b"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom"
                b"\r\nContent-Length: 1000000\r\n\r\n")
        socks: list[socket.socket | None] = [None] * count
        while not self.stopping.is_set():
            for i, sock in enumerate(socks):
                try:
                    if sock is None:
                        sock = socket.create_connection(self.address, timeout=5,
                                                        source_address=(source, 0))
                        sock.sendall(head)
                        socks[i] = sock
                    sock.sendall(b"x")
                except OSError:
                    if sock is not None:
                        sock.close()
                    socks[i] = None
                    self._count("trickle", "cut off")
            self.stopping.wait(1.0)
        for sock in socks:
            if sock is not None:
                sock.close()

    def _big_heads(self, source: str) -> None:
        head = b"GET /studies HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
        while not self.stopping.is_set():
            try:
                with socket.create_connection(self.address, timeout=10,
                                              source_address=(source, 0)) as sock:
                    sock.sendall(head)
                    self._count("70 KB head", sock.recv(12).decode(errors="replace"))
            except OSError as exc:
                self._count("70 KB head", type(exc).__name__)
            self.stopping.wait(0.2)

    def start(self) -> None:
        sizes = list(declared_sizes().values())
        frames = self.rle_url + "/frames/" + ",".join(["1"] * 30_000)
        deep = ".".join(["ReferencedImageSequence"] * 62) + ".ReferencedSOPInstanceUID=1"
        queries = ["/series?Modality=%5C", "/studies?ModalitiesInStudy=,",
                   "/studies?ModalitiesInStudy=" + ",".join(["CT"] * 1000),
                   "/studies?fuzzymatching=true&PatientName=" + "+".join(["ab"] * 1000),
                   "/instances?" + deep]
        turn = iter(range(10**9))
        jobs: list[tuple[Callable[..., None], tuple[object, ...]]] = [
            (self._loop, ("deflate bomb", "127.0.0.2",
                          lambda: ("POST", "/studies", self.bomb, DICOM))),
            (self._loop, ("declared sizes", "127.0.0.3",
                          lambda: ("POST", "/studies", sizes[next(turn) % len(sizes)], DICOM))),
            (self._loop, ("frames x30000", "127.0.0.4",
                          lambda: ("GET", frames, None, {"Accept": "*/*"}))),
            (self._loop, ("QIDO", "127.0.0.5",
                          lambda: ("GET", queries[next(turn) % len(queries)], None, JSON))),
            *[(self._loop, ("render 1024x1024", "127.0.0.6",
                            lambda: ("GET", self.big_url + "/rendered", None,
                                     {"Accept": "image/png"}))) for _ in range(4)],
            *[(self._trickle, (f"127.0.0.{n}", 32)) for n in (7, 8, 9, 10)],
            (self._big_heads, ("127.0.0.11",)),
        ]
        only = os.environ.get("HOSTILE_ONLY")  # e.g. "deflate,trickle": a subset, to compare
        if only:
            jobs = [j for j in jobs if any(w in str(j[1][0]) or w in j[0].__name__
                                           for w in only.split(","))]
        for target, args in jobs:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _attack(base: str, rle_url: str, big_url: str) -> int:
    """The hostile set (in its own process: its threads must not slow the measuring
    client's interpreter) until stdin closes; then its answer counts, as JSON, on stdout."""
    hostile = Hostile(base, deflate_bomb(), rle_url, big_url)
    hostile.start()
    print("started", flush=True)
    sys.stdin.read()
    hostile.stop()
    print(json.dumps(dict(hostile.answers)), flush=True)
    return 0


def _p(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--no-cap", action="store_true", help="no address-space cap")
    parser.add_argument("--attack", nargs=3, metavar=("BASE", "RLE", "BIG"),
                        help=argparse.SUPPRESS)  # the child process running the hostile set
    args = parser.parse_args(argv)
    if args.attack:
        return _attack(*args.attack)
    folder = tempfile.mkdtemp(prefix="dicomframes-hostile-bench-")
    polite, rle, big = to_bytes(image(256, 256)), rle_two_frames(), to_bytes(image(1024, 1024))
    with CappedServer(folder, Limits(), memory_cap=0 if args.no_cap else 4 << 30) as server:
        for data in (polite, rle, big):
            assert requests.post(server.url + "/studies", data=data, headers=DICOM,
                                 timeout=60).status_code == 200
        instance = _url_of(server.url, polite)
        idle, idle_failed = _well_behaved(server.url, instance, args.seconds)
        idle_peak = peak_rss(server.pid)
        attacker = subprocess.Popen(
            [sys.executable, __file__, "--attack", server.url, _url_of(server.url, rle),
             _url_of(server.url, big)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert attacker.stdin is not None and attacker.stdout is not None
        attacker.stdout.readline()
        time.sleep(1.0)  # the tricklers are connected
        attacked, attacked_failed = _well_behaved(server.url, instance, args.seconds)
        attacker.stdin.close()
        answers = json.loads(attacker.stdout.readline() or "{}")
        attacker.wait(timeout=120)
        peak = peak_rss(server.pid)
        alive = server.running
    print(f"hostile.py: {args.seconds:g} s per phase (machine load affects every figure)")
    print(f"{'phase':<12}{'requests':>10}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name, times, failed in (("idle", idle, idle_failed),
                                ("attacked", attacked, attacked_failed)):
        print(f"{name:<12}{len(times):>10}{failed:>8}{statistics.median(times) * 1000:>9.1f}"
              f"{_p(times, 0.99):>9.1f}")
    print(f"p99 ratio attacked / idle: {_p(attacked, 0.99) / _p(idle, 0.99):.2f}")
    print(f"server peak RSS: {idle_peak / 2**20:.0f} MiB idle, {peak / 2**20:.0f} MiB in all "
          f"(target < 1 GB); server {'alive' if alive else 'DEAD'} at the end")
    print("hostile answers:")
    for key, count in sorted(answers.items()):
        print(f"  {key:<40}{count:>8}")
    ok = peak < 10**9 and _p(attacked, 0.99) < 500 and alive
    print("targets met" if ok else "targets NOT met")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
