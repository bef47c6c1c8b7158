"""STOW-RS conformance (PS3.18 10.5 and the tutorial's calls 1-3), over plain HTTP."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
import requests

from .server_helpers import (
    DICOM_JSON,
    failure_reasons,
    instance_url,
    multipart_body,
    referenced,
    stow,
    uids_of,
    value,
)

STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"


@pytest.mark.parametrize("prefix", ["", "/v1", "/v2"])
def test_store_tutorial_files_returns_references_with_retrieve_urls(
        server, tutorial_files: list[Path], prefix: str) -> None:
    base = server.url + prefix
    answer = stow(base, tutorial_files)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(DICOM_JSON)
    body = answer.json()
    assert value(body, "00081190") == f"{base}/studies/{STUDY}"
    items = body["00081199"]["Value"]
    assert [i["00081155"]["Value"][0] for i in items] == [uids_of(p)[2] for p in tutorial_files]
    for item, path in zip(items, tutorial_files, strict=True):
        assert value(item, "00081150") == "1.2.840.10008.5.1.4.1.1.7"
        url = value(item, "00081190")
        assert url == instance_url(base, path)
        got = requests.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert got.status_code == 200
        assert got.content == path.read_bytes()
    assert "00081198" not in body


@pytest.mark.parametrize(("quoted", "type_param"), [(True, True), (False, True), (True, False),
                                                    (False, False)])
def test_boundary_quoted_or_not_type_present_or_not(server, tutorial_files, quoted,
                                                     type_param) -> None:
    answer = stow(server.url, tutorial_files[:1], quoted=quoted, type_param=type_param)
    assert answer.status_code == 200, answer.text
    assert referenced(answer.json()) == [uids_of(tutorial_files[0])[2]]


def test_store_to_study_and_wrong_study_parts_fail_with_43265(server, tutorial_files,
                                                              pydicom_files) -> None:
    other = pydicom_files["explicit"]
    answer = stow(server.url, [tutorial_files[0], other], study=STUDY)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert referenced(body) == [uids_of(tutorial_files[0])[2]]
    assert failure_reasons(body) == [43265]
    assert value(body["00081198"]["Value"][0], "00081155") == uids_of(other)[2]
    # none of the parts belongs to the study: 409
    answer = stow(server.url, [other], study=STUDY)
    assert answer.status_code == 409
    assert failure_reasons(answer.json()) == [43265]


def test_already_stored_instance_fails_with_409_and_45070(server, tutorial_files) -> None:
    assert stow(server.url, tutorial_files[:2]).status_code == 200
    answer = stow(server.url, tutorial_files[:1])
    assert answer.status_code == 409
    assert failure_reasons(answer.json()) == [45070]
    answer = stow(server.url, tutorial_files)  # two stored before, one new
    assert answer.status_code == 202
    assert failure_reasons(answer.json()) == [45070, 45070]
    assert referenced(answer.json()) == [uids_of(tutorial_files[2])[2]]


def test_single_part_application_dicom(server, tutorial_files) -> None:
    data = tutorial_files[1].read_bytes()
    headers = {"Content-Type": "application/dicom", "Accept": DICOM_JSON}
    answer = requests.post(f"{server.url}/v1/studies", data=data, headers=headers)
    assert answer.status_code == 200, answer.text
    assert referenced(answer.json()) == [uids_of(tutorial_files[1])[2]]
    again = requests.post(f"{server.url}/v1/studies", data=data, headers=headers)
    assert again.status_code == 409
    assert failure_reasons(again.json()) == [45070]
    to_study = requests.post(f"{server.url}/studies/{STUDY}", data=tutorial_files[2].read_bytes(),
                             headers=headers)
    assert to_study.status_code == 200


def test_non_dicom_part_fails_alone_with_272(server, tutorial_files) -> None:
    answer = stow(server.url, [tutorial_files[0], b"this is not a DICOM file", tutorial_files[1]])
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert failure_reasons(body) == [272]
    assert referenced(body) == [uids_of(p)[2] for p in tutorial_files[:2]]
    only_bad = stow(server.url, [b"\0" * 300])
    assert only_bad.status_code == 409
    assert failure_reasons(only_bad.json()) == [272]


def test_part_of_another_media_type_fails_alone(server, tutorial_files) -> None:
    boundary = "xyz123"
    body = multipart_body([tutorial_files[0].read_bytes()], boundary)[: -len("--xyz123--\r\n")]
    body += b"--xyz123\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xyz123--\r\n"
    answer = requests.post(f"{server.url}/studies", data=body, headers={
        "Content-Type": f"multipart/related; type=\"application/dicom\"; boundary={boundary}"})
    assert answer.status_code == 202, answer.text
    assert failure_reasons(answer.json()) == [272]


def test_invalid_uid_in_file_fails_with_43264(server, tutorial_files, tmp_path) -> None:
    ds = pydicom.dcmread(tutorial_files[0])
    ds.SOPInstanceUID = "../../../etc/passwd"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    answer = stow(server.url, [bad])
    assert answer.status_code == 409
    assert failure_reasons(answer.json()) == [43264]
    assert not list(Path(server.path).rglob("passwd*"))


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; boundary=abc",
    "application/json",
    'multipart/related; type="application/dicom+json"; boundary=abc',
    "text/plain",
])
def test_wrong_content_type_is_415(server, content_type) -> None:
    answer = requests.post(f"{server.url}/studies", data=b"--abc--\r\n",
                           headers={"Content-Type": content_type})
    assert answer.status_code == 415


def test_wrong_accept_is_406(server, tutorial_files) -> None:
    answer = stow(server.url, tutorial_files[:1], accept="application/dicom+xml")
    assert answer.status_code == 406
    assert stow(server.url, tutorial_files[:1], accept="*/*").status_code == 200


def test_malformed_and_truncated_bodies_are_400_and_store_nothing(server, tutorial_files) -> None:
    full = multipart_body([p.read_bytes() for p in tutorial_files], "cut")
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=cut'}
    answer = requests.post(f"{server.url}/studies", data=full[: len(full) // 2], headers=headers)
    assert answer.status_code == 400
    assert "truncated" in answer.text
    answer = requests.post(f"{server.url}/studies", data=full,
                           headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert answer.status_code == 400  # no boundary
    assert requests.get(f"{server.url}/studies").json() == []


def test_invalid_study_uid_in_path_is_400(server, tutorial_files) -> None:
    answer = stow(server.url, tutorial_files[:1], study="1.2.abc")
    assert answer.status_code == 400
    assert "StudyInstanceUID" in answer.text


def test_stored_pydicom_files_come_back_byte_for_byte(server, pydicom_files) -> None:
    answer = stow(server.url, list(pydicom_files.values()))
    assert answer.status_code == 200, answer.text
    assert len(referenced(answer.json())) == len(pydicom_files)
    for key, path in pydicom_files.items():
        got = requests.get(instance_url(server.url, path),
                           headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert got.status_code == 200
        if key == "deflated":  # stored inflated (once, at STOW): the same data set
            stored, sent = pydicom.dcmread(io.BytesIO(got.content)), pydicom.dcmread(path)
            assert stored.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert stored == sent
            continue
        assert got.content == path.read_bytes(), path.name


def test_file_cut_short_in_its_pixel_data_fails_alone_and_is_named(server, tutorial_files,
                                                                     pydicom_files) -> None:
    # a fresh instance (new UIDs), then cut in the middle of its pixel data
    ds = pydicom.dcmread(pydicom_files["explicit"])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    whole = buffer.getvalue()
    cut = whole[: len(whole) - len(ds.PixelData) // 2]
    answer = stow(server.url, [cut, pydicom_files["rle"]])
    assert answer.status_code == 202, answer.text
    body = answer.json()
    failed = body["00081198"]["Value"]
    assert len(failed) == 1
    assert value(failed[0], "00081197") == 272
    assert value(failed[0], "00081155") == ds.SOPInstanceUID
    assert value(failed[0], "00081150") == ds.SOPClassUID
    assert referenced(body) == [uids_of(pydicom_files["rle"])[2]]
