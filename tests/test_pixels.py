"""pixels.py against real files nobody here made: every pixel-bearing file bundled with pydicom.

Each file's frames are cut out as a DICOMweb server sends them (native: raw bytes per frame;
encapsulated: one codestream per frame) and decoded with :func:`decode_frames`; the result must
equal ``pydicom.dcmread(path).pixel_array``. Both sides decode the very same bytes with the same
pydicom plug-ins, so the comparison is exact for lossy syntaxes too (tolerance 0).
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dicomframes.convert.pixels import (
    apply_modality_lut,
    apply_window,
    decode_frame,
    decode_frames,
    decode_rendered,
    missing_decoder,
)
from dicomframes.errors import DecoderMissing
from dicomframes.standard.lut import display_window, stated_window
from dicomframes.standard.pixeldesc import PixelDescription

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Lossy syntaxes: allowed absolute difference from pixel_array. Zero, because both sides run
# pydicom's own decoder on identical bytes; kept explicit so a different plug-in shows up.
LOSSY_TOLERANCE = 0
LOSSY_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",  # JPEG baseline / extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93",  # JPEG 2000 (may be lossy)
    "1.2.840.10008.1.2.4.203",  # HTJ2K (may be lossy)
})


def _decodable_files() -> list[str]:
    """pydicom's bundled files with pixels that pydicom itself decodes on this machine."""
    root = Path(pydicom.data.__file__).parent
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(pydicom.data.get_testdata_files()):
            try:
                ds = pydicom.dcmread(path)
                if not any(k in ds for k in PIXEL_KEYWORDS):
                    continue
                ds.pixel_array  # noqa: B018  (the probe: does pydicom decode it here?)
            except Exception:
                continue
            try:
                found.append(str(Path(path).relative_to(root)))
            except ValueError:
                found.append(path)
    return found


BUNDLED = _decodable_files()


def _path(name: str) -> str:
    p = Path(name)
    return str(p if p.is_absolute() else Path(pydicom.data.__file__).parent / p)


def frames_as_served(ds: Dataset, desc: PixelDescription) -> list[tuple[bytes | memoryview, str]]:
    """The frames of ``ds`` as a DICOMweb frames response carries them (PS3.18 8.7.3)."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    n = desc.number_of_frames
    if syntax.is_encapsulated:
        return [(f, syntax) for f in generate_frames(ds.PixelData, number_of_frames=n)][:n]
    element = ds[next(k for k in PIXEL_KEYWORDS if k in ds)]
    raw = element.value
    if syntax == "1.2.840.10008.1.2.2" and desc.bits_allocated == 8 and element.VR == "OW":
        # 8-bit big endian data stored as OW: undo the 16-bit word swap, as a server must
        even = np.frombuffer(raw[: len(raw) // 2 * 2], ">u2").astype("<u2").tobytes()
        raw = even + raw[len(even):]
    if desc.bits_allocated == 1:
        # bit-packed frames need not start on a byte; each served frame does
        bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
        size = desc.frame_pixels
        return [(np.packbits(bits[i * size:(i + 1) * size], bitorder="little").tobytes(), syntax)
                for i in range(n)]
    size = desc.frame_nbytes
    return [(memoryview(raw)[i * size:(i + 1) * size], syntax) for i in range(n)]


def _expected(ds: Dataset, as_rgb: bool) -> np.ndarray:
    ds.pixel_array_options(as_rgb=as_rgb)
    arr = ds.pixel_array
    return arr if arr.ndim > 2 + (ds.get("SamplesPerPixel", 1) > 1) else arr[np.newaxis]


def _compare(got: np.ndarray, expected: np.ndarray, syntax: UID) -> None:
    assert got.shape == expected.shape
    assert got.dtype.kind == expected.dtype.kind
    assert got.dtype.itemsize == expected.dtype.itemsize
    if syntax in LOSSY_SYNTAXES:
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()
        assert diff <= LOSSY_TOLERANCE, f"max difference {diff}"
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_file_frames_equal_pixel_array(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_path(name))
        desc = PixelDescription.from_dataset(ds)
        parts = frames_as_served(ds, desc)
        syntax = UID(ds.file_meta.TransferSyntaxUID)

        # DICOM JSON metadata (pixel data left out, as a WADO-RS metadata response has it)
        # describes the pixels exactly as the dataset does.
        meta = ds.to_json_dict(bulk_data_threshold=1,
                               bulk_data_element_handler=lambda _e: "http://127.0.0.1/bulk")
        assert PixelDescription.from_json(meta) == desc

        got = decode_frames(parts, desc, len(parts), convert_color=True)
        _compare(got, _expected(ds, as_rgb=True), syntax)
        if desc.is_color:
            raw = decode_frames(parts, desc, len(parts), convert_color=False)
            _compare(raw, _expected(ds, as_rgb=False), syntax)


def test_bundled_files_cover_the_common_syntaxes() -> None:
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in BUNDLED:
            ds = pydicom.dcmread(_path(name), stop_before_pixels=True)
            seen.add(UID(ds.file_meta.TransferSyntaxUID).name)
    for needed in ("Explicit VR Little Endian", "Implicit VR Little Endian",
                   "Explicit VR Big Endian", "RLE Lossless", "JPEG Baseline (Process 1)",
                   "JPEG Extended (Process 2 and 4)", "JPEG-LS Lossless Image Compression",
                   "JPEG 2000 Image Compression (Lossless Only)"):
        assert needed in seen
    assert len(BUNDLED) >= 80


def _native_dataset(arr: np.ndarray, *, keyword: str = "PixelData", bits_stored: int | None = None,
                    photometric: str = "MONOCHROME2", planar: int = 0) -> Dataset:
    """A real Part-10 file (written and read back) around ``arr`` (frames, rows, cols[, s])."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    n, rows, cols = arr.shape[:3]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel = arr.shape[3] if arr.ndim == 4 else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated = arr.dtype.itemsize * 8
    if keyword == "PixelData":
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    data = np.ascontiguousarray(arr.transpose(0, 3, 1, 2) if planar else arr)
    setattr(ds, keyword, data.tobytes())
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("keyword,dtype", [("FloatPixelData", np.float32),
                                           ("DoubleFloatPixelData", np.float64)])
def test_float_and_double_float_pixel_data(keyword: str, dtype: type) -> None:
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(3, 7, 5)).astype(dtype)
    ds = _native_dataset(arr, keyword=keyword)
    desc = PixelDescription.from_dataset(ds)
    assert desc.float_pixels and desc.dtype == np.dtype(dtype)
    meta = {"00280010": {"vr": "US", "Value": [7]}, "00280011": {"vr": "US", "Value": [5]},
            "00280008": {"vr": "IS", "Value": ["3"]},
            keyword_tag(keyword): {"vr": "OF" if dtype == np.float32 else "OD",
                                   "BulkDataURI": "http://127.0.0.1/x"}}
    assert PixelDescription.from_json(meta) == desc
    got = decode_frames(frames_as_served(ds, desc), desc, 3)
    np.testing.assert_array_equal(got, ds.pixel_array)
    np.testing.assert_array_equal(got, arr)


def keyword_tag(keyword: str) -> str:
    return {"FloatPixelData": "7FE00008", "DoubleFloatPixelData": "7FE00009"}[keyword]


def test_signed_pixels_are_sign_extended_and_unused_bits_ignored() -> None:
    # 12-bit signed values in 16-bit words whose top 4 bits hold garbage
    values = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    garbage = (values.view(np.uint16) & 0x0FFF) | 0xA000
    ds = _native_dataset(garbage.view(np.int16)[np.newaxis], bits_stored=12)
    desc = PixelDescription.from_dataset(ds)
    got = decode_frame(frames_as_served(ds, desc)[0][0], ExplicitVRLittleEndian, desc)
    np.testing.assert_array_equal(got, values)
    np.testing.assert_array_equal(got, ds.pixel_array)
    # unsigned: the unused bits are cleared
    ds = _native_dataset(np.array([[[0xF123, 0x0FFF]]], dtype=np.uint16), bits_stored=12)
    desc = PixelDescription.from_dataset(ds)
    got = decode_frame(frames_as_served(ds, desc)[0][0], None, desc)
    np.testing.assert_array_equal(got, [[0x123, 0xFFF]])


def test_one_bit_frames_not_on_byte_boundaries() -> None:
    # 3 frames of 3x5 = 15 bits each: frames 2 and 3 start inside a byte in the file
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2, size=(3, 3, 5), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = 3, 5, 3, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.packbits(bits.reshape(-1), bitorder="little").tobytes()
    desc = PixelDescription.from_dataset(ds)
    assert desc.frame_nbytes == 2
    got = decode_frames(frames_as_served(ds, desc), desc, 3)
    np.testing.assert_array_equal(got, bits)
    np.testing.assert_array_equal(got, ds.pixel_array)


def test_planar_configuration_one_becomes_interleaved() -> None:
    rgb = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    ds = _native_dataset(rgb, photometric="RGB", planar=1)
    desc = PixelDescription.from_dataset(ds)
    assert desc.planar_configuration == 1
    got = decode_frames(frames_as_served(ds, desc), desc, 2)
    np.testing.assert_array_equal(got, rgb)


def test_deflated_image_frame_compression() -> None:
    arr = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = deflate.compress(arr.tobytes()) + deflate.flush()
    desc = PixelDescription(rows=64, columns=48, bits_allocated=16, bits_stored=16)
    np.testing.assert_array_equal(decode_frame(data, "1.2.840.10008.1.2.8.1", desc), arr)


def test_a_deflated_frame_is_inflated_no_further_than_one_frame() -> None:
    """A 0.5 MB answer that inflates to 512 MiB of zeros decodes as its 8x8 frame, with no
    more than that frame's bytes inflated."""
    import tracemalloc

    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    bomb = b"".join(deflate.compress(chunk) for _ in range(512)) + deflate.flush()
    desc = PixelDescription(rows=8, columns=8, bits_allocated=8, bits_stored=8)
    tracemalloc.start()
    try:
        frame = decode_frame(bomb, "1.2.840.10008.1.2.8.1", desc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frame.shape == (8, 8) and not frame.any()
    assert peak < 1 << 20, f"{peak} bytes allocated to decode an 8x8 frame"


def test_htj2k_syntax_routes_to_the_openjpeg_plugin() -> None:
    # No HTJ2K encoder exists here; a JPEG 2000 codestream is decodable by the same plug-in,
    # which shows the HTJ2K syntaxes reach it.
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small_jp2klossless.dcm"))
    desc = PixelDescription.from_dataset(ds)
    (frame, _), = frames_as_served(ds, desc)
    got = decode_frame(frame, "1.2.840.10008.1.2.4.201", desc)
    np.testing.assert_array_equal(got, ds.pixel_array)


def test_out_is_filled_in_place_and_counts_are_checked() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("rtdose.dcm"))
    desc = PixelDescription.from_dataset(ds)
    parts = frames_as_served(ds, desc)
    out = np.zeros(desc.output_shape(15), dtype=desc.dtype)
    assert decode_frames(parts, desc, out=out) is out
    np.testing.assert_array_equal(out, ds.pixel_array)
    frame = np.zeros(desc.frame_shape, desc.dtype)
    assert decode_frame(parts[3][0], parts[3][1], desc, out=frame) is frame
    np.testing.assert_array_equal(frame, ds.pixel_array[3])
    with pytest.raises(ValueError, match="16 expected"):
        decode_frames(parts, desc, 16)
    with pytest.raises(ValueError, match="more frames"):
        decode_frames(parts, desc, 14)
    with pytest.raises(ValueError, match="bytes"):
        decode_frame(bytes(parts[0][0])[:-4], ExplicitVRLittleEndian, desc)
    with pytest.raises(ValueError, match="shape"):
        decode_frame(parts[0][0], None, desc, out=np.zeros((2, 2), desc.dtype))
    # count unknown: frames are stacked as they come
    np.testing.assert_array_equal(decode_frames(iter(parts), desc), ds.pixel_array)


def test_unsupported_syntax_raises_decoder_missing() -> None:
    desc = PixelDescription(rows=8, columns=8, bits_allocated=8, bits_stored=8)
    with pytest.raises(DecoderMissing, match="transcode"):
        decode_frame(b"\x00" * 64, "1.2.840.10008.1.2.4.100", desc)  # MPEG2


def test_missing_plugin_names_the_package_to_install() -> None:
    # A real interpreter in which the JPEG 2000 plug-ins cannot be imported.
    script = (
        "import sys\n"
        "for m in ('pylibjpeg', 'openjpeg', 'libjpeg', 'rle', 'PIL'): sys.modules[m] = None\n"
        "import pydicom, pydicom.data\n"
        "from pydicom.encaps import generate_frames\n"
        "from dicomframes.errors import DecoderMissing\n"
        "from dicomframes.convert.pixels import decode_frame\n"
        "from dicomframes.standard.pixeldesc import PixelDescription\n"
        "ds = pydicom.dcmread(pydicom.data.get_testdata_file('MR_small_jp2klossless.dcm'))\n"
        "frame = next(generate_frames(ds.PixelData, number_of_frames=1))\n"
        "try:\n"
        "    decode_frame(frame, ds.file_meta.TransferSyntaxUID,"
        " PixelDescription.from_dataset(ds))\n"
        "except DecoderMissing as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1])
    assert 'pip install "dicomframes[codecs]"' in result.stdout
    assert "pylibjpeg-openjpeg" in result.stdout


def test_description_from_json_values_as_strings_and_defaults() -> None:
    meta = {
        "00280010": {"vr": "US", "Value": [512]},
        "00280011": {"vr": "US", "Value": [256]},
        "00280100": {"vr": "US", "Value": [16]},
        "00280101": {"vr": "US", "Value": [12]},
        "00280103": {"vr": "US", "Value": [1]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME1"]},
        "00280008": {"vr": "IS", "Value": ["4"]},
        "00280006": {"vr": "US"},
    }
    desc = PixelDescription.from_json(meta)
    assert desc == PixelDescription(rows=512, columns=256, bits_allocated=16, bits_stored=12,
                                    pixel_representation=1, photometric_interpretation=
                                    "MONOCHROME1", number_of_frames=4)
    assert desc.dtype == np.int16 and desc.frame_shape == (512, 256)
    assert desc.frame_nbytes == 512 * 256 * 2
    with pytest.raises(ValueError, match="Rows"):
        PixelDescription.from_json({"00280011": {"vr": "US", "Value": [5]}})
    row = {"Rows": 4, "Columns": 3, "SamplesPerPixel": 3, "BitsAllocated": 8,
           "PhotometricInterpretation": "YBR_FULL_422", "NumberOfFrames": float("nan")}
    desc = PixelDescription.from_attributes(row)
    assert desc.frame_shape == (4, 3, 3) and desc.number_of_frames == 1
    assert desc.frame_nbytes == 4 * 3 * 2  # subsampled on the wire


def test_modality_lut_matches_pydicom() -> None:
    from pydicom.pixels import apply_modality_lut as pydicom_modality_lut

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    arr = ds.pixel_array
    got = apply_modality_lut(arr, ds.RescaleSlope, ds.RescaleIntercept)
    np.testing.assert_allclose(got, pydicom_modality_lut(arr, ds))
    assert apply_modality_lut(arr, None, None) is arr


def test_window_linear_follows_ps3_3() -> None:
    center, width = 40.0, 400.0
    x = np.array([-1000, -160, -159.5, 39.5, 239, 239.5, 3000], dtype=np.float64)
    y = apply_window(x, center, width)
    # C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 -> min; x > c - 0.5 + (w-1)/2 -> max; else linear
    expected = [0.0, 0.0, ((-159.5 - 39.5) / 399 + 0.5), 0.5, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert y.dtype == np.float32
    np.testing.assert_allclose(apply_window(x, [center, 50], [width, 10], output_range=(0, 255)),
                               np.array(expected) * 255, atol=1e-4)
    np.testing.assert_allclose(apply_window(x, center, width, invert=True), 1 - np.array(expected),
                               atol=1e-6)
    exact = apply_window(np.array([-160.0, 40.0, 240.0, 241.0]), center, width,
                         function="LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0.0, 0.5, 1.0, 1.0])
    sigmoid = apply_window(np.array([40.0]), center, width, function="SIGMOID")
    np.testing.assert_allclose(sigmoid, [0.5])
    with pytest.raises(ValueError):
        apply_window(x, center, 0.5)


def test_display_window_is_the_stated_one_or_the_range_mapped_end_to_end() -> None:
    values = np.array([[-200.0, 0.0], [300.0, 1800.0]])
    assert display_window(values, "40\\80", [400, 10]) == (40.0, 400.0, "LINEAR")
    assert display_window(values, 40, 10, "SIGMOID") == (40.0, 10.0, "SIGMOID")
    # no window, or one LINEAR cannot use (width < 1): the range, min -> 0 and max -> 1
    for stated in ((None, None), (40, 0.5), ("", "")):
        center, width, function = display_window(values, *stated)
        shown = apply_window(values, center, width, function=function)
        assert shown.min() == 0.0 and shown.max() == 1.0
        assert shown[0, 1] == pytest.approx(200 / 2000, abs=1e-6)  # linear in between
    assert stated_window(40, 0.5) is None
    assert stated_window(40, 0.5, "LINEAR_EXACT") == (40.0, 0.5, "LINEAR_EXACT")
    flat = display_window(np.full((2, 2), 7.0))
    assert apply_window(np.full((2, 2), 7.0), flat[0], flat[1]).tolist() == [[0.5, 0.5]] * 2


def test_decode_rendered_png_and_jpeg() -> None:
    from PIL import Image

    rgb = np.random.default_rng(3).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_rendered(buffer.getvalue()), rgb)
    grey = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (16, 1))
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=95)
    decoded = decode_rendered(buffer.getvalue())
    assert decoded.shape == grey.shape
    assert np.abs(decoded.astype(int) - grey).max() <= 8  # lossy JPEG


def test_missing_decoder_names_what_to_install_or_to_transcode() -> None:
    error = missing_decoder("1.2.840.10008.1.2.4.90", "pydicom reports: no plug-in")
    assert isinstance(error, DecoderMissing)
    text = str(error)
    assert 'pip install "dicomframes[codecs]"' in text and "pylibjpeg-openjpeg" in text
    assert text.endswith("pydicom reports: no plug-in")
    unknown = str(missing_decoder("1.2.3.4"))
    assert "ask the server to transcode" in unknown and "1.2.840.10008.1.2.1" in unknown
