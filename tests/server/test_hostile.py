"""Hostile input against a real embedded server in a child process whose address space is
capped (3 GiB): a runaway allocation fails a request there instead of filling the machine.
After every case the server still answers and its peak resident memory (the kernel's VmHWM)
stays under 1 GiB.

Cases (issue 18): a deflate bomb; declared frame counts and sizes that the Pixel Data does not
hold, at STOW and at read (an archive indexed by an earlier version holds them); a frame list
repeated 30,000 times; a memory budget smaller than one request; 128 connections trickling
request bodies while another client is served; more connections from one address than its
cap; a 70 KB request head in one read; QIDO values of only separators, long lists and deep
sequence keys. Every loop is bounded in count, and every wait by a timeout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
import requests

from dicomframes.server import Limits
from dicomframes.server.budget import (
    FRAME_LIST_REPEATS,
    MAX_FRAME_LIST,
    MAX_QUERY_VALUES,
    MAX_SEQUENCE_DEPTH,
)
from dicomframes.server.web import Spool
from dicomframes.testing.hostile import (
    CappedServer,
    declared_sizes,
    deflate_bomb,
    image,
    peak_rss,
    rle_two_frames,
    to_bytes,
)

MEMORY_CAP = 3 << 30
PEAK_BOUND = 1 << 30
WAIT = 20.0
DICOM = {"Content-Type": "application/dicom", "Accept": "application/dicom+json"}
LIMITS = Limits(memory_budget=48 << 20, memory_wait=0.5, body_grace=5.0, header_timeout=3.0,
                connections_per_client=32, max_connections=256)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CappedServer]:
    folder = tmp_path_factory.mktemp("hostile")
    with CappedServer(folder, LIMITS, memory_cap=MEMORY_CAP) as running:
        yield running


def store(server: CappedServer, data: bytes) -> requests.Response:
    return requests.post(server.url + "/studies", data=data, headers=DICOM, timeout=120)


def healthy(server: CappedServer) -> None:
    """The server lives, answers, and never held more than PEAK_BOUND."""
    assert server.running, server.stderr()
    answer = requests.get(server.url + "/studies", headers={"Accept": "application/dicom+json"},
                          timeout=WAIT)
    assert answer.status_code == 200
    peak = peak_rss(server.pid)
    assert peak < PEAK_BOUND, f"the server's resident memory peaked at {peak >> 20} MiB"


def instance_url(server: CappedServer, data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


# -- cost of what a request carries --------------------------------------------------------


def test_deflate_bomb_is_refused_at_stow_naming_the_cap(server: CappedServer) -> None:
    bomb = deflate_bomb()
    assert len(bomb) < 1 << 20  # 600 MiB of zeros in under a megabyte
    answer = store(server, bomb)
    assert answer.status_code == 409, answer.text
    assert "256 MiB" in answer.headers["Warning"] and "max_inflated" in answer.headers["Warning"]
    assert answer.json()["00081198"]["Value"]  # FailedSOPSequence
    healthy(server)


def test_small_deflated_file_is_stored_inflated_once(server: CappedServer) -> None:
    data = to_bytes(image(8, 8, transfer_syntax=pydicom.uid.DeflatedExplicitVRLittleEndian))
    assert store(server, data).status_code == 200
    stored = requests.get(instance_url(server, data), timeout=WAIT,
                          headers={"Accept": "application/dicom; transfer-syntax=*"})
    ds = pydicom.dcmread(io.BytesIO(stored.content))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.pixel_array.tolist() == pydicom.dcmread(io.BytesIO(data)
                                                      ).pixel_array.tolist()
    healthy(server)


@pytest.mark.parametrize("case", ["two_billion_frames", "zero_rows", "fifty_million_frames"])
def test_declared_sizes_the_pixel_data_does_not_hold_are_refused_at_stow(
        server: CappedServer, case: str) -> None:
    answer = store(server, declared_sizes()[case])
    assert answer.status_code == 409, answer.text
    warning = answer.headers["Warning"]
    assert ("NumberOfFrames" in warning) if case != "zero_rows" else ("Rows" in warning)
    healthy(server)


def test_import_applies_the_same_checks(tmp_path: Path) -> None:
    """``dicomframes import`` parses files as STOW does: hostile files fail, named."""
    from dicomframes.server import import_folder

    source = tmp_path / "source"
    source.mkdir()
    (source / "bomb.dcm").write_bytes(deflate_bomb())
    for case, data in declared_sizes().items():
        (source / f"{case}.dcm").write_bytes(data)
    (source / "fine.dcm").write_bytes(to_bytes(image(4, 4)))
    outcome = import_folder(source, tmp_path / "archive").set_index("source")
    status = {Path(name).stem: row.status for name, row in outcome.iterrows()}
    assert status == {"bomb": "failed", "two_billion_frames": "failed", "zero_rows": "failed",
                      "fifty_million_frames": "failed", "fine": "stored"}
    message = outcome.loc[str(source / "bomb.dcm"), "message"]
    assert "max_inflated" in message


def _declare(folder: Path, sop: str, frames: int | None = None, rows: int | None = None) -> None:
    """Make the index hold what an earlier version stored for a hostile file: the declared
    frame count (or Rows), and a layout read through the parser."""
    db = sqlite3.connect(folder / "index.sqlite3", timeout=30)
    try:
        (data_id, pixels, metadata), = db.execute(
            "SELECT d.id, d.pixels, d.metadata FROM instances i JOIN instance_data d "
            "ON d.id = i.id WHERE i.SOPInstanceUID = ?", (sop,)).fetchall()
        layout, meta = json.loads(pixels), json.loads(metadata)
        layout["kind"] = "opaque"
        if frames is not None:
            layout["frames"] = frames
            meta["00280008"] = {"vr": "IS", "Value": [frames]}
        if rows is not None:
            meta["00280010"] = {"vr": "US", "Value": [rows]}
        with db:
            db.execute("UPDATE instance_data SET pixels = ?, metadata = ? WHERE id = ?",
                       (json.dumps(layout), json.dumps(meta), data_id))
    finally:
        db.close()


READS = ["/thumbnail", "/rendered", "/frames/1", "/frames/1/rendered",
         "/bulkdata/7FE00010", "SERIES/thumbnail", "SERIES/rendered"]


@pytest.mark.parametrize("declared", [{"frames": 2_147_483_647}, {"rows": 0},
                                      {"frames": 50_000_000}], ids=str)
def test_read_path_never_trusts_declared_sizes(server: CappedServer,
                                               declared: dict[str, Any]) -> None:
    ds = image(1, 1)
    data = to_bytes(ds)
    assert store(server, data).status_code == 200
    _declare(server.folder, str(ds.SOPInstanceUID), **declared)
    url = instance_url(server, data)
    series_url = url.rsplit("/instances/", 1)[0]
    for read in READS:
        target = series_url + read[len("SERIES"):] if read.startswith("SERIES") else url + read
        answer = requests.get(target, timeout=WAIT, headers={"Accept": "*/*"})
        assert 400 <= answer.status_code < 500, (read, answer.status_code, answer.text)
        if not read.startswith("SERIES"):
            assert "NumberOfFrames" in answer.text or "Rows" in answer.text, answer.text
    healthy(server)


def test_repeated_frame_lists_are_limited(server: CappedServer) -> None:
    data = rle_two_frames()
    assert store(server, data).status_code == 200
    url = instance_url(server, data) + "/frames/"
    accept = {"Accept": "multipart/related; type=\"application/octet-stream\""}
    huge = requests.get(url + ",".join(["1"] * 30_000), headers=accept, timeout=WAIT)
    assert huge.status_code == 400 and str(MAX_FRAME_LIST) in huge.text
    many = requests.get(url + ",".join(["2"] * (FRAME_LIST_REPEATS + 1)), headers=accept,
                        timeout=WAIT)
    assert many.status_code == 400 and f"at most {FRAME_LIST_REPEATS}" in many.text
    for frames in ("1,2", "2,2", "1,1,1"):
        answer = requests.get(url + frames, headers=accept, timeout=WAIT)
        assert answer.status_code == 200, answer.text
        parts = answer.content.count(b"Content-Type: application/octet-stream")
        assert parts == frames.count(",") + 1
    healthy(server)


def test_spool_holds_one_file_however_many_parts() -> None:
    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting open files needs /proc")
    spool = Spool(memory=10)
    before = descriptors()
    parts = [spool.add(bytes([n % 256]) * 100) for n in range(2000)]
    assert descriptors() - before <= 1
    assert [p.read() for p in parts[:3]] == [bytes([n]) * 100 for n in range(3)]
    spool.close()
    assert descriptors() <= before


def test_memory_budget_refuses_what_it_cannot_hold_and_sheds_load(server: CappedServer) -> None:
    large, medium = image(2048, 2048), image(1024, 1024)
    for ds in (large, medium):
        assert store(server, to_bytes(ds)).status_code == 200
    too_big = requests.get(instance_url(server, to_bytes(large)) + "/rendered", timeout=WAIT,
                           headers={"Accept": "image/png"})
    assert too_big.status_code == 413 and "memory budget" in too_big.text
    url = instance_url(server, to_bytes(medium)) + "/rendered"
    answers: list[requests.Response] = []

    def render() -> None:
        answers.append(requests.get(url, headers={"Accept": "image/png"}, timeout=WAIT))

    threads = [threading.Thread(target=render) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 6 and {a.status_code for a in answers} <= {200, 503}
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 503)
    assert any(a.status_code == 200 for a in answers)
    healthy(server)


# -- slow and many connections ---------------------------------------------------------------


def _address(server: CappedServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _open(server: CappedServer, source: str) -> socket.socket:
    return socket.create_connection(_address(server), timeout=WAIT, source_address=(source, 0))


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes (bounded by the socket timeout)."""
    data = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_trickling_bodies_do_not_deny_service(server: CappedServer) -> None:
    head = (b"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom\r\n"
            b"Accept: application/dicom+json\r\nContent-Length: 1000000\r\n\r\n")
    sources = [f"127.0.0.{n}" for n in range(2, 6)]  # 4 addresses x 32 connections
    tricklers = [_open(server, source) for source in sources for _ in range(32)]
    try:
        for sock in tricklers:
            sock.sendall(head + b"x")
        served = []
        with requests.Session() as client:  # the well-behaved client, from 127.0.0.1
            for _ in range(20):
                answer = client.get(server.url + "/studies", timeout=WAIT,
                                    headers={"Accept": "application/dicom+json"})
                served.append(answer.status_code)
                for sock in tricklers[:8]:  # a byte now and then keeps them trickling
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
        assert served == [200] * 20
        # after the grace period the tricklers are cut off: too slow on average
        endings = [_answer(sock)[:12] for sock in tricklers]
        assert sum(e == b"HTTP/1.1 408" for e in endings) >= len(tricklers) * 3 // 4, endings
    finally:
        for sock in tricklers:
            sock.close()
    healthy(server)


def test_connections_per_address_are_capped(server: CappedServer) -> None:
    held = [_open(server, "127.0.0.9") for _ in range(LIMITS.connections_per_client + 8)]
    try:
        time.sleep(0.5)  # let the server accept them all
        refused = 0
        for sock in held:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                if sock.recv(12) == b"HTTP/1.1 503":
                    refused += 1
        assert refused == 8
        assert requests.get(server.url + "/studies", timeout=WAIT,
                            headers={"Accept": "application/dicom+json"}).status_code == 200
    finally:
        for sock in held:
            sock.close()
    healthy(server)


def test_head_larger_than_the_limit_in_one_read_is_refused(server: CappedServer) -> None:
    head = (b"GET /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 +
            b"\r\n\r\n")
    with _open(server, "127.0.0.1") as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        assert _answer(sock).startswith(b"HTTP/1.1 400")
    healthy(server)


# -- QIDO ----------------------------------------------------------------------------------

SEPARATORS = ["/series?Modality=%5C", "/series?Modality=,", "/series?PatientSex=%5C",
              "/series?BodyPartExamined=,", "/studies?ModalitiesInStudy=%5C",
              "/studies?StudyInstanceUID=,"]


@pytest.mark.parametrize("query", SEPARATORS)
def test_qido_values_of_only_separators_are_a_400_naming_the_parameter(
        server: CappedServer, query: str) -> None:
    answer = requests.get(server.url + query, timeout=WAIT,
                          headers={"Accept": "application/dicom+json"})
    assert answer.status_code == 400
    assert query.split("?")[1].split("=")[0] in answer.text


@pytest.mark.parametrize("query, limit", [
    ("/studies?ModalitiesInStudy=" + ",".join(["CT"] * 1000), MAX_QUERY_VALUES),
    ("/series?Modality=" + "%5C".join(["MR"] * 1000), MAX_QUERY_VALUES),
    ("/studies?fuzzymatching=true&PatientName=" + "+".join(["ab"] * 1000), MAX_QUERY_VALUES),
    ("/instances?" + ".".join(["ReferencedImageSequence"] * 62) + ".ReferencedSOPInstanceUID=1",
     MAX_SEQUENCE_DEPTH),
], ids=["list", "backslash list", "fuzzy words", "deep sequence"])
def test_qido_long_and_deep_queries_are_a_400_naming_the_limit(
        server: CappedServer, query: str, limit: int) -> None:
    answer = requests.get(server.url + query, timeout=WAIT,
                          headers={"Accept": "application/dicom+json"})
    assert answer.status_code == 400, answer.text
    assert f"at most {limit}" in answer.text
    healthy(server)


def test_connection_guard_uses_only_the_public_protocol_of_uvicorn() -> None:
    """The guard holds uvicorn's HTTP/1.1 protocol and calls only asyncio.Protocol methods on
    it: if a uvicorn release changes that, this fails loudly (issue 17)."""
    import asyncio

    from uvicorn.protocols.http.h11_impl import H11Protocol

    from dicomframes.server.connections import GuardedProtocol

    assert not issubclass(GuardedProtocol, H11Protocol)
    for method in ("connection_made", "data_received", "eof_received", "connection_lost",
                   "pause_writing", "resume_writing"):
        assert callable(getattr(H11Protocol, method, None)), method
        assert hasattr(asyncio.Protocol, method)
