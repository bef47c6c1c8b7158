"""Where the pixel data lies inside a Part-10 file (PS3.5 7.1, A.4): read from a byte stream.

:func:`read_pixel_data_header` reads the Pixel Data element header that follows the data set
(``dcmread(fp, stop_before_pixels=True)`` stops right before it) and says how long its value is
and whether the file holds all of it: the client checks files before uploading them with it.
:func:`locate_pixel_data` goes on to record where each frame lies (native: one offset and the
frame size; encapsulated: the fragments of each frame), so the server can serve a frame with a
seek and a read. Both work on an open binary stream; opening files is the caller's business.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from pydicom.uid import UID

from .dicomjson import first_value
from .pixeldesc import PixelDescription
from .tags import BINARY_VRS, PIXEL_TAGS
from .transfer_syntax import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

if TYPE_CHECKING:
    import pydicom

__all__ = [
    "PixelDataError",
    "PixelDataHeader",
    "PixelLayout",
    "declared_size_problem",
    "frames_in_json",
    "locate_pixel_data",
    "number_of_frames",
    "read_pixel_data_header",
]

_LITTLE_ENDIAN = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
_VR_BYTES = frozenset(vr.encode("ascii") for vr in BINARY_VRS)
_ITEM, _SEQ_END = 0xE000FFFE, 0xE0DDFFFE  # (FFFE,E000) and (FFFE,E0DD) read as little-endian
UNDEFINED_LENGTH = 0xFFFFFFFF


class PixelDataError(ValueError):
    """The pixel data of a file is truncated or malformed."""


@dataclass(frozen=True)
class PixelDataHeader:
    """The Pixel Data element header: its tag, the value's offset in the file and its declared
    length (``UNDEFINED_LENGTH`` for encapsulated data)."""

    tag: int
    value_offset: int
    length: int

    @property
    def encapsulated(self) -> bool:
        """True when the value is a sequence of fragments (undefined length)."""
        return self.length == UNDEFINED_LENGTH

    def shortfall(self, file_size: int) -> int:
        """How many bytes of a defined-length value are missing from a file of ``file_size``."""
        if self.encapsulated:
            return 0
        return max(self.value_offset + self.length - file_size, 0)


def read_pixel_data_header(fp: BinaryIO, transfer_syntax: str,
                           file_size: int) -> PixelDataHeader | None:
    """Read the Pixel Data element header at ``fp``'s position (little endian syntaxes and
    compressed ones; None for others, or when no pixel data element follows).

    Raises :class:`PixelDataError` when the file ends inside the header.
    """
    if transfer_syntax not in _LITTLE_ENDIAN and not UID(transfer_syntax).is_compressed:
        return None  # big endian or deflated: file offsets do not give the value
    start = fp.tell()
    header = fp.read(8)
    if len(header) < 8:
        return None
    group, elem = struct.unpack("<HH", header[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_TAGS:
        return None
    # files that declare one VR encoding and use the other exist (pydicom reads them too)
    if header[4:6] in _VR_BYTES and header[6:8] == b"\0\0":
        extra = fp.read(4)
        if len(extra) < 4:
            raise PixelDataError("truncated DICOM file: it ends inside the Pixel Data element "
                                 "header")
        return PixelDataHeader(tag, start + 12, struct.unpack("<I", extra)[0])
    return PixelDataHeader(tag, start + 8, struct.unpack("<I", header[4:8])[0])


def number_of_frames(ds: pydicom.Dataset) -> int:
    """NumberOfFrames, 1 when absent or unreadable."""
    try:
        value = ds.get("NumberOfFrames")
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def frames_in_json(obj: Mapping[str, Any]) -> int:
    """NumberOfFrames (0028,0008) of a DICOM JSON object, 1 when absent or unreadable."""
    try:
        value = first_value(obj, 0x00280008)
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


@dataclass
class PixelLayout:
    """Where the pixel data of one stored file lies.

    ``kind`` is ``"none"`` (no pixel data), ``"native"`` (uncompressed little endian: frame i is
    ``frame_nbytes`` bytes at ``offset + i * frame_nbytes``), ``"encapsulated"`` (``fragments[i]``
    lists the (offset, length) of frame i's fragments) or ``"opaque"`` (read through pydicom).
    """

    kind: str
    transfer_syntax: str
    frames: int = 0
    tag: int = 0x7FE00010
    offset: int = 0
    length: int = 0
    frame_nbytes: int = 0
    fragments: list[list[tuple[int, int]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (stored in the server's index)."""
        data: dict[str, Any] = {"kind": self.kind, "ts": self.transfer_syntax,
                                "frames": self.frames, "tag": self.tag}
        if self.kind == "native":
            data.update(offset=self.offset, length=self.length, frame_nbytes=self.frame_nbytes)
        elif self.kind == "encapsulated":
            data.update(offset=self.offset, fragments=self.fragments)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PixelLayout:
        """Inverse of :meth:`to_json`."""
        return cls(kind=data["kind"], transfer_syntax=data["ts"], frames=data.get("frames", 0),
                   tag=data.get("tag", 0x7FE00010), offset=data.get("offset", 0),
                   length=data.get("length", 0), frame_nbytes=data.get("frame_nbytes", 0),
                   fragments=[[(int(o), int(n)) for o, n in frame]
                              for frame in data.get("fragments", [])])

    @property
    def is_native(self) -> bool:
        """True when frames are stored uncompressed (whatever the file's transfer syntax)."""
        return self.kind == "native" or not UID(self.transfer_syntax).is_compressed


def _native_frame_nbytes(ds: pydicom.Dataset, metadata: Mapping[str, Any] | None, tag: int,
                         frames: int, length: int) -> int | None:
    """Bytes per native frame that fit the value's ``length``; None when frames are not
    byte-aligned (1-bit) or the description is incomplete."""
    try:
        desc = PixelDescription.from_dataset(ds) if metadata is None \
            else PixelDescription.from_json(metadata)
    except ValueError:
        return None
    if tag != 0x7FE00010:  # Float / Double Float Pixel Data
        desc = desc.with_changes(float_pixels=True, bits_allocated=32 if tag == 0x7FE00008
                                 else 64)
    if desc.bits_allocated == 1:
        return None
    full = desc.frame_pixels * (desc.bits_allocated // 8)
    # PS3.3 C.7.6.3.1.2: native YBR_FULL_422 holds two samples per pixel (Y1 Y2 Cb Cr); some
    # files carry three anyway: take the size that the value holds
    for nbytes in (full, desc.frame_nbytes):
        if nbytes * frames <= length:
            return nbytes
    return None


def locate_pixel_data(fp: BinaryIO, ds: pydicom.Dataset, file_size: int,
                      metadata: Mapping[str, Any] | None = None) -> PixelLayout:
    """Describe the pixel data of the file ``fp``, positioned where ``dcmread(fp,
    stop_before_pixels=True)`` stopped. Raises :class:`PixelDataError` for a truncated value.

    ``metadata``: the DICOM JSON of ``ds`` when the caller has it; the number of frames and the
    pixel description are then read from it rather than from ``ds`` (several times faster:
    pydicom does not decode the elements a second time)."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_VR_LITTLE_ENDIAN))
    if fp.tell() >= file_size:
        return PixelLayout("none", ts)
    frames = number_of_frames(ds) if metadata is None else frames_in_json(metadata)
    if ts not in _LITTLE_ENDIAN and not UID(ts).is_compressed:
        return PixelLayout("opaque", ts, frames)
    header = read_pixel_data_header(fp, ts, file_size)
    if header is None:
        return PixelLayout("none", ts)
    tag, value_offset, length = header.tag, header.value_offset, header.length
    if not header.encapsulated:
        missing = header.shortfall(file_size)
        if missing:
            raise PixelDataError(f"Pixel Data is truncated: {length} bytes declared, "
                                 f"{length - missing} present")
        nbytes = _native_frame_nbytes(ds, metadata, tag, frames, length)
        if nbytes is None:
            return PixelLayout("opaque", ts, frames, tag=tag, offset=value_offset, length=length)
        return PixelLayout("native", ts, frames, tag=tag, offset=value_offset, length=length,
                           frame_nbytes=nbytes)
    fragments, bot = _read_items(fp, value_offset, file_size)
    per_frame = _frames_of(fragments, bot, frames, ds, fp)
    if per_frame is None:
        return PixelLayout("opaque", ts, frames, tag=tag, offset=value_offset)
    return PixelLayout("encapsulated", ts, frames, tag=tag, offset=value_offset,
                       fragments=per_frame)


def _read_items(fp: BinaryIO, offset: int, file_size: int) -> tuple[list[tuple[int, int]],
                                                                    list[int]]:
    """Items of an encapsulated value: (offset, length) of each fragment and the Basic Offset
    Table. Raises PixelDataError when the sequence is truncated."""
    fp.seek(offset)
    items: list[tuple[int, int]] = []
    pos = offset
    while True:
        header = fp.read(8)
        if len(header) < 8:
            raise PixelDataError("encapsulated Pixel Data ends without its sequence delimiter")
        tag, length = struct.unpack("<II", header)
        pos += 8
        if tag == _SEQ_END:
            break
        if tag != _ITEM or length == 0xFFFFFFFF or pos + length > file_size:
            raise PixelDataError("malformed or truncated encapsulated Pixel Data")
        items.append((pos, length))
        fp.seek(length, io.SEEK_CUR)
        pos += length
    if not items:
        raise PixelDataError("encapsulated Pixel Data has no Basic Offset Table item")
    bot_offset, bot_length = items[0]
    bot: list[int] = []
    if bot_length:
        fp.seek(bot_offset)
        raw = fp.read(bot_length)
        bot = list(struct.unpack(f"<{bot_length // 4}I", raw[: bot_length // 4 * 4]))
    return items[1:], bot


def _starts_frame(fp: BinaryIO, offset: int) -> bool:
    fp.seek(offset)
    head = fp.read(4)
    return head[:3] == b"\xff\xd8\xff" or head == b"\xff\x4f\xff\x51" or head[:4] == \
        b"\x00\x00\x00\x0c"


def _frames_of(fragments: list[tuple[int, int]], bot: list[int], frames: int,
               ds: pydicom.Dataset, fp: BinaryIO) -> list[list[tuple[int, int]]] | None:
    """Group fragments into frames (PS3.5 A.4): one frame, Basic or Extended Offset Table, one
    fragment per frame, else split where a JPEG / JPEG 2000 code stream starts."""
    if not fragments:
        return None
    if frames == 1:
        return [fragments]
    first = fragments[0][0] - 8  # offsets count from the first fragment item's tag
    starts: list[int] | None = None
    if len(bot) == frames:
        starts = [first + value for value in bot]
    elif "ExtendedOffsetTable" in ds:
        raw = ds.ExtendedOffsetTable
        values = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
        if len(values) == frames:
            starts = [first + value for value in values]
    if starts is not None:
        result: list[list[tuple[int, int]]] = [[] for _ in range(frames)]
        index = 0
        for frag in fragments:
            while index + 1 < frames and frag[0] - 8 >= starts[index + 1]:
                index += 1
            result[index].append(frag)
        return result if all(result) else None
    if len(fragments) == frames:
        return [[frag] for frag in fragments]
    grouped: list[list[tuple[int, int]]] = []
    for frag in fragments:
        if not grouped or _starts_frame(fp, frag[0]):
            grouped.append([frag])
        else:
            grouped[-1].append(frag)
    return grouped if len(grouped) == frames else None


_ITEM_HEADER = 8  # an encapsulated frame holds at least one item: its tag and length


def declared_size_problem(layout: PixelLayout, metadata: Mapping[str, Any],
                          file_size: int) -> str | None:
    """Why the sizes an instance declares (NumberOfFrames, Rows, Columns, SamplesPerPixel,
    BitsAllocated in ``metadata``, its DICOM JSON) do not fit the pixel data it holds, or None
    when they do. Only arithmetic on the declared numbers: nothing is allocated from them, so
    a file declaring two billion frames costs no more than one declaring one.

    Native data must hold every declared frame; encapsulated data has at least one fragment
    per frame; data read through a parser (big endian, bit-packed, unsplit fragments) cannot
    hold more frames than the file has bytes for."""
    if layout.kind == "none":
        return None
    frames = layout.frames
    if frames < 1:
        return f"NumberOfFrames is {frames}: an image has at least one frame"
    try:
        desc = PixelDescription.from_json(metadata)
    except ValueError as exc:
        return f"the pixel description is unusable: {exc}"
    if layout.tag != 0x7FE00010:
        desc = desc.with_changes(float_pixels=True,
                                 bits_allocated=32 if layout.tag == 0x7FE00008 else 64)
    held = f"the file holds {file_size} bytes"
    if layout.kind == "native":
        if layout.frame_nbytes <= 0 or frames * layout.frame_nbytes > layout.length:
            return (f"NumberOfFrames {frames} of {desc.rows}x{desc.columns}x"
                    f"{desc.samples_per_pixel} at {desc.bits_allocated} bits need "
                    f"{frames * desc.frame_nbytes} bytes; Pixel Data holds {layout.length}")
        return None
    if layout.kind == "encapsulated":
        if len(layout.fragments) != frames:
            return (f"NumberOfFrames is {frames} but the encapsulated Pixel Data holds "
                    f"{len(layout.fragments)} frame(s)")
        return None
    if UID(layout.transfer_syntax).is_compressed:
        if frames * _ITEM_HEADER > file_size:
            return (f"NumberOfFrames is {frames}: encapsulated frames need at least "
                    f"{frames * _ITEM_HEADER} bytes and {held}")
        return None
    need = (frames * desc.frame_pixels * desc.bits_allocated + 7) // 8
    available = layout.length or file_size  # the value's length when it was read
    if need > available:
        return (f"NumberOfFrames {frames} of {desc.rows}x{desc.columns}x"
                f"{desc.samples_per_pixel} at {desc.bits_allocated} bits need {need} bytes; "
                f"{'Pixel Data holds ' + str(available) if layout.length else held}")
    return None
