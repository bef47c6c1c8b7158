"""The Python dicomweb-client against the loaded embedded server and Orthanc: searches at every
level (hierarchical too), metadata at three levels, retrieve of every stored file at the
instance, series and study levels, frames, rendered, store and delete.

tests/server/test_dicomweb_client.py covers bulk data, fuzzy matching, paging and compressed
multi-frame frames on the embedded server; this module adds the corpus-wide matrix."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
import requests
from PIL import Image
from support import TUTORIAL_DATA, make_dataset, to_bytes

from .conftest import (
    CANNOT_TRANSCODE,
    Stored,
    Target,
    check_parts,
    chosen_levels,
    frame_count,
    frames_refused,
    levels,
    original,
    value,
)

dicomweb_client = pytest.importorskip("dicomweb_client")
from dicomweb_client.api import DICOMwebClient  # noqa: E402

ANY = (("application/dicom", "*"),)


def client_of(target: Target) -> DICOMwebClient:
    """A dicomweb-client for the target's DICOMweb root."""
    return DICOMwebClient(url=target.url)


def retrieve(client: DICOMwebClient, level: str, uids: tuple[str, ...],
             any_syntax: bool) -> list[pydicom.Dataset]:
    """Retrieve the instances of a study, series or instance with the client's own calls."""
    media = ANY if any_syntax else ("application/dicom",)  # its own default is "*"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if level == "instance":
            return [client.retrieve_instance(*uids, media_types=media)]
        if level == "series":
            return client.retrieve_series(*uids, media_types=media)
        return client.retrieve_study(*uids, media_types=media)


def part10(ds: pydicom.Dataset) -> pydicom.Dataset:
    """``ds`` with complete File Meta Information, as read from a file (what the client
    writes is the dataset as it is: without that, servers refuse it)."""
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def uid_set(results: list[dict], tag: str) -> set[str]:
    """The values of a UID attribute over QIDO results."""
    return {str(value(entry, tag)) for entry in results}


# -- search ---------------------------------------------------------------------------------


def test_search_studies(target: Target) -> None:
    client = client_of(target)
    assert uid_set(client.search_for_studies(), "0020000D") == set(target.studies())
    tutorial = target.by_name("green-square.dcm").study
    found = client.search_for_studies(search_filters={"PatientName": "Anony*"})
    if target.kind == "orthanc":  # the client sends Anony%2A, which Orthanc does not decode
        assert found == []
    else:
        assert tutorial in uid_set(found, "0020000D")
    rtdose = target.by_name("rtdose.dcm")
    found = client.search_for_studies(search_filters={"ModalitiesInStudy": "RTDOSE"})
    assert rtdose.study in uid_set(found, "0020000D")


def test_search_series_and_instances(target: Target) -> None:
    client = client_of(target)
    assert uid_set(client.search_for_series(), "0020000E") == {s for _, s in target.series()}
    assert uid_set(client.search_for_instances(), "00080018") == \
        {item.sop for item in target.stored}
    for study in target.studies():
        expected = target.in_study(study)
        assert uid_set(client.search_for_series(study), "0020000E") == \
            {item.series for item in expected}
        assert uid_set(client.search_for_instances(study), "00080018") == \
            {item.sop for item in expected}
    for study, series in target.series():
        assert uid_set(client.search_for_instances(study, series), "00080018") == \
            {item.sop for item in target.in_series(series)}


def test_hierarchical_results_carry_parent_uids(target: Target) -> None:
    """PS3.18 10.6.3.3: results include the UIDs of the resource searched in."""
    client = client_of(target)
    study, series = target.series()[0]
    for entry in client.search_for_series(study):
        assert value(entry, "0020000D") == study
    for entry in client.search_for_instances(study, series):
        assert (value(entry, "0020000D"), value(entry, "0020000E")) == (study, series)


def test_instances_by_modalities_in_study(target: Target) -> None:
    rtdose = target.by_name("rtdose.dcm")
    found = client_of(target).search_for_instances(
        search_filters={"ModalitiesInStudy": "RTDOSE"})
    if target.kind == "orthanc":  # 200 but no instance: Orthanc ignores it here (README)
        assert found == []
    else:
        assert rtdose.sop in uid_set(found, "00080018")


# -- metadata -------------------------------------------------------------------------------


def _check_metadata(entries: list[dict], expected: list[Stored], target_kind: str) -> None:
    assert uid_set(entries, "00080018") == {item.sop for item in expected}
    by_sop = {item.sop: item for item in expected}
    for entry in entries:
        item = by_sop[str(value(entry, "00080018"))]
        assert value(entry, "0020000D") == item.study and value(entry, "0020000E") == item.series
        if item.has_pixels and target_kind != "orthanc":  # README: Orthanc omits some
            pixel = entry.get("7FE00010", {})
            assert "BulkDataURI" in pixel or "InlineBinary" in pixel, item.name


def test_metadata_at_three_levels(target: Target) -> None:
    client = client_of(target)
    for item in target.stored:
        _check_metadata([client.retrieve_instance_metadata(item.study, item.series, item.sop)],
                        [item], target.kind)
    for study, series in target.series():
        _check_metadata(client.retrieve_series_metadata(study, series),
                        target.in_series(series), target.kind)
    for study in target.studies():
        _check_metadata(client.retrieve_study_metadata(study), target.in_study(study),
                        target.kind)


# -- retrieve -------------------------------------------------------------------------------


def test_retrieve_every_file_as_stored(target: Target) -> None:
    """transfer-syntax=*: every instance, series and study comes back as stored."""
    client = client_of(target)
    problems = []
    for level, uids, expected in levels(target):
        parts = retrieve(client, level, uids, any_syntax=True)
        problems += [f"{level} {p}" for p in check_parts(target, expected, parts, True)]
    assert not problems, "\n".join(problems)


def _default_retrieve_problems(target: Target, client: DICOMwebClient,
                               undecodable: bool) -> list[str]:
    problems = []
    for level, uids, expected in chosen_levels(target, undecodable):
        try:
            parts = retrieve(client, level, uids, any_syntax=False)
        except requests.HTTPError as error:  # cannot be sent in the syntax asked for
            if error.response is None or \
                    error.response.status_code not in CANNOT_TRANSCODE[target.kind]:
                problems.append(f"{level} {uids}: {error}")
            continue
        except Exception as error:  # a body cut short, for instance
            problems.append(f"{level} {uids}: {type(error).__name__}: {error}")
            continue
        problems += [f"{level} {p}" for p in check_parts(target, expected, parts, False)]
    return problems


def test_retrieve_every_file_by_default(target: Target) -> None:
    """Default Accept: Explicit VR Little Endian (lossy data may come as stored), or 406."""
    problems = _default_retrieve_problems(target, client_of(target), False)
    assert not problems, "\n".join(problems)


def test_retrieve_undecodable_lossy_by_default(target: Target) -> None:
    """Files pydicom cannot decode (JPEG 12-bit...): 406 or sent as stored (lossy), never a
    200 cut short."""
    problems = _default_retrieve_problems(target, client_of(target), True)
    assert not problems, "\n".join(problems)


# -- frames and rendered --------------------------------------------------------------------


def test_frames_of_every_image(target: Target) -> None:
    """The first and last frame of every image, as stored (octet-stream or the stored
    compressed type); a file whose pixel data is cut short (MR_truncated.dcm) gets a 4xx."""
    client = client_of(target)
    problems = []
    for item in target.stored:
        if not item.has_pixels:
            continue
        wanted = sorted({1, frame_count(item)})
        try:
            got = client.retrieve_instance_frames(item.study, item.series, item.sop,
                                                  frame_numbers=wanted,
                                                  media_types=(("application/octet-stream",
                                                                "*"),))
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if not frames_refused(target, item, status):
                problems.append(f"{item.name}: {error}")
            continue
        if len(got) != len(wanted) or not all(got):
            problems.append(f"{item.name}: {len(got)} frames")
    assert not problems, "\n".join(problems)


def test_frames_with_the_clients_default_accept(target: Target) -> None:
    """dicomweb-client asks for frames with type="*/*"; Orthanc answers 400 (README)."""
    item = target.by_name("CT_small.dcm")
    call = (item.study, item.series, item.sop)
    if target.kind == "orthanc":
        with pytest.raises(requests.HTTPError):
            client_of(target).retrieve_instance_frames(*call, frame_numbers=[1])
        return
    assert client_of(target).retrieve_instance_frames(*call, frame_numbers=[1]) == \
        [original(item).PixelData]


@pytest.mark.parametrize("name", ["green-square.dcm", "CT_small.dcm", "rtdose.dcm",
                                  "examples_ybr_color.dcm"])
def test_rendered(target: Target, name: str) -> None:
    client = client_of(target)
    item = target.by_name(name)
    ds = original(item)
    if target.kind == "orthanc" and name == "rtdose.dcm":  # README: Orthanc cannot render it
        with pytest.raises(requests.HTTPError):
            client.retrieve_instance_rendered(item.study, item.series, item.sop)
        return
    png = client.retrieve_instance_rendered(item.study, item.series, item.sop,
                                            media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).size == (ds.Columns, ds.Rows)
    jpeg = client.retrieve_instance_frames_rendered(item.study, item.series, item.sop,
                                                    frame_numbers=[1],
                                                    media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"


# -- store and delete -----------------------------------------------------------------------


def test_store_new_duplicate_and_other_study(scratch: Target) -> None:
    client = client_of(scratch)
    first = part10(make_dataset())
    answer = client.store_instances([first])
    assert [str(s.ReferencedSOPInstanceUID) for s in answer.ReferencedSOPSequence] == \
        [first.SOPInstanceUID]
    if scratch.kind == "orthanc":  # a duplicate is stored again
        assert not client.store_instances([first]).get("FailedSOPSequence")
    else:  # a duplicate is refused as already stored (reason 0xB00E, as Azure does)
        with pytest.raises(requests.HTTPError) as duplicate:
            client.store_instances([first])
        assert duplicate.value.response is not None
        assert duplicate.value.response.status_code == 409
        assert duplicate.value.response.json()["00081198"]["Value"][0]["00081197"]["Value"] \
            == [0xB00E]
    same_study = part10(make_dataset(first.StudyInstanceUID, first.SeriesInstanceUID, number=2))
    client.store_instances([same_study], study_instance_uid=first.StudyInstanceUID)
    other = part10(make_dataset())
    with pytest.raises(requests.HTTPError) as refused:
        client.store_instances([other], study_instance_uid=first.StudyInstanceUID)
    assert refused.value.response is not None and refused.value.response.status_code == 409
    found = client.search_for_instances(first.StudyInstanceUID)
    assert uid_set(found, "00080018") == {first.SOPInstanceUID, same_study.SOPInstanceUID}
    assert client.search_for_studies(search_filters={
        "StudyInstanceUID": other.StudyInstanceUID}) == []


@pytest.mark.parametrize("scratch", ["embedded"], indirect=True)
def test_delete(scratch: Target) -> None:
    """Orthanc's DICOMweb plugin has no DELETE (README: tested clients and servers)."""
    client = client_of(scratch)
    datasets = [pydicom.dcmread(TUTORIAL_DATA / name) for name in
                ("green-square.dcm", "red-triangle.dcm", "blue-circle.dcm")]
    client.store_instances(datasets)
    first = datasets[0]
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    client.delete_instance(study, series, first.SOPInstanceUID)
    assert len(client.search_for_instances(study)) == 2
    client.delete_series(study, series)
    assert len(client.search_for_instances(study)) == 1
    client.delete_study(study)
    assert client.search_for_studies() == []
