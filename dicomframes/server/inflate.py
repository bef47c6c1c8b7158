"""Deflated files are inflated once, when they are stored, with a cap on their inflated size.

A file in the Deflated Explicit VR Little Endian transfer syntax (PS3.5 A.5) is a deflate
stream of an Explicit VR Little Endian data set after an ordinary file meta group. Reading
it with pydicom inflates the whole stream in memory, on every read: a 600 KB upload of zeros
becomes 600 MB each time it is served. So the server rewrites such a file, before it parses
it, as Explicit VR Little Endian: the stream is inflated in chunks (``zlib.decompressobj`` with
``max_length``), first only counted against the cap (nothing is written for a file that is
refused), then written out. Every later read is a seek and a read of the inflated file.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from .budget import size_text

CHUNK = 1 << 20
_PREAMBLE = 128


class InflateError(ValueError):
    """A deflated data set is larger than the cap when inflated, or is not a deflate stream."""


def _inflate(path: Path, offset: int, cap: int, out: object | None) -> int:
    """Inflate the raw deflate stream of ``path`` from ``offset``, chunk by chunk; write it to
    ``out`` (a binary file) when given. Returns the inflated size; InflateError past ``cap``
    or for a corrupt stream."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fp:
        fp.seek(offset)
        while not inflater.eof:
            data = inflater.unconsumed_tail or fp.read(CHUNK)
            if not data:
                break
            try:
                piece = inflater.decompress(data, CHUNK)
            except zlib.error as exc:
                raise InflateError(f"the deflated data set is corrupt: {exc}") from None
            total += len(piece)
            if total > cap:
                raise InflateError(f"the deflated data set inflates to more than "
                                   f"{size_text(cap)}, the server's cap for deflated data "
                                   "(max_inflated)")
            if out is not None:
                out.write(piece)  # type: ignore[attr-defined]
    if out is not None:
        out.write(inflater.flush())  # type: ignore[attr-defined]
    return total


def inflate_if_deflated(path: Path, cap: int) -> bool:
    """Rewrite ``path`` as Explicit VR Little Endian when it is deflated (True), within
    ``cap`` inflated bytes (InflateError past it); False for any other file, untouched."""
    with open(path, "rb") as fp:
        head = fp.read(_PREAMBLE + 4)
    if len(head) < _PREAMBLE + 4 or head[_PREAMBLE:] != b"DICM":
        return False
    try:
        meta = read_file_meta_info(path)
    except Exception:  # not readable as a file meta group: the parser says why later
        return False
    if str(meta.get("TransferSyntaxUID", "")) != DeflatedExplicitVRLittleEndian:
        return False
    group_length = meta.get("FileMetaInformationGroupLength")
    if not isinstance(group_length, int):
        raise InflateError("the file meta information of a deflated file has no group length")
    # after the preamble, "DICM" and the group length element (8 bytes of header, 4 of value)
    offset = _PREAMBLE + 4 + 12 + group_length
    _inflate(path, offset, cap, None)  # counted first: a refused file writes nothing
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    temp = path.with_name(path.name + ".inflated")
    try:
        with open(temp, "wb") as out:
            out.write(head[:_PREAMBLE] + b"DICM")
            writer = DicomFileLike(out)
            writer.is_little_endian = True
            writer.is_implicit_VR = False
            write_file_meta_info(writer, meta, enforce_standard=True)
            _inflate(path, offset, cap, out)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return True
