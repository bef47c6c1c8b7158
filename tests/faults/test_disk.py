"""A full disk and a read-only archive, on a small tmpfs mounted for the test (needs root: CI
runs the tests as root; elsewhere they are skipped).

A full disk must give a DICOM-aware refusal (507, or 409/202 naming "out of resources" 0xA700
in the FailedSOPSequence) with a message saying the disk is full, never a 500; nothing
acknowledged before is lost, and reads go on. A server is not started on a read-only archive:
one clear line, and the archive is left intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import require

from .helpers import (
    DICOM_JSON,
    Instance,
    ServerProcess,
    check_archive,
    check_retrievable,
    failure_reasons,
    make_study,
    referenced,
    report,
    stow,
)

OUT_OF_RESOURCES = 0xA700


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs mounted on a fresh folder, unmounted (and removed) afterwards."""
    require(hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None,
            "root (to mount a small tmpfs)", "run the tests as root, as CI does")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mountpoint))
    assert done.returncode == 0, f"mount -t tmpfs failed: {done.stderr}"
    try:
        yield mountpoint
    finally:
        if _run("umount", str(mountpoint)).returncode != 0:
            _run("umount", "-l", str(mountpoint))


def _refusal(answer: requests.Response) -> str:
    """Check a STOW refusal for lack of space or a read-only disk; returns its message."""
    assert answer.status_code != 500, f"a bare 500: {answer.text[:300]}"
    assert answer.status_code in (202, 409, 507), (answer.status_code, answer.text[:300])
    message = f"{answer.headers.get('Warning', '')} {answer.text}"
    if answer.headers.get("Content-Type", "").startswith(DICOM_JSON):
        assert OUT_OF_RESOURCES in failure_reasons(answer.json()), answer.text[:300]
    else:
        assert answer.status_code == 507, answer.status_code
    return message.lower()


def _reads_work(url: str, sent: dict[str, Instance], acked: set[str]) -> None:
    found = requests.get(f"{url}/instances", headers={"Accept": DICOM_JSON}, timeout=60)
    assert found.status_code == 200, found.status_code
    assert {o["00080018"]["Value"][0] for o in found.json()} >= acked
    check_retrievable(url, sent, acked)


def test_full_disk_refuses_stow_and_loses_nothing(small_disk: Path) -> None:
    data = small_disk / "archive"
    items = [i for _ in range(3) for i in make_study(100, per_series=50, side=128)]  # ~10 MB
    sent = {i.sop: i for i in items}
    acked: set[str] = set()
    refusal: requests.Response | None = None
    tried = 0
    with ServerProcess(data) as server:
        for start in range(0, len(items), 10):
            answer = stow(server.url, items[start : start + 10])
            tried += 1
            if answer.status_code == 200:
                acked.update(referenced(answer.json()))
                continue
            if answer.status_code == 202:
                acked.update(referenced(answer.json()))
            refusal = answer
            break
        assert refusal is not None, "8 MB took 10 MB of instances"
        message = _refusal(refusal)
        assert "full" in message, message
        # the refusal is not a one-off: a second try is refused the same way, not a crash
        again = stow(server.url, items[-10:])
        assert "full" in _refusal(again)
        _reads_work(server.url, sent, acked)
    report("full disk", requests=tried + 1, acknowledged=len(acked),
           refusal=f"{refusal.status_code} {refusal.headers.get('Warning', '')}")
    with ServerProcess(data) as server:  # a restart on the full disk loses nothing either
        rows = check_archive(data)
        assert acked <= set(rows)
        _reads_work(server.url, sent, acked)


def test_read_only_archive_is_refused_in_one_line_and_left_intact(small_disk: Path) -> None:
    """A server is not started on a read-only archive: it could not repair its index nor keep
    a write-ahead log there. It says so in one line naming the folder (no traceback), and the
    archive is left as it was: once the disk is writable again every acknowledged instance is
    served. (A disk that turns read-only under a running server is refused per request with
    507 and "read-only": tests/server/test_limits.py.)"""
    data = small_disk / "archive"
    first = make_study(20)
    sent = {i.sop: i for i in first}
    with ServerProcess(data) as server:
        answer = stow(server.url, first)
        assert answer.status_code == 200, answer.text
        acked = set(referenced(answer.json()))
    done = _run("mount", "-o", "remount,ro", str(small_disk))
    assert done.returncode == 0, done.stderr
    try:
        refused = _run(sys.executable, "-m", "dicomframes", "serve", "--data", str(data),
                       "--port", "0")
        report("read-only archive", exit=refused.returncode, message=refused.stderr.strip())
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr, refused.stderr[-2000:]
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, refused.stderr
        assert str(data) in lines[0] and "written" in lines[0], lines[0]
    finally:
        assert _run("mount", "-o", "remount,rw", str(small_disk)).returncode == 0
    with ServerProcess(data) as server:
        _reads_work(server.url, sent, acked)
