"""Hostile inputs for a DICOMweb server, and the embedded server in a memory-capped child
process to try them on (the regression tests and ``benchmarks/hostile.py`` share them).

The files are made with pydicom: a deflate bomb (a small Deflated Transfer Syntax file whose
private OB value inflates to hundreds of MiB), files declaring more frames or larger frames
than their Pixel Data holds, a 2-frame RLE instance for repeated frame lists. The server runs
under an address-space limit (``RLIMIT_AS``), so that a runaway allocation fails the request
instead of the machine, and :func:`peak_rss` reads how much memory it ever held.

>>> with CappedServer(folder) as server:                     # doctest: +SKIP
...     requests.post(server.url + "/studies", data=deflate_bomb(), headers=...)
...     assert peak_rss(server.pid) < 1 << 30
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from ..server.budget import Limits

__all__ = ["CappedServer", "declared_sizes", "deflate_bomb", "image", "peak_rss",
           "rle_two_frames", "to_bytes"]

MiB = 1 << 20


def image(rows: int = 4, columns: int = 4, *, frames: int = 1, bits: int = 16,
          study: str | None = None, series: str | None = None,
          transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """A greyscale Secondary Capture instance with a ramp of pixels, new UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Hostile^Input", "HOSTILE", "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames != 1:
        ds.NumberOfFrames = frames
    dtype = np.uint8 if bits == 8 else np.uint16
    count = rows * columns * frames
    ds.PixelData = (np.arange(count) % 251).astype(dtype).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """``ds`` as a Part-10 file (deflated when its transfer syntax says so)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _explicit_le(ds: Dataset) -> bytes:
    """The elements of ``ds`` in Explicit VR Little Endian (no preamble, no file meta)."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def deflate_bomb(inflated: int = 600 * MiB) -> bytes:
    """A Deflated Explicit VR Little Endian file of about ``inflated / 1000`` bytes whose
    private OB value of zeros inflates to ``inflated`` bytes (600 MiB: a 612 KB upload).

    Made in milliseconds: after a full flush a deflater starts afresh, so one MiB of zeros
    deflated once is repeated as a block (a valid deflate stream of many blocks)."""
    ds = image(transfer_syntax=DeflatedExplicitVRLittleEndian)
    pixels = Dataset()
    pixels.PixelData = ds.PixelData
    pixels["PixelData"].VR = "OW"
    del ds.PixelData
    ds.add_new(0x00990010, "LO", "HOSTILE")
    value_header = struct.pack("<HH2sHI", 0x0099, 0x1001, b"OB", 0, inflated)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflater.compress(_explicit_le(ds) + value_header) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(bytes(MiB)) + deflater.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(inflated, MiB)
    tail = deflater.compress(bytes(rest) + _explicit_le(pixels)) + deflater.flush()
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + meta.getvalue() + head + block * whole + tail


def declared_sizes() -> dict[str, bytes]:
    """Files whose declared sizes their Pixel Data does not hold, by case: two billion
    frames of 2 bytes of pixel data, Rows 0 with empty Pixel Data, fifty million frames."""
    huge = image(1, 1)
    huge.NumberOfFrames = 2_147_483_647
    huge.PixelData = b"\0\0"
    empty = image(1, 1)
    empty.Rows = 0
    empty.PixelData = b""
    fifty = image(1, 1, bits=8)
    fifty.NumberOfFrames = 50_000_000
    fifty.PixelData = b"\0\0"
    return {"two_billion_frames": to_bytes(huge), "zero_rows": to_bytes(empty),
            "fifty_million_frames": to_bytes(fifty)}


def rle_two_frames(side: int = 64) -> bytes:
    """A 2-frame RLE Lossless instance (frames decoded on request)."""
    ds = image(side, side, frames=2)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return to_bytes(ds)


def peak_rss(pid: int) -> int:
    """The most resident memory process ``pid`` ever held (bytes; Linux ``VmHWM``), else its
    resident memory now (psutil)."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


_CHILD = """\
import json, resource, sys
from dicomframes.server import Limits, serve
cap = int(sys.argv[3])
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
with serve(sys.argv[1], parse_workers=0, limits=Limits(**json.loads(sys.argv[2]))) as server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


class CappedServer:
    """:func:`dicomframes.serve` on ``folder`` in a child process whose address space is
    capped at ``memory_cap`` bytes (0: no cap; the cap is set in the child, before the
    server starts), with ``limits``; ``url`` and ``pid`` once it listens, ``folder`` the
    archive's. Parses in the
    request's thread (no parser processes), so that all the work shows in its memory."""

    def __init__(self, folder: str | os.PathLike[str], limits: Limits | None = None, *,
                 memory_cap: int = 3 << 30) -> None:
        self.folder = Path(folder)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        options = json.dumps(asdict(limits or Limits()))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(folder), options, str(int(memory_cap))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the capped server did not start: {line!r} {self.stderr()}")
        self.url = line
        self.pid = self.process.pid

    def stderr(self) -> str:
        """What the server wrote on stderr so far (the last 4,000 characters)."""
        if self.log.closed:
            return ""
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-4000:]

    @property
    def running(self) -> bool:
        """True while the child process lives."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server (closing its stdin; killed after 30 s)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()

    def __enter__(self) -> CappedServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

