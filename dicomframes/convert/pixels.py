"""Frame bytes + pixel metadata -> numpy arrays.

The DICOMweb frames resource (PS3.18 8.7.3) hands back one multipart part per frame: raw bytes
for native (uncompressed) transfer syntaxes, one codestream per frame for compressed ones. This
module turns such bytes into arrays:

- :func:`decode_frame` / :func:`decode_frames` decode into (preallocated) arrays, as described
  by a :class:`~dicomframes.standard.pixeldesc.PixelDescription`. Native data is read in place
  with :func:`numpy.frombuffer` and copied once into the output; compressed data goes through
  pydicom's pixel decoders and their plug-ins (pylibjpeg, pylibjpeg-libjpeg,
  pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls: ``pip install "dicomframes[codecs]"``).
- :func:`decode_rendered` (PNG/JPEG from the rendered resource -> array).
- :func:`apply_modality_lut` and :func:`apply_window` (PS3.3 C.11), from
  :mod:`dicomframes.standard.lut`, are offered here too for display.

No HTTP here: the client fetches the bytes and calls these functions.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import DecoderMissing
from ..standard.lut import apply_modality_lut, apply_window
from ..standard.pixeldesc import PixelDescription
from ..standard.transfer_syntax import (
    DEFLATED_IMAGE_FRAME,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    is_native,
    syntax_for_media_type,
)

__all__ = [
    "apply_modality_lut",
    "apply_window",
    "decode_frame",
    "decode_rendered",
    "missing_decoder",
]

#: What to tell a user whose machine lacks a decoder.
CODECS_HINT = 'pip install "dicomframes[codecs]"'

# pip packages that decode each family of compressed syntaxes (through pydicom's plug-ins).
_LIBJPEG = ("pylibjpeg", "pylibjpeg-libjpeg")
_OPENJPEG = ("pylibjpeg", "pylibjpeg-openjpeg")
_PACKAGES: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG Baseline (Pillow also decodes it)
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG Extended
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": ("pyjpegls", *_LIBJPEG),  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": ("pyjpegls", *_LIBJPEG),  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pylibjpeg-rle"),  # RLE (pydicom also has numpy RLE)
}

_YBR = ("YBR_FULL", "YBR_FULL_422")


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _check_out(out: np.ndarray | None, desc: PixelDescription) -> np.ndarray:
    if out is None:
        return desc.new_array()
    if out.shape != desc.frame_shape:
        raise ValueError(f"out has shape {out.shape}, a frame is {desc.frame_shape}")
    if out.dtype != desc.dtype:
        raise ValueError(f"out has dtype {out.dtype}, the frame needs {desc.dtype}")
    return out


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _mask_unused_bits(out: np.ndarray, desc: PixelDescription) -> None:
    """PS3.5 8.1.1: bits above BitsStored carry no meaning. Clear them (unsigned) or fill them
    with the sign bit (signed), in place, as pydicom does."""
    if desc.float_pixels or desc.bits_allocated == 1:
        return
    unused = desc.bits_allocated - desc.bits_stored
    if unused <= 0:
        return
    if desc.pixel_representation == 1:
        np.left_shift(out, unused, out=out)
        np.right_shift(out, unused, out=out)
    else:
        mask = out.dtype.type((1 << desc.bits_stored) - 1)
        np.bitwise_and(out, mask, out=out)


def _ybr_to_rgb(out: np.ndarray, desc: PixelDescription) -> None:
    if out.dtype != np.uint8 or desc.samples_per_pixel != 3:
        return
    from pydicom.pixels.processing import convert_color_space

    out[...] = convert_color_space(out, "YBR_FULL", "RGB")


def _decode_native(
    view: memoryview,
    transfer_syntax: str,
    desc: PixelDescription,
    out: np.ndarray,
    convert_color: bool,
) -> np.ndarray:
    big_endian = transfer_syntax == EXPLICIT_VR_BIG_ENDIAN
    if desc.bits_allocated == 1:
        needed = desc.frame_nbytes
        if len(view) < needed:
            raise ValueError(f"frame has {len(view)} bytes, {needed} expected for "
                             f"{desc.rows}x{desc.columns} 1-bit pixels")
        packed = np.frombuffer(view, dtype=np.uint8, count=needed)
        bits = np.unpackbits(packed, bitorder="little", count=desc.frame_pixels)
        out.reshape(-1)[...] = bits
        return out

    dtype = desc.dtype.newbyteorder(">" if big_endian else "<")
    itemsize = dtype.itemsize
    full = desc.frame_pixels * itemsize
    subsampled = (
        desc.photometric_interpretation == "YBR_FULL_422"
        and desc.samples_per_pixel == 3
        and len(view) < full
    )
    needed = desc.frame_nbytes if subsampled else full
    if len(view) < needed:
        raise ValueError(
            f"frame has {len(view)} bytes, {needed} expected for {desc.rows}x{desc.columns}"
            f"x{desc.samples_per_pixel} samples of {desc.bits_allocated} bits"
        )
    src = np.frombuffer(view, dtype=dtype, count=needed // itemsize)
    if subsampled:
        # PS3.3 C.7.6.3.1.2: Y1 Y2 Cb Cr per pair of pixels -> Y1 Cb Cr Y2 Cb Cr
        flat = out.reshape(-1)
        flat[0::6] = src[0::4]
        flat[3::6] = src[1::4]
        flat[1::6] = src[2::4]
        flat[4::6] = src[2::4]
        flat[2::6] = src[3::4]
        flat[5::6] = src[3::4]
    elif desc.samples_per_pixel > 1 and desc.planar_configuration == 1:
        planes = src.reshape(desc.samples_per_pixel, desc.rows, desc.columns)
        np.copyto(out, planes.transpose(1, 2, 0))
    else:
        np.copyto(out, src.reshape(desc.frame_shape))
    _mask_unused_bits(out, desc)
    # Native YBR_FULL_422 is always subsampled (PS3.3 C.7.6.3.1.2); full-size frames labelled
    # so come from a server that decoded a JPEG, and decoders (DCMTK in Orthanc, pydicom) give
    # RGB then.
    decoded_by_server = desc.photometric_interpretation == "YBR_FULL_422" and not subsampled
    if convert_color and desc.photometric_interpretation in _YBR and not decoded_by_server:
        _ybr_to_rgb(out, desc)
    return out


def missing_decoder(transfer_syntax: str, detail: str = "") -> DecoderMissing:
    """The DecoderMissing error for ``transfer_syntax``, naming the packages to install."""
    from pydicom.uid import UID

    name = UID(transfer_syntax).name
    label = f"{name} ({transfer_syntax})" if name != transfer_syntax else transfer_syntax
    packages = _PACKAGES.get(transfer_syntax)
    if packages:
        how = f"{CODECS_HINT} (or: pip install {' '.join(dict.fromkeys(packages))})"
        message = f"no installed decoder handles {label}: {how}"
    else:
        message = (f"no decoder for {label} exists in pydicom's pixel API; ask the server to "
                   f"transcode (transfer_syntax='{EXPLICIT_VR_LITTLE_ENDIAN}')")
    if detail:
        message = f"{message}. {detail}"
    return DecoderMissing(message)


def _decoder_for(transfer_syntax: str) -> Any:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise missing_decoder(transfer_syntax) from exc
    if not decoder.is_available:
        detail = "; ".join(decoder.missing_dependencies)
        raise missing_decoder(transfer_syntax, f"pydicom reports: {detail}" if detail else "")
    return decoder


def _encapsulate_one(view: memoryview) -> bytes:
    """Wrap one frame's codestream as encapsulated Pixel Data (empty offset table + one
    fragment), the form pydicom's decoders read."""
    length = len(view) + (len(view) & 1)
    head = (b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # Basic Offset Table item, empty
            + b"\xfe\xff\x00\xe0" + length.to_bytes(4, "little"))
    pad = b"\x00" if len(view) & 1 else b""
    return b"".join((head, view, pad))


def _decode_encapsulated(
    view: memoryview,
    transfer_syntax: str,
    desc: PixelDescription,
    out: np.ndarray,
    convert_color: bool,
) -> np.ndarray:
    if transfer_syntax == DEFLATED_IMAGE_FRAME:
        # inflated no further than one frame (and a byte to tell a longer one): a small
        # answer must not inflate into gigabytes
        raw = zlib.decompressobj(-15).decompress(view, desc.frame_nbytes + 1)
        return _decode_native(memoryview(raw), EXPLICIT_VR_LITTLE_ENDIAN, desc, out,
                              convert_color)
    decoder = _decoder_for(transfer_syntax)
    options: dict[str, Any] = {
        "rows": desc.rows,
        "columns": desc.columns,
        "samples_per_pixel": desc.samples_per_pixel,
        "bits_allocated": desc.bits_allocated,
        "bits_stored": desc.bits_stored,
        "pixel_representation": desc.pixel_representation,
        "photometric_interpretation": desc.photometric_interpretation,
        "number_of_frames": 1,
        "as_rgb": convert_color,
    }
    if desc.samples_per_pixel > 1:
        options["planar_configuration"] = desc.planar_configuration
    try:
        arr, _ = decoder.as_array(_encapsulate_one(view), index=0, validate=False, **options)
    except RuntimeError as exc:
        # pydicom: "Unable to decode as exceptions were raised by all available plugins"
        raise ValueError(f"could not decode a {decoder.UID.name} frame: {exc}") from exc
    if arr.shape != out.shape:
        arr = arr.reshape(out.shape)
    np.copyto(out, arr, casting="same_kind")
    return out


def decode_frame(
    data: bytes | bytearray | memoryview,
    transfer_syntax: str | None,
    desc: PixelDescription,
    out: np.ndarray | None = None,
    *,
    convert_color: bool = False,
) -> np.ndarray:
    """Decode one frame's bytes into an array of shape ``desc.frame_shape`` and ``desc.dtype``.

    ``data`` is what the frames resource returns for one frame: raw pixels for native
    transfer syntaxes (little endian; big endian is byte-swapped; 1-bit pixels are unpacked;
    YBR_FULL_422 is expanded; PlanarConfiguration 1 becomes interleaved), one codestream
    otherwise (decoded by pydicom's pixel API and its plug-ins). ``transfer_syntax`` None
    means Explicit VR Little Endian. Unused high bits are cleared, or sign-extended for
    signed pixels. ``convert_color`` turns YBR_FULL / YBR_FULL_422 into RGB (as
    ``pydicom``'s ``pixel_array`` does by default).

    ``out``, when given, receives the pixels (one copy from ``data``) and is returned.
    Raises :class:`~dicomframes.errors.DecoderMissing` (naming the package to install) when no
    decoder handles the syntax, ValueError when ``data`` is too short or cannot be decoded.
    """
    target = _check_out(out, desc)
    syntax = str(transfer_syntax).strip() if transfer_syntax else EXPLICIT_VR_LITTLE_ENDIAN
    view = _byte_view(data)
    if is_native(syntax):
        return _decode_native(view, syntax, desc, target, convert_color)
    return _decode_encapsulated(view, syntax, desc, target, convert_color)


FramePart = tuple[bytes | bytearray | memoryview, str | None]


def _split_part(part: Any) -> tuple[bytes | bytearray | memoryview, str | None]:
    """Accept (data, transfer_syntax) tuples or multipart Part objects."""
    if isinstance(part, tuple):
        data, syntax = part
        return data, syntax
    content = part.content
    syntax = getattr(part, "transfer_syntax", None)
    if not syntax:
        syntax = syntax_for_media_type(getattr(part, "content_type", None))
    return content, syntax


def decode_frames(
    parts: Iterable[FramePart | Any],
    desc: PixelDescription,
    count: int | None = None,
    *,
    out: np.ndarray | None = None,
    convert_color: bool = False,
) -> np.ndarray:
    """Decode a sequence of frames into one array of shape ``(n, *desc.frame_shape)``.

    ``parts`` yields ``(bytes, transfer_syntax)`` pairs or multipart parts (objects with
    ``.content`` and ``.transfer_syntax``/``.content_type``), in frame order; they are decoded
    as they arrive, so a streaming iterator never holds more than one frame's bytes.
    With ``count`` (or ``out``) the result is preallocated and filled in place; a stream with
    fewer or more parts than ``count`` raises ValueError.
    """
    if out is not None:
        if out.shape[1:] != desc.frame_shape or out.dtype != desc.dtype:
            raise ValueError(f"out must have shape (n, {desc.frame_shape}) and dtype "
                             f"{desc.dtype}, got {out.shape} {out.dtype}")
        if count is not None and out.shape[0] != count:
            raise ValueError(f"out holds {out.shape[0]} frames, count is {count}")
        count = out.shape[0]
    elif count is not None:
        out = desc.new_array(count)

    if out is not None:
        n = 0
        for part in parts:
            if n >= out.shape[0]:
                raise ValueError(f"more frames than the {out.shape[0]} expected")
            data, syntax = _split_part(part)
            decode_frame(data, syntax, desc, out[n], convert_color=convert_color)
            n += 1
        if n != out.shape[0]:
            raise ValueError(f"got {n} frames, {out.shape[0]} expected")
        return out

    frames = []
    for part in parts:
        data, syntax = _split_part(part)
        frames.append(decode_frame(data, syntax, desc, convert_color=convert_color))
    if not frames:
        return desc.new_array(0)
    return np.stack(frames)


# --------------------------------------------------------------------------------------------
# Rendered images
# --------------------------------------------------------------------------------------------


def decode_rendered(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a rendered image (PNG, JPEG, GIF...: the WADO-RS ``rendered`` resource) into an
    array: (rows, columns) for greyscale, (rows, columns, 3|4) for colour."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as opened:
        image: Image.Image = opened
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("L" if image.mode == "1" else "RGB")
        return np.array(image)
