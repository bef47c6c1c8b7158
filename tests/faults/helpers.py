"""The embedded server as a child process that a test can kill -9, and the checks made after.

A server is started with ``python -m dicomframes serve --data DIR --port 0`` (it prints its URL,
always on 127.0.0.1) and killed with SIGKILL: nothing in the server gets a chance to clean up,
as after a power cut of the process. :func:`check_archive` then compares the index with the
files, independently of dicomframes (plain ``sqlite3`` and ``os``).
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from dicomframes.standard.multipart import encode, new_boundary, related_content_type

DICOM_JSON = "application/dicom+json"
ANY_TS = "application/dicom; transfer-syntax=*"


class ServerProcess:
    """``dicomframes serve`` on ``folder`` in a child process; ``url`` once started."""

    def __init__(self, folder: Path, *extra: str, env: dict[str, str] | None = None,
                 command: Sequence[str] | None = None) -> None:
        """``command``: what runs in place of ``python -m dicomframes serve`` (the options
        ``--data``, ``--port`` and ``extra`` follow it)."""
        self.folder = folder
        # stderr goes to a file: a pipe nobody reads would block a server that logs a lot
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        prefix = list(command or [sys.executable, "-m", "dicomframes", "serve"])
        self.process = subprocess.Popen(
            [*prefix, "--data", str(folder), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, **(env or {})})
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "http://127.0.0.1:" not in line:
            self.process.kill()
            self.process.communicate(timeout=30)
            raise AssertionError(f"the server did not start: {line!r} {self.stderr()[-2000:]}")
        self.url = next(w for w in line.split() if w.startswith("http://")).rstrip(",;")

    def stderr(self) -> str:
        """What the server wrote on stderr so far."""
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    @property
    def pid(self) -> int:
        """The server process's id."""
        return self.process.pid

    def kill9(self) -> None:
        """SIGKILL the server and wait for it to be gone."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the server as Ctrl+C does (SIGKILL if it does not stop within 20 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.process.communicate()
        self.log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass(frozen=True)
class Row:
    """One index row: the instance's UIDs, its file (relative to the archive) and size."""

    study: str
    series: str
    sop: str
    path: str
    size: int


def index_rows(folder: Path) -> dict[str, Row]:
    """The index's instances by SOPInstanceUID (read with plain sqlite3, WAL-safe)."""
    db = sqlite3.connect(f"file:{folder / 'index.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, path, "
                          "size FROM instances").fetchall()
    finally:
        db.close()
    return {r[2]: Row(*r) for r in rows}


def files_on_disk(folder: Path) -> set[str]:
    """Every file under ``files/``, relative to the archive folder."""
    out = set()
    for dirpath, _dirs, names in os.walk(folder / "files"):
        for name in names:
            out.add((Path(dirpath) / name).relative_to(folder).as_posix())
    return out


def check_archive(folder: Path) -> dict[str, Row]:
    """Index against files: every row's file exists with the indexed size, no file is left
    without a row, no SOPInstanceUID twice. Returns the rows."""
    rows = index_rows(folder)
    on_disk = files_on_disk(folder)
    problems = []
    for row in rows.values():
        path = folder / row.path
        if not path.is_file():
            problems.append(f"indexed but missing: {row.path}")
        elif path.stat().st_size != row.size:
            problems.append(f"size {path.stat().st_size} != indexed {row.size}: {row.path}")
    unindexed = on_disk - {r.path for r in rows.values()}
    problems += [f"file without an index row: {p}" for p in sorted(unindexed)]
    assert not problems, f"{len(problems)} problems, e.g. {problems[:5]}"
    return rows


@dataclass(frozen=True)
class Instance:
    """A Part-10 file in memory and its UIDs."""

    study: str
    series: str
    sop: str
    data: bytes


_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root; 26 + 36 digits = 62 characters


def fixed_uid() -> str:
    """A new random UID of exactly 62 characters (so it can replace a placeholder in bytes)."""
    return _UID_ROOT + str(10**35 + secrets.randbelow(9 * 10**35))


def _template(side: int) -> tuple[bytes, tuple[str, str, str]]:
    placeholders = tuple(_UID_ROOT + str(d) * 36 for d in (1, 2, 3))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = placeholders
    ds.PatientName, ds.PatientID = "Fault^Injection", "FAULT1"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20240102", "101500", "OT"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = side, side, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    size = side * side * 2
    ds.PixelData = (bytes(range(256)) * (size // 256 + 1))[:size]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), placeholders  # type: ignore[return-value]


def make_study(count: int, per_series: int = 300, side: int = 4) -> list[Instance]:
    """``count`` instances of a new study, ``per_series`` to a series, each a ``side`` x
    ``side`` uint16 image (4 x 4: about 800 bytes a file; 128 x 128: 33 kB).

    ``support.make_instances`` writes each file with pydicom (a few thousand take seconds and
    it stops at 655); here one file is written and copied with new 62-character UIDs put in
    place of its placeholders, which takes microseconds per instance.
    """
    template, (p_study, p_series, p_sop) = _template(side)
    study = fixed_uid()
    out: list[Instance] = []
    series = fixed_uid()
    for n in range(count):
        if n and n % per_series == 0:
            series = fixed_uid()
        sop = fixed_uid()
        data = template.replace(p_study.encode(), study.encode()).replace(
            p_series.encode(), series.encode()).replace(p_sop.encode(), sop.encode())
        out.append(Instance(study, series, sop, data))
    return out


def stow(url: str, items: Sequence[bytes | Instance], *, timeout: float = 60,
         session: requests.Session | None = None) -> requests.Response:
    """POST Part-10 files (bytes) as one multipart/related STOW-RS request to /studies."""
    boundary = new_boundary()
    parts = [({"Content-Type": "application/dicom"}, i.data if isinstance(i, Instance) else i)
             for i in items]
    body = b"".join(encode(parts, boundary))
    return (session or requests).post(
        f"{url}/studies", data=body, timeout=timeout,
        headers={"Content-Type": related_content_type(boundary, "application/dicom"),
                 "Accept": DICOM_JSON})


def referenced(answer: dict) -> list[str]:
    """ReferencedSOPInstanceUIDs of a STOW answer."""
    items = (answer.get("00081199") or {}).get("Value") or []
    return [item["00081155"]["Value"][0] for item in items]


def failure_reasons(answer: dict) -> list[int]:
    """FailureReason values of a STOW answer's FailedSOPSequence."""
    items = (answer.get("00081198") or {}).get("Value") or []
    return [item.get("00081197", {}).get("Value", [None])[0] for item in items]


def retrieve(url: str, study: str, series: str, sop: str, *,
             session: requests.Session | None = None) -> requests.Response:
    """GET one instance as stored (any transfer syntax)."""
    return (session or requests).get(
        f"{url}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": ANY_TS}, timeout=60)


def check_retrievable(url: str, sent: dict[str, Instance], which: Iterable[str]) -> int:
    """Every SOPInstanceUID in ``which`` is retrieved byte-identical to what was sent."""
    count = 0
    with requests.Session() as session:
        for sop in which:
            item = sent[sop]
            got = retrieve(url, item.study, item.series, sop, session=session)
            assert got.status_code == 200, (sop, got.status_code, got.text[:200])
            assert got.content == item.data, \
                f"{sop}: {len(got.content)} bytes, sent {len(item.data)}"
            count += 1
    return count


def report(what: str, **figures: object) -> None:
    """Print one line of figures (shown with ``pytest -s``)."""
    print(f"\n[{what}] " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
