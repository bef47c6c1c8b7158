"""Pixel data of stored files: reading frames, transcoding and rendering.

Where each frame lies is recorded at store time (:func:`dicomframes.standard.pixellayout.
locate_pixel_data`), so serving a frame is a seek and a read, without parsing or decoding the
file. Frames that cannot be sliced (big endian, deflated, bit-packed, unusual fragment layouts)
fall back to pydicom.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian

from ..standard.lut import apply_modality_lut, apply_window, display_window
from ..standard.pixellayout import PixelDataError, PixelLayout
from ..standard.tags import PIXEL_TAGS


def int_value(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer attribute of a pydicom data set; ``default`` when absent or unreadable."""
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


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
    planar = layout.is_native and int_value(ds, "PlanarConfiguration", 0) == 1
    return _to_native_bytes(_decode_array(path, index), int_value(ds, "BitsAllocated", 8), planar)


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
    ds: pydicom.Dataset = pydicom.dcmread(path)
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
                ds.PixelData = _to_native_bytes(big.pixel_array, int_value(big, "BitsAllocated", 8),
                                                int_value(big, "PlanarConfiguration", 0) == 1)
                ds["PixelData"].VR = "OW" if int_value(big, "BitsAllocated", 8) > 8 else "OB"
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


def render_frame(path: Path, index: int, media_type: str, *,
                 window: tuple[float, float, str] | None = None, quality: int = 90,
                 viewport: tuple[int, int] | None = None) -> bytes:
    """Frame ``index`` rendered to ``image/png`` or ``image/jpeg`` (Pillow).

    Grey images go through the modality LUT and a window (``window`` if given, else
    WindowCenter/WindowWidth from the file, else the frame's min/max); MONOCHROME1 is inverted.
    Colour images are shown as RGB. ``viewport`` (width, height) shrinks the image to fit.
    """
    from PIL import Image

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
            center, width, function = window or display_window(
                values, ds.get("WindowCenter"), ds.get("WindowWidth"), ds.get("VOILUTFunction"))
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
