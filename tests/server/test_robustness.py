"""Robustness: concurrent stores, a kill -9 in the middle of a STOW, the request size limit."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomframes import samples
from dicomframes.server import serve

from .server_helpers import (
    DICOM_JSON,
    failure_reasons,
    instance_url,
    multipart_body,
    referenced,
    stow,
    uids_of,
)


def _index(folder: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(folder / "index.sqlite3") as db:
        return db.execute("SELECT SOPInstanceUID, path FROM instances").fetchall()


def _check_consistent(folder: Path) -> None:
    """Every index row has its file and every file its row; nothing left in tmp/."""
    rows = _index(folder)
    on_disk = {p.relative_to(folder).as_posix() for p in (folder / "files").rglob("*.dcm")}
    assert {path for _, path in rows} == on_disk
    assert len(rows) == len({sop for sop, _ in rows})
    assert not [p for p in (folder / "tmp").rglob("*") if not p.is_dir()]


def test_threads_storing_the_same_instance_store_it_once(server, tutorial_files) -> None:
    barrier = threading.Barrier(8)
    results: list[requests.Response] = []

    def worker() -> None:
        barrier.wait()
        results.append(stow(server.url, tutorial_files[:1]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [409] * 7
    for r in results:
        if r.status_code == 409:
            assert failure_reasons(r.json()) == [45070]
    _check_consistent(Path(server.path))
    assert len(_index(Path(server.path))) == 1


def test_threads_storing_overlapping_sets_lose_and_duplicate_nothing(server, tmp_path) -> None:
    files = samples.write_archive(tmp_path / "archive", patients=2, seed=3)
    groups = [files[i::4] for i in range(4)]
    groups += [files[: len(files) // 2], files[len(files) // 2 :]]  # overlaps the first four
    barrier = threading.Barrier(len(groups))
    stored: list[str] = []
    failed: list[int] = []
    lock = threading.Lock()

    def worker(group: list[Path]) -> None:
        barrier.wait()
        for start in range(0, len(group), 5):
            answer = stow(server.url, group[start : start + 5])
            assert answer.status_code in (200, 202, 409), answer.text
            with lock:
                stored.extend(referenced(answer.json()))
                failed.extend(failure_reasons(answer.json()))

    threads = [threading.Thread(target=worker, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sorted(uids_of(p)[2] for p in files)
    assert sorted(stored) == expected  # each instance reported stored exactly once
    assert set(failed) <= {45070} and len(failed) == len(files)
    found = requests.get(f"{server.url}/instances", headers={"Accept": DICOM_JSON}).json()
    assert sorted(o["00080018"]["Value"][0] for o in found) == expected
    _check_consistent(Path(server.path))
    for path in files[::17]:
        got = requests.get(instance_url(server.url, path),
                           headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert got.content == path.read_bytes()


def test_request_size_limit_is_413(tmp_path) -> None:
    small = get_testdata_file("CT_small.dcm")
    data = Path(small).read_bytes() * 3  # about 120 kB
    with serve(tmp_path / "archive", max_request_bytes=100_000) as server:
        answer = stow(server.url, [data])  # with Content-Length
        assert answer.status_code == 413
        assert "100000" in answer.text

        def chunks():  # no Content-Length: chunked transfer encoding
            for i in range(0, len(data), 65536):
                yield data[i : i + 65536]

        answer = requests.post(f"{server.url}/studies", data=chunks(),
                               headers={"Content-Type": "application/dicom"})
        assert answer.status_code == 413
        assert stow(server.url, [small]).status_code == 200
        assert not [p for p in (Path(server.path) / "tmp").rglob("*") if not p.is_dir()]
        assert [sop for sop, _ in _index(Path(server.path))] == [uids_of(small)[2]]


def _start_cli(folder: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomframes", "serve", "--data", str(folder), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "http://127.0.0.1:" in line, (line, process.stderr.read() if process.stderr else "")
    url = next(word for word in line.split() if word.startswith("http://"))
    return process, url


def _new_instance(folder: Path, name: str) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_kill_9_during_stow_leaves_index_and_files_consistent(tmp_path, tutorial_files) -> None:
    data = tmp_path / "archive"
    process, url = _start_cli(data)
    try:
        assert stow(url, tutorial_files[:2]).status_code == 200
        # a large STOW whose body stops half way: the server is killed while receiving it
        big = [_new_instance(tmp_path, f"big{i}.dcm") for i in range(3)]
        body = multipart_body([tutorial_files[2].read_bytes()] * 8 +
                              [p.read_bytes() for p in big], "killme")
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(b"POST /studies HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: multipart/related; type=\"application/dicom\"; "
                         b"boundary=killme\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode()
                         + body[: len(body) // 2])
            deadline = time.monotonic() + 10
            while not any((data / "tmp").rglob("*.upload")):
                if time.monotonic() > deadline:  # a hang guard, not a speed check
                    pytest.fail("the upload never reached the disk")
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert any((data / "tmp").rglob("*.upload"))  # the interrupted upload is still there

    # other leftovers, made by hand (no journal names them, so start-up does not look: the
    # full comparison does): a file in place without its row, a row whose file is gone, a
    # half-written temporary file (start-up removes it)
    orphan = _new_instance(tmp_path, "orphan.dcm")
    study, series, sop = uids_of(orphan)
    target = data / "files" / study / series / f"{sop}.dcm"
    target.parent.mkdir(parents=True)
    shutil.copy(orphan, target)
    lost = uids_of(tutorial_files[1])
    next((data / "files").rglob(f"{lost[2]}.dcm")).unlink()
    (data / "tmp" / "half.part").write_bytes(b"DICM" * 100)
    junk = data / "files" / "1.2.3" / "1.2.4" / "1.2.5.dcm"  # no row, and not DICOM
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not a DICOM file")
    checked = subprocess.run([sys.executable, "-m", "dicomframes", "check", "--data", str(data),
                              "--repair", "--quiet"], capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert "1 missing" in checked.stdout and "2 unindexed" in checked.stdout, checked.stdout

    process, url = _start_cli(data)
    try:
        _check_consistent(data)
        assert not junk.exists()
        assert (data / "rejected" / "files" / "1.2.3" / "1.2.4" / "1.2.5.dcm").read_bytes() == \
            b"not a DICOM file"
        sops = {sop for sop, _ in _index(data)}
        assert sops == {uids_of(tutorial_files[0])[2], uids_of(orphan)[2]}
        for path in (tutorial_files[0], orphan):
            got = requests.get(instance_url(url, path),
                               headers={"Accept": "application/dicom; transfer-syntax=*"})
            assert got.status_code == 200
            assert got.content == path.read_bytes()
        assert requests.get(instance_url(url, tutorial_files[1])).status_code == 404
        found = requests.get(f"{url}/instances", headers={"Accept": DICOM_JSON}).json()
        assert len(found) == 2
        # storing again what was lost or interrupted works
        answer = stow(url, [tutorial_files[1], tutorial_files[2], *big])
        assert answer.status_code == 200, answer.text
        _check_consistent(data)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
