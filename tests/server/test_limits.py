"""Limits of the embedded server, tried with raw sockets on 127.0.0.1: header size, slow
headers, a body shorter than its Content-Length, the connection cap and idle keep-alive.
Every wait is bounded by a socket timeout; nothing asserts on durations."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import make_instances, require

from dicomframes.server import Limits, Server, serve
from dicomframes.standard.stow import OUT_OF_RESOURCES

from .server_helpers import stow

WAIT = 20.0  # upper bound of any wait for the server's reaction


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Server]:
    limits = Limits(max_connections=3, header_timeout=0.5, body_timeout=0.5, keep_alive=0.5)
    with serve(tmp_path / "archive", limits=limits) as server:
        yield server


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by WAIT)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _get(sock: socket.socket, path: str = "/studies") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Accept: application/dicom+json\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_huge_header_is_refused_and_closed(limited: Server) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"a" * (1 << 20))  # the server may close while we still send
        try:
            answer = _read_all(sock)
        except ConnectionResetError:
            return  # closed hard: also refused
    assert answer.startswith(b"HTTP/1.1 400")


def test_slow_request_head_gets_408_and_is_closed(limited: Server) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /studies HTTP/1.1\r\nHost: 127.0")  # ... and nothing more
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in answer.lower()


def test_silent_connection_is_closed(limited: Server) -> None:
    with _connect(limited) as sock:
        assert _read_all(sock) == b""


def test_body_shorter_than_content_length_gets_408(limited: Server) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/dicom\r\nAccept: application/dicom+json\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"x" * 100)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in answer.lower()


def test_idle_keep_alive_connection_is_closed(limited: Server) -> None:
    with _connect(limited) as sock:
        assert _get(sock).startswith(b"HTTP/1.1 200")
        assert _read_all(sock) == b""  # closed by the server after keep_alive


def test_connections_beyond_the_cap_get_503(tmp_path: Path) -> None:
    limits = Limits(max_connections=2, header_timeout=60, keep_alive=60)
    with serve(tmp_path / "archive", limits=limits) as server:
        held = [_connect(server) for _ in range(2)]
        try:
            for sock in held:  # both served, and kept open
                assert _get(sock).startswith(b"HTTP/1.1 200")
            with _connect(server) as extra:
                head = _get(extra)
                assert head.startswith(b"HTTP/1.1 503")
                assert b"connection: close" in head.lower()
            held.pop().close()
            # a slot is free again (the closed one may take a moment to be noticed)
            for _attempt in range(200):
                with _connect(server) as again:
                    if _get(again).startswith(b"HTTP/1.1 200"):
                        break
            else:
                pytest.fail("a freed connection slot was never reused")
        finally:
            for sock in held:
                sock.close()


# -- a full or read-only disk ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (root only; CI runs as root)."""
    require(os.geteuid() == 0, "root (to mount a small tmpfs)", "CI runs the tests as root")
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _failure_reasons(answer: requests.Response) -> list[int]:
    items = answer.json()["00081198"]["Value"]
    return [item["00081197"]["Value"][0] for item in items]


def test_full_disk_answers_507_out_of_resources(small_disk: Path) -> None:
    with serve(small_disk / "archive") as server:
        assert stow(server.url, make_instances(1)).status_code == 200
        big = make_instances(1, rows=1024, columns=1024)  # 2 MiB each: more than is left
        answer = stow(server.url, big * 3)
        assert answer.status_code == 507, answer.text
        assert _failure_reasons(answer) == [OUT_OF_RESOURCES]
        assert "disk is full" in answer.headers["Warning"]
        assert answer.headers["Connection"].lower() == "close"
        # reads still work, and the archive is consistent
        assert len(requests.get(f"{server.url}/instances", timeout=30).json()) == 1


def test_read_only_archive_answers_507_saying_so(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and shutil.which("chattr") is not None,
            "root and chattr (to make a folder immutable)", "CI runs the tests as root")
    with serve(tmp_path / "archive") as server:
        # tmp/ and its sub-folders, where uploads are written
        uploads = [str(server.path / "tmp"), *map(str, (server.path / "tmp").iterdir())]
        made = subprocess.run(["chattr", "+i", *uploads], capture_output=True, text=True)
        if made.returncode:
            pytest.skip(f"this file system has no immutable flag: {made.stderr.strip()}")
        try:
            answer = stow(server.url, make_instances(1))
        finally:
            subprocess.run(["chattr", "-i", *uploads], check=True)
        assert answer.status_code == 507, answer.text
        assert _failure_reasons(answer) == [OUT_OF_RESOURCES]
        assert "read-only" in answer.headers["Warning"]
