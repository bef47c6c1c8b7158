"""Frame bytes + pixel metadata -> numpy arrays, and the helpers that make them viewable.

The DICOMweb frames resource (PS3.18 8.7.3) hands back one multipart part per frame: raw bytes
for native (uncompressed) transfer syntaxes, one codestream per frame for compressed ones. This
module turns such bytes into arrays:

- :class:`PixelDescription` holds the Image Pixel module attributes decoding needs; build it from
  DICOM JSON metadata (:meth:`PixelDescription.from_json`), a pydicom Dataset
  (:meth:`PixelDescription.from_dataset`) or a keyword mapping such as a DataFrame row
  (:meth:`PixelDescription.from_attributes`).
- :func:`decode_frame` / :func:`decode_frames` decode into (preallocated) arrays. Native data is
  read in place with :func:`numpy.frombuffer` and copied once into the output; compressed data
  goes through pydicom's pixel decoders and their plug-ins (pylibjpeg, pylibjpeg-libjpeg,
  pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls: ``pip install "dicomframes[codecs]"``).
- :func:`apply_modality_lut`, :func:`apply_window` (PS3.3 C.11.2.1.2) and
  :func:`decode_rendered` (PNG/JPEG from the rendered resource -> array).

No HTTP here: :mod:`dicomframes.client` fetches the bytes and calls these functions.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DecoderMissing

if TYPE_CHECKING:
    import pydicom

__all__ = [
    "CODECS_HINT",
    "DECODE_TAGS",
    "NATIVE_SYNTAXES",
    "PixelDescription",
    "apply_modality_lut",
    "apply_window",
    "decode_frame",
    "decode_frames",
    "decode_rendered",
    "is_native",
    "syntax_for_media_type",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_IMAGE_FRAME = "1.2.840.10008.1.2.8.1"

#: Transfer syntaxes whose frames arrive as raw pixel bytes. A deflated data set is inflated
#: before frames are cut from it, so its frames are raw too.
NATIVE_SYNTAXES: frozenset[str] = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        ENCAPSULATED_UNCOMPRESSED,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }
)

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

# PS3.18 Table 8.7.3-2: default transfer syntax of each frame media type when the part's
# Content-Type carries no transfer-syntax parameter.
_MEDIA_TYPE_SYNTAX: dict[str, str] = {
    "application/octet-stream": EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
}

_YBR = ("YBR_FULL", "YBR_FULL_422")


def is_native(transfer_syntax: str | None) -> bool:
    """True when frames of ``transfer_syntax`` are raw pixel bytes (None means the default,
    Explicit VR Little Endian)."""
    return not transfer_syntax or str(transfer_syntax) in NATIVE_SYNTAXES


def syntax_for_media_type(content_type: str | None) -> str:
    """Transfer syntax UID of a frame part, from its Content-Type.

    Uses the ``transfer-syntax`` parameter when present (also inside a quoted ``type``
    parameter, as Orthanc sends it), else the default of the media type (PS3.18 Table
    8.7.3-2); no Content-Type at all means Explicit VR Little Endian.
    """
    if not content_type:
        return EXPLICIT_VR_LITTLE_ENDIAN
    from .standard.mediatypes import parse_media_type, transfer_syntax_of

    syntax = transfer_syntax_of(content_type)
    if syntax:
        return syntax
    media_type, params = parse_media_type(content_type)
    if media_type == "multipart/related" and "type" in params:
        media_type, _ = parse_media_type(params["type"])
    return _MEDIA_TYPE_SYNTAX.get(media_type, EXPLICIT_VR_LITTLE_ENDIAN)


# --------------------------------------------------------------------------------------------
# Description of the pixels
# --------------------------------------------------------------------------------------------

# Tag (DICOM JSON key) and keyword of every attribute PixelDescription reads.
_ATTRIBUTES: dict[str, str] = {
    "rows": "00280010",
    "columns": "00280011",
    "samples_per_pixel": "00280002",
    "bits_allocated": "00280100",
    "bits_stored": "00280101",
    "pixel_representation": "00280103",
    "planar_configuration": "00280006",
    "photometric_interpretation": "00280004",
    "number_of_frames": "00280008",
}
_KEYWORDS: dict[str, str] = {
    "rows": "Rows",
    "columns": "Columns",
    "samples_per_pixel": "SamplesPerPixel",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation",
    "planar_configuration": "PlanarConfiguration",
    "photometric_interpretation": "PhotometricInterpretation",
    "number_of_frames": "NumberOfFrames",
}
_FLOAT_PIXEL_DATA = "7FE00008"
_DOUBLE_FLOAT_PIXEL_DATA = "7FE00009"

#: DICOM JSON tags that decoding needs (use them as ``includefield`` values).
DECODE_TAGS: tuple[str, ...] = (
    *_ATTRIBUTES.values(),
    _FLOAT_PIXEL_DATA,
    _DOUBLE_FLOAT_PIXEL_DATA,
)


def _first_json_value(obj: Mapping[str, Any], tag: str) -> Any:
    """First value of ``tag`` in a DICOM JSON object (None when absent or empty)."""
    from .standard.dicomjson import python_value

    element = obj.get(tag) or obj.get(tag.lower())
    if not isinstance(element, Mapping):
        return None
    value = python_value(dict(element), int(tag, 16))
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _as_int(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, float) and math.isnan(value):
        return default
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        return _as_int(value, default)
    try:
        return int(str(value).strip()) if isinstance(value, (str, bytes)) else int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel module attributes needed to decode frames (PS3.3 C.7.6.3).

    ``float_pixels`` marks Float Pixel Data (bits_allocated 32, float32) and Double Float Pixel
    Data (bits_allocated 64, float64).
    """

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    planar_configuration: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    number_of_frames: int = 1
    float_pixels: bool = False

    def __post_init__(self) -> None:
        if self.rows <= 0 or self.columns <= 0:
            raise ValueError(f"Rows and Columns must be positive, got {self.rows}x{self.columns}")
        if self.samples_per_pixel <= 0:
            raise ValueError(f"SamplesPerPixel must be positive, got {self.samples_per_pixel}")
        if self.bits_allocated != 1 and (self.bits_allocated <= 0 or self.bits_allocated % 8):
            raise ValueError(f"BitsAllocated must be 1 or a multiple of 8, got "
                             f"{self.bits_allocated}")
        if self.float_pixels and self.bits_allocated not in (32, 64):
            raise ValueError(f"float pixel data needs BitsAllocated 32 or 64, got "
                             f"{self.bits_allocated}")

    # ---- constructors ----------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PixelDescription:
        """From a DICOM JSON object (one item of a WADO-RS metadata response)."""
        values = {name: _first_json_value(obj, tag) for name, tag in _ATTRIBUTES.items()}
        float_kind = None
        if _FLOAT_PIXEL_DATA in obj or _FLOAT_PIXEL_DATA.lower() in obj:
            float_kind = 32
        elif _DOUBLE_FLOAT_PIXEL_DATA in obj or _DOUBLE_FLOAT_PIXEL_DATA.lower() in obj:
            float_kind = 64
        return cls._build(values, float_kind)

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> PixelDescription:
        """From a mapping keyed by DICOM keyword (e.g. a row of a metadata DataFrame).

        ``FloatPixelData``/``DoubleFloatPixelData`` keys (any value) mark float pixels.
        """
        values = {name: attributes.get(kw) for name, kw in _KEYWORDS.items()}
        float_kind = None
        if "FloatPixelData" in attributes and _present(attributes["FloatPixelData"]):
            float_kind = 32
        elif "DoubleFloatPixelData" in attributes and _present(
                attributes["DoubleFloatPixelData"]):
            float_kind = 64
        return cls._build(values, float_kind)

    @classmethod
    def from_dataset(cls, ds: pydicom.Dataset) -> PixelDescription:
        """From a pydicom Dataset (a Part-10 file read with ``pydicom.dcmread``)."""
        values = {name: ds.get(kw) for name, kw in _KEYWORDS.items()}
        float_kind = None
        if "FloatPixelData" in ds:
            float_kind = 32
        elif "DoubleFloatPixelData" in ds:
            float_kind = 64
        return cls._build(values, float_kind)

    @classmethod
    def _build(cls, values: Mapping[str, Any], float_kind: int | None) -> PixelDescription:
        rows = _as_int(values.get("rows"), 0)
        columns = _as_int(values.get("columns"), 0)
        if not rows or not columns:
            raise ValueError("Rows (0028,0010) and Columns (0028,0011) are needed to decode "
                             "frames; the metadata has none (is this an image instance?)")
        bits_allocated = _as_int(values.get("bits_allocated"), float_kind or 16)
        if float_kind:
            bits_allocated = float_kind
        photometric = values.get("photometric_interpretation")
        if isinstance(photometric, (list, tuple)):
            photometric = photometric[0] if photometric else None
        if not isinstance(photometric, str) or not photometric.strip():
            photometric = "MONOCHROME2"
        return cls(
            rows=rows,
            columns=columns,
            samples_per_pixel=_as_int(values.get("samples_per_pixel"), 1),
            bits_allocated=bits_allocated,
            bits_stored=_as_int(values.get("bits_stored"), bits_allocated),
            pixel_representation=_as_int(values.get("pixel_representation"), 0),
            planar_configuration=_as_int(values.get("planar_configuration"), 0),
            photometric_interpretation=photometric.strip(),
            number_of_frames=max(_as_int(values.get("number_of_frames"), 1), 1),
            float_pixels=bool(float_kind),
        )

    # ---- derived properties ----------------------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of decoded pixels (native byte order)."""
        if self.float_pixels:
            return np.dtype(np.float32 if self.bits_allocated == 32 else np.float64)
        if self.bits_allocated == 1:
            return np.dtype(np.uint8)
        kind = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """(rows, columns) or (rows, columns, samples)."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def frame_pixels(self) -> int:
        """Number of samples in one frame (rows * columns * samples per pixel)."""
        return self.rows * self.columns * self.samples_per_pixel

    @property
    def frame_nbytes(self) -> int:
        """Length in bytes of one frame in a native transfer syntax (YBR_FULL_422 is sent
        subsampled: two samples per pixel; 1-bit data is packed and padded to a byte)."""
        if self.bits_allocated == 1:
            return (self.frame_pixels + 7) // 8
        samples = self.frame_pixels
        if self.photometric_interpretation == "YBR_FULL_422" and self.samples_per_pixel == 3:
            samples = self.rows * self.columns * 2
        return samples * (self.bits_allocated // 8)

    @property
    def is_color(self) -> bool:
        """True for multi-sample (colour) pixels."""
        return self.samples_per_pixel > 1

    def output_shape(self, count: int) -> tuple[int, ...]:
        """Shape of an array holding ``count`` frames."""
        return (count, *self.frame_shape)

    def new_array(self, count: int | None = None) -> np.ndarray:
        """An uninitialised array for one frame (count None) or ``count`` frames."""
        shape = self.frame_shape if count is None else self.output_shape(count)
        return np.empty(shape, dtype=self.dtype)

    def with_changes(self, **changes: Any) -> PixelDescription:
        """A copy with some attributes changed."""
        return replace(self, **changes)


def _present(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


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


def _missing(transfer_syntax: str, detail: str = "") -> DecoderMissing:
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
        raise _missing(transfer_syntax) from exc
    if not decoder.is_available:
        detail = "; ".join(decoder.missing_dependencies)
        raise _missing(transfer_syntax, f"pydicom reports: {detail}" if detail else "")
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
        raw = zlib.decompress(view, wbits=-15)
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
    if syntax in NATIVE_SYNTAXES:
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
# Display helpers
# --------------------------------------------------------------------------------------------


def _scalar(value: Any, default: float | None = None) -> float | None:
    """First number of a DICOM multi-value (list, 'a\\b' string, scalar)."""
    if value is None:
        return default
    if isinstance(value, str):
        value = value.split("\\")[0].strip()
        if not value:
            return default
    elif isinstance(value, Sequence | np.ndarray) and not isinstance(value, bytes):
        if len(value) == 0:
            return default
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(number) else number


def apply_modality_lut(
    arr: np.ndarray,
    slope: float | Sequence[float] | None = 1.0,
    intercept: float | Sequence[float] | None = 0.0,
    *,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Rescale stored values to output units: ``arr * slope + intercept`` (PS3.3 C.11.1,
    RescaleSlope / RescaleIntercept, e.g. Hounsfield units for CT).

    None (attribute absent) counts as slope 1 / intercept 0. With slope 1 and intercept 0 the
    input is returned as is; otherwise a new array of ``dtype`` (float64 by default).
    """
    s = _scalar(slope, 1.0)
    b = _scalar(intercept, 0.0)
    assert s is not None and b is not None
    if s == 1.0 and b == 0.0:
        return arr
    result = np.asarray(arr, dtype=dtype) * s
    result += b
    return result


def apply_window(
    arr: np.ndarray,
    center: float | Sequence[float],
    width: float | Sequence[float],
    *,
    function: str = "LINEAR",
    output_range: tuple[float, float] = (0.0, 1.0),
    invert: bool = False,
) -> np.ndarray:
    """VOI windowing (PS3.3 C.11.2.1.2): map values to ``output_range`` (float32 array).

    ``function`` is the VOI LUT Function: ``LINEAR`` (the default; C.11.2.1.2.1),
    ``LINEAR_EXACT`` (C.11.2.1.3.2) or ``SIGMOID`` (C.11.2.1.3.1). Multi-valued centers/widths
    (several windows) use the first. ``invert`` flips the output (MONOCHROME1 display).
    """
    c = _scalar(center)
    w = _scalar(width)
    if c is None or w is None:
        raise ValueError(f"window center and width are needed, got {center!r}, {width!r}")
    y_min, y_max = (float(v) for v in output_range)
    span = y_max - y_min
    x = np.asarray(arr, dtype=np.float64)
    kind = function.upper().replace(" ", "_")
    if kind == "LINEAR":
        if w < 1:
            raise ValueError(f"window width must be >= 1 for LINEAR, got {w}")
        lower = c - 0.5 - (w - 1) / 2
        upper = c - 0.5 + (w - 1) / 2
        if w == 1:
            y = np.where(x <= lower, y_min, y_max)
        else:
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) * span + y_min
            y = np.where(x <= lower, y_min, np.where(x > upper, y_max, y))
    elif kind == "LINEAR_EXACT":
        if w <= 0:
            raise ValueError(f"window width must be > 0 for LINEAR_EXACT, got {w}")
        y = ((x - c) / w + 0.5) * span + y_min
        y = np.where(x <= c - w / 2, y_min, np.where(x > c + w / 2, y_max, y))
    elif kind == "SIGMOID":
        if w <= 0:
            raise ValueError(f"window width must be > 0 for SIGMOID, got {w}")
        y = span / (1.0 + np.exp(-4.0 * (x - c) / w)) + y_min
    else:
        raise ValueError(f"unknown VOI LUT function {function!r} "
                         "(LINEAR, LINEAR_EXACT or SIGMOID)")
    y = np.clip(y, min(y_min, y_max), max(y_min, y_max))
    if invert:
        y = y_max + y_min - y
    return y.astype(np.float32)


def decode_rendered(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a rendered image (PNG, JPEG, GIF...: the WADO-RS ``rendered`` resource) into an
    array: (rows, columns) for greyscale, (rows, columns, 3|4) for colour."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as image:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("L" if image.mode == "1" else "RGB")
        return np.array(image)
