"""Pixel data inside stored files: where each frame lies, slicing, transcoding and rendering.

At store time :func:`locate_pixel_data` records where the Pixel Data value sits in the file
(native: one offset and the frame size; encapsulated: the fragments of each frame). Serving a
frame is then a seek and a read, without parsing or decoding the file. Frames that cannot be
sliced (big endian, deflated, bit-packed, unusual fragment layouts) fall back to pydicom.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

EXPLICIT_LE = str(ExplicitVRLittleEndian)
IMPLICIT_LE = str(ImplicitVRLittleEndian)
_NATIVE_LE = {EXPLICIT_LE, IMPLICIT_LE}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float-, Double Float Pixel Data
_PIXEL_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"}
_ITEM, _SEQ_END = 0xE000FFFE, 0xE0DDFFFE  # (FFFE,E000) and (FFFE,E0DD) read as little-endian

# PS3.18 Table 8.7.3-2: media types of compressed pixel data (bulk data / frames).
MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}
MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


def media_type_of(transfer_syntax: str) -> str:
    """Media type of frames in ``transfer_syntax`` (application/octet-stream when native)."""
    return MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")


class PixelDataError(Exception):
    """The pixel data of a stored file cannot be read or converted as asked."""


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
        """A JSON-serialisable form (stored in the index)."""
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


def _int(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def number_of_frames(ds: pydicom.Dataset) -> int:
    """NumberOfFrames, 1 when absent or unreadable."""
    return max(_int(ds, "NumberOfFrames", 1), 1)


def native_frame_nbytes(ds: pydicom.Dataset, tag: int = 0x7FE00010) -> int | None:
    """Bytes per native frame, or None when frames are not byte-aligned (1-bit) or unknown."""
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    samples = _int(ds, "SamplesPerPixel", 1)
    bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(tag) or _int(ds, "BitsAllocated", 0)
    if rows <= 0 or cols <= 0 or bits <= 0 or bits % 8:
        return None
    return rows * cols * samples * bits // 8


def locate_pixel_data(fp: BinaryIO, ds: pydicom.Dataset, file_size: int) -> PixelLayout:
    """Describe the pixel data of the file ``fp``, positioned where ``dcmread(fp,
    stop_before_pixels=True)`` stopped. Raises :class:`PixelDataError` for a truncated value."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    start = fp.tell()
    if start >= file_size:
        return PixelLayout("none", ts)
    frames = number_of_frames(ds)
    if ts not in _NATIVE_LE and not UID(ts).is_compressed:
        # big endian or deflated: offsets in the file do not give little-endian frames
        return PixelLayout("opaque", ts, frames)
    header = fp.read(8)
    if len(header) < 8:
        return PixelLayout("none", ts)
    group, elem = struct.unpack("<HH", header[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_TAGS:
        return PixelLayout("none", ts)
    # files that declare one VR encoding and use the other exist (pydicom reads them too)
    explicit = header[4:6] in _PIXEL_VRS and header[6:8] == b"\0\0"
    if explicit:
        extra = fp.read(4)
        if len(extra) < 4:
            raise PixelDataError("truncated Pixel Data element header")
        length = struct.unpack("<I", extra)[0]
        value_offset = start + 12
    else:
        length = struct.unpack("<I", header[4:8])[0]
        value_offset = start + 8
    if length != 0xFFFFFFFF:
        if value_offset + length > file_size:
            raise PixelDataError(f"Pixel Data is truncated: {length} bytes declared, "
                                 f"{file_size - value_offset} present")
        nbytes = native_frame_nbytes(ds, tag)
        if (nbytes is not None and nbytes * frames > length and tag == 0x7FE00010
                and _int(ds, "SamplesPerPixel", 1) == 3
                and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422"):
            # PS3.3 C.7.6.3.1.2: native YBR_FULL_422 holds two samples per pixel (Y1 Y2 Cb Cr);
            # served as stored, not decoded (which would give RGB under a YBR label)
            nbytes = nbytes * 2 // 3
        if nbytes is None or nbytes * frames > length:
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


# --- reading frames -------------------------------------------------------------------------


def read_range(path: Path, ranges: list[tuple[int, int]]) -> bytes:
    """Concatenate byte ranges of a file."""
    with open(path, "rb") as fp:
        if len(ranges) == 1:
            fp.seek(ranges[0][0])
            return fp.read(ranges[0][1])
        chunks = []
        for offset, length in ranges:
            fp.seek(offset)
            chunks.append(fp.read(length))
        return b"".join(chunks)


def stored_frame(path: Path, layout: PixelLayout, index: int) -> bytes:
    """Frame ``index`` (0-based) as stored: native bytes or the compressed code stream."""
    if layout.kind == "native":
        return read_range(path, [(layout.offset + index * layout.frame_nbytes,
                                  layout.frame_nbytes)])
    if layout.kind == "encapsulated":
        return read_range(path, layout.fragments[index])
    if layout.is_native:
        return native_frame(path, layout, index)
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    value = ds[layout.tag].value
    for number, frame in enumerate(generate_frames(value, number_of_frames=layout.frames)):
        if number == index:
            return frame
    raise PixelDataError(f"frame {index + 1} not found in the encapsulated Pixel Data")


def _decode_array(path: Path, index: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        try:
            return pixel_array(str(path), index=index)
        except (AttributeError, KeyError, ValueError):
            # e.g. a deflated file, which only a full read can open
            return pixel_array(pydicom.dcmread(path), index=index)
    except Exception as exc:  # codec errors come in many types
        raise PixelDataError(f"cannot decode frame {index + 1}: {exc}") from exc


def _to_native_bytes(arr: np.ndarray, bits_allocated: int, planar: bool = False) -> bytes:
    """Little-endian native bytes of one decoded frame (or of all frames); ``planar``: colour
    by plane (PlanarConfiguration 1) instead of pydicom's interleaved samples."""
    if bits_allocated == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    if planar and arr.ndim >= 3 and arr.shape[-1] in (3, 4):
        arr = np.moveaxis(arr, -1, -3)
    little = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    return np.ascontiguousarray(arr, dtype=little).tobytes()


def native_frame(path: Path, layout: PixelLayout, index: int) -> bytes:
    """Frame ``index`` as Explicit VR Little Endian native bytes (decoded when compressed;
    YCbCr colour from JPEG comes back as RGB, interleaved)."""
    if layout.kind == "native":
        return stored_frame(path, layout, index)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    # native data keep the instance's PlanarConfiguration, as its metadata tells clients
    planar = layout.is_native and _int(ds, "PlanarConfiguration", 0) == 1
    return _to_native_bytes(_decode_array(path, index), _int(ds, "BitsAllocated", 8), planar)


def can_decode(transfer_syntax: str) -> bool:
    """True when pydicom (with the installed plug-ins) can decode ``transfer_syntax``."""
    uid = UID(transfer_syntax)
    if not uid.is_compressed:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def transcode_to_explicit_le(path: Path) -> bytes:
    """The whole file rewritten in Explicit VR Little Endian (decompressed when needed)."""
    ds = pydicom.dcmread(path)
    ts = UID(ds.file_meta.TransferSyntaxUID)
    try:
        for _ in ds.iterall():  # decode every element (a VR read implicitly becomes known)
            pass
        if ts.is_compressed:
            ds.decompress(generate_instance_uid=False)
        elif not ts.is_little_endian:
            big = ds
            ds = pydicom.Dataset()
            ds.file_meta = big.file_meta
            for elem in big:
                if elem.tag not in PIXEL_TAGS:
                    ds.add(elem)
            if "PixelData" in big:
                ds.PixelData = _to_native_bytes(big.pixel_array, _int(big, "BitsAllocated", 8),
                                                _int(big, "PlanarConfiguration", 0) == 1)
                ds["PixelData"].VR = "OW" if _int(big, "BitsAllocated", 8) > 8 else "OB"
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True,
                             enforce_file_format=True)
            return buffer.getvalue()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, implicit_vr=False, little_endian=True, enforce_file_format=True)
        return buffer.getvalue()
    except Exception as exc:
        raise PixelDataError(f"cannot transcode to Explicit VR Little Endian: {exc}") from exc


# --- rendering ------------------------------------------------------------------------------


def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def render_frame(path: Path, index: int, media_type: str, *,
                 window: tuple[float, float, str] | None = None, quality: int = 90,
                 viewport: tuple[int, int] | None = None) -> bytes:
    """Frame ``index`` rendered to ``image/png`` or ``image/jpeg`` (Pillow).

    Grey images go through the modality LUT and a window (``window`` if given, else
    WindowCenter/WindowWidth from the file, else the frame's min/max); MONOCHROME1 is inverted.
    Colour images are shown as RGB. ``viewport`` (width, height) shrinks the image to fit.
    """
    from PIL import Image

    from ..pixels import apply_modality_lut, apply_window

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    arr = _decode_array(path, index)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if arr.dtype != np.uint8:
            top = float(arr.max()) or 1.0
            arr = (arr.astype(np.float64) * (255.0 / top)).clip(0, 255)
        image = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")
    else:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            rgb = apply_color_lut(arr, ds)
            scale = 255.0 / (65535.0 if rgb.dtype != np.uint8 else 255.0)
            image = Image.fromarray((rgb * scale).astype(np.uint8), "RGB")
        else:
            values = apply_modality_lut(arr, ds.get("RescaleSlope"), ds.get("RescaleIntercept"))
            if window is not None:
                center, width, function = window
            else:
                center = _first_float(ds.get("WindowCenter"))
                width = _first_float(ds.get("WindowWidth"))
                function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
                if center is None or width is None or width < 1:
                    low, high = float(np.min(values)), float(np.max(values))
                    center, width, function = (low + high) / 2 + 0.5, max(high - low, 1.0) + 1, \
                        "LINEAR"
            shown = apply_window(values, center, width, function=function,
                                 output_range=(0.0, 255.0), invert=photometric == "MONOCHROME1")
            image = Image.fromarray(np.rint(shown).astype(np.uint8), "L")
    if viewport is not None:
        image.thumbnail(viewport)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=max(1, min(int(quality), 100)))
    return out.getvalue()


def bulk_value(path: Path, tag_path: list[int | str]) -> bytes:
    """The raw value of a (possibly nested) binary element: ``[tag, index, tag, ...]``."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    node: Any = ds
    for step in tag_path:
        if isinstance(step, int) and isinstance(node, pydicom.Dataset):
            if step not in node:
                raise KeyError(step)
            node = node[step].value
        elif isinstance(step, str) and isinstance(node, pydicom.sequence.Sequence):
            if int(step) >= len(node):
                raise KeyError(step)
            node = node[int(step)]
        else:
            raise KeyError(step)
    if isinstance(node, bytes | bytearray):
        return bytes(node)
    if isinstance(node, str):
        return node.encode("utf-8")
    raise KeyError(tag_path[-1])
