"""WADO-RS conformance: instances, metadata, bulk data, frames and rendered images
(PS3.18 10.4 and the tutorial's calls 4-10), compared with what pydicom reads from the files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import generate_frames

from .server_helpers import (
    DICOM_JSON,
    EXPLICIT_LE,
    instance_url,
    native_bytes,
    raw_get,
    split_multipart,
    uids_of,
    value,
)

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAMES_NATIVE = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'


def get(url: str, accept: str | None = None, **kwargs) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(url, headers=headers, timeout=60, **kwargs)


# --- instances ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1", "/v2"])
def test_study_and_series_retrieve_every_instance_byte_for_byte(loaded, tutorial_files,
                                                                prefix) -> None:
    study, series, _ = uids_of(tutorial_files[0])
    answer = get(f"{loaded.url}{prefix}/studies/{study}", DICOM_ANY)
    assert answer.status_code == 200
    assert 'type="application/dicom"' in answer.headers["Content-Type"] or \
        "type=application/dicom" in answer.headers["Content-Type"]
    parts = split_multipart(answer)
    assert sorted(content for _, content in parts) == sorted(p.read_bytes()
                                                             for p in tutorial_files)
    for headers, _ in parts:
        assert headers["content-type"].startswith("application/dicom")
        assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]
    answer = get(f"{loaded.url}{prefix}/studies/{study}/series/{series}", DICOM_ANY)
    parts = split_multipart(answer)
    same_series = [p for p in tutorial_files if uids_of(p)[1] == series]
    assert len(same_series) == 2
    assert sorted(c for _, c in parts) == sorted(p.read_bytes() for p in same_series)


def test_instance_single_part_and_multipart(loaded, tutorial_files) -> None:
    url = instance_url(loaded.url, tutorial_files[2])
    single = get(url, "application/dicom; transfer-syntax=*")
    assert single.status_code == 200
    assert single.headers["Content-Type"].startswith("application/dicom")
    assert single.content == tutorial_files[2].read_bytes()
    assert int(single.headers["Content-Length"]) == tutorial_files[2].stat().st_size
    multi = get(url, DICOM_ANY)
    assert [c for _, c in split_multipart(multi)] == [tutorial_files[2].read_bytes()]
    stored_syntax = get(url, "application/dicom; transfer-syntax=1.2.840.10008.1.2.1")
    assert stored_syntax.content == tutorial_files[2].read_bytes()


@pytest.mark.parametrize("key", ["jpeg_baseline_multiframe", "j2k", "rle", "jpeg_ls",
                                 "implicit", "big_endian", "deflated", "big_endian_planar",
                                 "vr_mismatch"])
def test_other_syntaxes_are_transcoded_to_explicit_little_endian(loaded, pydicom_files,
                                                                 key) -> None:
    path = pydicom_files[key]
    url = instance_url(loaded.url, path)
    as_stored = get(url, "application/dicom; transfer-syntax=*")
    if key == "deflated":  # inflated once at STOW, stored (and sent as stored) inflated
        assert f"transfer-syntax={EXPLICIT_LE}" in as_stored.headers["Content-Type"]
    else:
        assert as_stored.content == path.read_bytes()
    answer = get(url, f"application/dicom; transfer-syntax={EXPLICIT_LE}")
    assert answer.status_code == 200, answer.text
    assert f"transfer-syntax={EXPLICIT_LE}" in answer.headers["Content-Type"]
    got = pydicom.dcmread(io.BytesIO(answer.content))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE
    original = pydicom.dcmread(path)
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(got.pixel_array, original.pixel_array)


def test_unavailable_transfer_syntax_is_406(loaded, pydicom_files, tutorial_files) -> None:
    url = instance_url(loaded.url, pydicom_files["explicit"])
    jpeg = "1.2.840.10008.1.2.4.50"
    assert get(url, f"application/dicom; transfer-syntax={jpeg}").status_code == 406
    assert get(url, f'multipart/related; type="application/dicom"; transfer-syntax={jpeg}'
               ).status_code == 406
    study = uids_of(tutorial_files[0])[0]
    assert get(f"{loaded.url}/studies/{study}", "application/dicom+json").status_code == 406
    # a study cannot be one single part
    assert get(f"{loaded.url}/studies/{study}", "application/dicom").status_code == 406
    # several ranges: the first acceptable one wins
    answer = get(url, f"application/dicom; transfer-syntax={jpeg}, "
                      "application/dicom; transfer-syntax=*; q=0.5")
    assert answer.status_code == 200
    assert answer.content == pydicom_files["explicit"].read_bytes()


# --- metadata and bulk data -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_metadata_at_three_levels_has_no_inline_pixel_data(loaded, tutorial_files,
                                                           prefix) -> None:
    study, series, sop = uids_of(tutorial_files[0])
    base = f"{loaded.url}{prefix}/studies/{study}"
    for url, count in ((f"{base}/metadata", 3), (f"{base}/series/{series}/metadata", 2),
                       (f"{base}/series/{series}/instances/{sop}/metadata", 1)):
        answer = get(url, DICOM_JSON)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith(DICOM_JSON)
        objs = answer.json()
        assert len(objs) == count
        for obj in objs:
            assert value(obj, "0020000D") == study
            pixel = obj["7FE00010"]
            assert "InlineBinary" not in pixel and "Value" not in pixel
            assert pixel["BulkDataURI"].startswith(f"{loaded.url}{prefix}/studies/{study}/")
    obj = get(f"{base}/series/{series}/instances/{sop}/metadata", DICOM_JSON).json()[0]
    ds = pydicom.dcmread(tutorial_files[0], stop_before_pixels=True)
    assert value(obj, "00280010") == ds.Rows == 979
    assert value(obj, "00280011") == ds.Columns == 985
    assert obj["00100010"]["Value"][0]["Alphabetic"] == str(ds.PatientName)


def test_bulk_data_uri_resolves_to_the_pixel_data(loaded, tutorial_files, pydicom_files) -> None:
    path = tutorial_files[1]
    obj = get(instance_url(loaded.url, path) + "/metadata", DICOM_JSON).json()[0]
    uri = obj["7FE00010"]["BulkDataURI"]
    pixels = pydicom.dcmread(path).PixelData
    answer = get(uri)  # default: multipart/related; type=application/octet-stream
    assert answer.status_code == 200
    parts = split_multipart(answer)
    assert [c for _, c in parts] == [pixels]
    assert parts[0][0]["content-type"].startswith("application/octet-stream")
    single = get(uri, "application/octet-stream")
    assert single.content == pixels
    # encapsulated multi-frame: one part per frame, as stored
    path = pydicom_files["jpeg_baseline_multiframe"]
    obj = get(instance_url(loaded.url, path) + "/metadata", DICOM_JSON).json()[0]
    answer = get(obj["7FE00010"]["BulkDataURI"], FRAMES_ANY)
    ds = pydicom.dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=30))
    assert [c for _, c in split_multipart(answer)] == expected


def test_nested_and_large_bulk_data_resolve(loaded, pydicom_files) -> None:
    path = pydicom_files["no_pixels"]  # an ECG: waveform data in a sequence
    obj = get(instance_url(loaded.url, path) + "/metadata", DICOM_JSON).json()[0]
    ds = pydicom.dcmread(path)
    item = obj["54000100"]["Value"][0]
    uri = item["54001010"]["BulkDataURI"]
    assert "/bulkdata/54000100/0/54001010" in uri
    assert get(uri, "application/octet-stream").content == ds.WaveformSequence[0].WaveformData
    assert get(uri.replace("/0/", "/7/"), "application/octet-stream").status_code == 404


# --- frames ---------------------------------------------------------------------------------


def _frames_of(path: Path) -> np.ndarray:
    """pydicom's frames, laid out as native data of this instance: colour by plane when an
    uncompressed instance has PlanarConfiguration 1 (what its metadata tells clients)."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    arr = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[np.newaxis]
    if not ds.file_meta.TransferSyntaxUID.is_compressed and ds.get("PlanarConfiguration") == 1:
        arr = np.moveaxis(arr, -1, 1)
    return arr


@pytest.mark.parametrize("key", ["explicit", "implicit", "big_endian", "deflated",
                                 "native_multiframe", "jpeg_baseline_multiframe",
                                 "jpeg_extended", "jpeg_lossless", "jpeg_ls", "j2k",
                                 "j2k_lossy", "rle", "rle_multiframe", "rle_rgb_2frame",
                                 "big_endian_planar", "vr_mismatch"])
def test_frames_in_explicit_little_endian_equal_pydicom_pixels(loaded, pydicom_files,
                                                               key) -> None:
    path = pydicom_files[key]
    expected = _frames_of(path)
    wanted = [1, len(expected)] if len(expected) > 1 else [1]
    url = instance_url(loaded.url, path) + "/frames/" + ",".join(map(str, wanted))
    answer = get(url, FRAMES_NATIVE)
    assert answer.status_code == 200, answer.text
    parts = split_multipart(answer)
    assert len(parts) == len(wanted)
    for (headers, content), number in zip(parts, wanted, strict=True):
        assert headers["content-type"] == \
            f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        assert content == native_bytes(expected[number - 1]), (key, number)


@pytest.mark.parametrize("key", ["jpeg_baseline_multiframe", "jpeg_ls", "j2k", "rle",
                                 "rle_multiframe"])
def test_compressed_frames_as_stored_with_transfer_syntax_star(loaded, pydicom_files,
                                                               key) -> None:
    path = pydicom_files[key]
    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    stored = list(generate_frames(ds.PixelData, number_of_frames=count))
    wanted = [count, 1] if count > 1 else [1]
    url = instance_url(loaded.url, path) + "/frames/" + ",".join(map(str, wanted))
    answer = get(url, FRAMES_ANY)
    assert answer.status_code == 200
    parts = split_multipart(answer)
    syntax = ds.file_meta.TransferSyntaxUID
    for (headers, content), number in zip(parts, wanted, strict=True):
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={syntax}"
        assert content == stored[number - 1]
    # the same frames with their own media type (PS3.18 8.7.3)
    media = {"1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.80": "image/jls",
             "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.5": "image/dicom-rle"}
    answer = get(url, f'multipart/related; type="{media[syntax]}"')
    assert answer.status_code == 200, answer.text
    for (headers, content), number in zip(split_multipart(answer), wanted, strict=True):
        assert headers["content-type"] == f"{media[syntax]}; transfer-syntax={syntax}"
        assert content == stored[number - 1]
    # */* (what dicomweb-client sends by default) also returns the stored frames
    parts = split_multipart(get(url, 'multipart/related; type="*/*"'))
    assert [c for _, c in parts] == [stored[n - 1] for n in wanted]


def test_tutorial_frames_native_with_both_accepts(loaded, tutorial_files) -> None:
    path = tutorial_files[0]
    expected = native_bytes(pydicom.dcmread(path).pixel_array)
    url = instance_url(loaded.url, path) + "/frames/1"
    for accept in (FRAMES_NATIVE, FRAMES_ANY, None):
        answer = get(url, accept)
        assert answer.status_code == 200
        [(headers, content)] = split_multipart(answer)
        assert content == expected
        assert EXPLICIT_LE in headers["content-type"]
    single = get(url, "application/octet-stream")
    assert single.content == expected


def test_frame_errors(loaded, pydicom_files, tutorial_files) -> None:
    url = instance_url(loaded.url, pydicom_files["native_multiframe"])
    assert get(url + "/frames/16", FRAMES_NATIVE).status_code == 404
    assert get(url + "/frames/1,16", FRAMES_NATIVE).status_code == 404
    assert get(url + "/frames/0", FRAMES_NATIVE).status_code == 400
    assert get(url + "/frames/a", FRAMES_NATIVE).status_code == 400
    assert get(url + "/frames/1,,2", FRAMES_NATIVE).status_code == 400
    assert get(url + "/frames/1", "image/gif").status_code == 406
    jpeg = instance_url(loaded.url, pydicom_files["jpeg_baseline_multiframe"])
    # asking for JPEG 2000 frames of JPEG data: not available
    assert get(jpeg + "/frames/1", 'multipart/related; type="image/jp2"').status_code == 406
    no_pixels = instance_url(loaded.url, pydicom_files["no_pixels"])
    assert get(no_pixels + "/frames/1", FRAMES_NATIVE).status_code == 404
    study, series, _ = uids_of(tutorial_files[0])
    unknown = f"{loaded.url}/studies/{study}/series/{series}/instances/1.2.3.4/frames/1"
    assert get(unknown, FRAMES_NATIVE).status_code == 404


# --- rendered -------------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg"])
def test_rendered_instance_and_frame(loaded, tutorial_files, pydicom_files, media_type) -> None:
    url = instance_url(loaded.url, tutorial_files[0])
    answer = get(url + "/rendered", media_type)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == media_type
    image = Image.open(io.BytesIO(answer.content))
    assert image.size == (985, 979)
    assert image.format == ("PNG" if media_type == "image/png" else "JPEG")
    if media_type == "image/png":
        original = pydicom.dcmread(tutorial_files[0]).pixel_array
        assert np.array_equal(np.asarray(image.convert("RGB")), original)
    frames = instance_url(loaded.url, pydicom_files["native_multiframe"])
    answer = get(frames + "/frames/3/rendered", media_type)
    assert answer.status_code == 200
    grey = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert grey.shape == (10, 10)
    assert get(frames + "/frames/16/rendered", media_type).status_code == 404
    assert get(frames + "/frames/0/rendered", media_type).status_code == 400


def test_rendered_window_and_accept(loaded, pydicom_files) -> None:
    url = instance_url(loaded.url, pydicom_files["explicit"]) + "/rendered"
    narrow = np.asarray(Image.open(io.BytesIO(
        get(url, "image/png", params={"window": "0,1"}).content)))
    assert set(np.unique(narrow)) <= {0, 255}
    assert get(url, "application/dicom").status_code == 406
    assert get(url, "image/png", params={"window": "x"}).status_code == 400
    assert get(url).headers["Content-Type"] == "image/jpeg"  # the PS3.18 default


# --- not found / bad requests ---------------------------------------------------------------


def test_unknown_uids_are_404_and_malformed_uids_400(loaded, tutorial_files) -> None:
    study, series, sop = uids_of(tutorial_files[0])
    base = loaded.url
    for url in (f"{base}/studies/1.2.3", f"{base}/studies/1.2.3/metadata",
                f"{base}/studies/{study}/series/1.2.3",
                f"{base}/studies/{study}/series/1.2.3/metadata",
                f"{base}/studies/{study}/series/{series}/instances/1.2.3",
                f"{base}/studies/1.2.3/series/{series}/instances/{sop}",  # wrong study
                f"{base}/studies/{study}/series/{series}/instances/{sop}/bulkdata/00091001"):
        assert get(url).status_code == 404, url
    for url in (f"{base}/studies/1.2.abc",
                f"{base}/studies/{study}/series/{series}/instances/1.02.3",
                f"{base}/studies/{'1.' * 40}1"):
        assert get(url).status_code == 400, url
    # path traversal attempts, sent as written: never a file outside the archive
    for path in (f"/studies/{study}/series/..", "/studies/%2e%2e/metadata",
                 f"/studies/{study}/series/..%2F..%2F..%2Fetc/instances/passwd",
                 "/studies/..%2F..%2Findex.sqlite3",
                 f"/studies/{study}/series/{series}/instances/..%2f{sop}",
                 f"/v1/studies/{study}/series/{series}/instances/{sop}/bulkdata/..%2F..%2F..",
                 "/studies/1.2.3%00/metadata"):
        assert raw_get(base, path) in (400, 404), path
