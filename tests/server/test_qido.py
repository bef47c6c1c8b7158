"""QIDO-RS conformance (PS3.18 10.6, matching per PS3.4 C.2.2.2; the tutorial's calls 11-16).

Expected answers are computed here from the files themselves with pydicom and plain Python,
then compared with what the server finds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomframes import samples
from dicomframes.server import Server, serve

from .server_helpers import DICOM_JSON, stow, uids_of, value

TUTORIAL_STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
NAMES = ["Doe^John^A", "DOE^Jane", "van Dyke^Dick", "Doeson^Anna", "Smith^John"]


def _people(folder: Path) -> list[Path]:
    """Five one-instance studies with chosen names, dates and times (CT_small's pixels)."""
    paths = []
    for number, name in enumerate(NAMES):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = name
        ds.PatientID = f"P{number}"
        ds.StudyDate = f"2019{number + 1:02d}15"
        ds.StudyTime = f"{8 + number:02d}3000"
        ds.StudyDescription = f"Study of {name.split('^')[0]}"
        ds.AccessionNumber = f"A[{number}]_%"
        path = folder / f"person{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def archive_files(tmp_path_factory: pytest.TempPathFactory, tutorial_files) -> list[Path]:
    folder = tmp_path_factory.mktemp("qido-files")
    return [*tutorial_files, *samples.write_archive(folder / "archive", patients=5, seed=0),
            *_people(folder)]


@pytest.fixture(scope="module")
def datasets(archive_files) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in archive_files]


@pytest.fixture(scope="module")
def qido(tmp_path_factory, archive_files) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("qido-archive")) as server:
        for start in range(0, len(archive_files), 50):
            answer = stow(server.url, archive_files[start:start + 50])
            assert answer.status_code == 200, answer.text
        yield server


def search(server: Server, path: str, params=None, *, status: int = 200,
           accept: str | None = DICOM_JSON) -> list[dict]:
    headers = {"Accept": accept} if accept else {}
    answer = requests.get(server.url + path, params=params, headers=headers, timeout=60)
    assert answer.status_code == status, answer.text
    if status != 200:
        return []
    assert answer.headers["Content-Type"].startswith(DICOM_JSON)
    return answer.json()


def studies_where(datasets, predicate: Callable[[pydicom.Dataset], bool]) -> set[str]:
    return {ds.StudyInstanceUID for ds in datasets if predicate(ds)}


def study_uids(objs: list[dict]) -> set[str]:
    uids = [value(o, "0020000D") for o in objs]
    assert len(uids) == len(set(uids)), "a study was returned twice"
    return set(uids)


# --- the tutorial's searches ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1", "/v2"])
def test_tutorial_searches(qido, tutorial_files, prefix) -> None:
    study, series, sop = uids_of(tutorial_files[0])
    [found] = search(qido, f"{prefix}/studies", {"StudyInstanceUID": study})
    assert value(found, "0020000D") == study
    assert value(found, "00081190") == f"{qido.url}{prefix}/studies/{study}"
    [found] = search(qido, f"{prefix}/series", {"SeriesInstanceUID": series})
    assert value(found, "0020000E") == series
    assert value(found, "0020000D") == study  # study attributes come along at /series
    [found] = search(qido, f"{prefix}/studies/{study}/series", {"SeriesInstanceUID": series})
    assert value(found, "00201209") == 2
    assert "00100010" not in found  # not when the study is in the path
    for path in ("/instances", f"/studies/{study}/instances",
                 f"/studies/{study}/series/{series}/instances"):
        [found] = search(qido, prefix + path, {"SOPInstanceUID": sop})
        assert value(found, "00080018") == sop
        assert value(found, "00081190") == \
            f"{qido.url}{prefix}/studies/{study}/series/{series}/instances/{sop}"
    assert search(qido, "/studies", {"PatientName": "Anony Mous"})
    assert search(qido, "/studies", {"0020000D": study})  # a tag instead of a keyword


def test_study_defaults_and_computed_attributes(qido, tutorial_files) -> None:
    [found] = search(qido, "/studies", {"StudyInstanceUID": TUTORIAL_STUDY})
    for tag in ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
                "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D",
                "00200010", "00201206", "00201208"):
        assert tag in found, tag
    assert found["00080061"]["Value"] == ["OT"]
    assert value(found, "00201206") == 2
    assert value(found, "00201208") == 3
    assert value(found, "00080056") == "ONLINE"
    assert found["00100010"]["Value"][0]["Alphabetic"] == "Anony Mous"
    assert value(found, "00080020") == "20200922"


def test_series_and_instance_defaults(qido, tutorial_files) -> None:
    study, series, sop = uids_of(tutorial_files[0])
    [found] = search(qido, f"/studies/{study}/series", {"SeriesInstanceUID": series})
    for tag in ("00080060", "0020000E", "00200011", "00201209", "00081190"):
        assert tag in found, tag
    [found] = search(qido, f"/studies/{study}/series/{series}/instances", {"SOPInstanceUID": sop})
    for tag in ("00080016", "00080018", "00080056", "00200013", "00280010", "00280011",
                "00280100", "00081190"):
        assert tag in found, tag
    assert value(found, "00280010") == 979
    # the parent UIDs are returned (as Orthanc does; dicomtrolley needs them), the patient not
    assert value(found, "0020000E") == series and value(found, "0020000D") == study
    assert "00100010" not in found
    [found] = search(qido, "/instances", {"SOPInstanceUID": sop})
    assert value(found, "0020000E") == series and value(found, "0020000D") == study


# --- matching -------------------------------------------------------------------------------


def test_no_match_is_200_with_an_empty_array(qido) -> None:
    assert search(qido, "/studies", {"PatientID": "nobody"}) == []
    assert search(qido, "/instances", {"SOPInstanceUID": "1.2.3"}) == []


def test_uid_list_matching(qido, datasets) -> None:
    some = sorted({ds.StudyInstanceUID for ds in datasets})[:3]
    assert study_uids(search(qido, "/studies", {"StudyInstanceUID": ",".join(some)})) == set(some)
    assert study_uids(search(qido, "/studies", {"StudyInstanceUID": "\\".join(some)})) == \
        set(some)


@pytest.mark.parametrize(("key", "pattern", "predicate"), [
    ("PatientID", "DF000*", lambda ds: str(ds.PatientID).startswith("DF000")),
    ("PatientID", "P?", lambda ds: len(str(ds.PatientID)) == 2 and ds.PatientID[0] == "P"),
    ("PatientName", "Doe*", lambda ds: str(ds.PatientName).lower().startswith("doe")),
    ("PatientName", "*^J*", lambda ds: "^j" in str(ds.PatientName).lower()),
    ("PatientName", "M?ller^*", lambda ds: str(ds.PatientName).startswith("Müller^")),
    ("AccessionNumber", "A[1]_%", lambda ds: ds.get("AccessionNumber") == "A[1]_%"),
    ("AccessionNumber", "A[*", lambda ds: str(ds.get("AccessionNumber", "")).startswith("A[")),
    ("StudyDescription", "*of Doe*",
     lambda ds: "of Doe" in str(ds.get("StudyDescription", ""))),
])
def test_wildcard_matching(qido, datasets, key, pattern, predicate) -> None:
    expected = studies_where(datasets, predicate)
    assert expected
    assert study_uids(search(qido, "/studies", {key: pattern})) == expected


def test_person_names_match_without_regard_to_case(qido, datasets) -> None:
    expected = studies_where(datasets, lambda ds: str(ds.PatientName) == "Müller^Luca")
    assert len(expected) > 1
    assert study_uids(search(qido, "/studies", {"PatientName": "MÜLLER^luca"})) == expected
    assert search(qido, "/studies", {"PatientName": "Müller"}) == []  # not a prefix match


@pytest.mark.parametrize(("query", "names"), [
    ("joh", {"Doe^John^A", "Smith^John"}),
    ("DOE", {"Doe^John^A", "DOE^Jane", "Doeson^Anna"}),
    ("doe j", {"Doe^John^A", "DOE^Jane"}),
    ("dyk", {"van Dyke^Dick"}),
    ("john doe", {"Doe^John^A"}),
    ("doe^john", {"Doe^John^A"}),
    ("ohn", set()),
])
def test_fuzzy_matching_is_a_word_prefix_match(qido, datasets, query, names) -> None:
    found = search(qido, "/studies", {"PatientName": query, "fuzzymatching": "true"})
    got = {o["00100010"]["Value"][0]["Alphabetic"] for o in found}
    expected = {str(ds.PatientName) for ds in datasets
                if all(any(word.startswith(q) for word in
                           str(ds.PatientName).replace("^", " ").lower().split())
                       for q in query.replace("^", " ").lower().split())}
    assert got == expected
    assert got & set(NAMES) == names


def test_without_fuzzy_matching_a_word_is_not_enough(qido) -> None:
    assert search(qido, "/studies", {"PatientName": "john", "fuzzymatching": "false"}) == []


@pytest.mark.parametrize(("query", "low", "high"), [
    ("20160101-20171231", "20160101", "20171231"),
    ("20200101-", "20200101", "99999999"),
    ("-20131231", "00000000", "20131231"),
    ("20200922", "20200922", "20200922"),
])
def test_date_ranges(qido, datasets, query, low, high) -> None:
    expected = studies_where(datasets, lambda ds: low <= ds.StudyDate <= high)
    assert expected
    assert study_uids(search(qido, "/studies", {"StudyDate": query})) == expected


@pytest.mark.parametrize(("query", "low", "high"), [
    ("080000-100000", "080000", "100000"),
    ("1200-", "120000", "999999"),
    ("-0800", "000000", "080059"),
    ("09", "090000", "095959"),
])
def test_time_ranges(qido, datasets, query, low, high) -> None:
    expected = studies_where(datasets,
                             lambda ds: low <= str(ds.StudyTime).split(".")[0] <= high)
    assert expected
    assert study_uids(search(qido, "/studies", {"StudyTime": query})) == expected


def test_modalities_in_study_and_modality(qido, datasets) -> None:
    expected = studies_where(datasets, lambda ds: ds.Modality == "CR")
    assert expected
    found = search(qido, "/studies", {"ModalitiesInStudy": "CR"})
    assert study_uids(found) == expected
    assert all("CR" in o["00080061"]["Value"] for o in found)
    either = studies_where(datasets, lambda ds: ds.Modality in ("CR", "OT"))
    assert study_uids(search(qido, "/studies", {"ModalitiesInStudy": "CR,OT"})) == either
    series = {ds.SeriesInstanceUID for ds in datasets if ds.Modality == "MR"}
    found = search(qido, "/series", {"Modality": "MR"})
    assert {value(o, "0020000E") for o in found} == series


def test_relational_queries_use_upper_level_attributes(qido, datasets) -> None:
    expected = {ds.SeriesInstanceUID for ds in datasets if ds.PatientID == "DF0003"}
    found = search(qido, "/series", {"PatientID": "DF0003"})
    assert {value(o, "0020000E") for o in found} == expected
    expected = {ds.SOPInstanceUID for ds in datasets
                if ds.Modality == "CT" and ds.StudyDate >= "20200101"}
    found = search(qido, "/instances", {"Modality": "CT", "StudyDate": "20200101-"})
    assert {value(o, "00080018") for o in found} == expected


def test_integer_matching(qido, datasets) -> None:
    expected = {ds.SOPInstanceUID for ds in datasets if ds.get("InstanceNumber") == 3}
    found = search(qido, "/instances", {"InstanceNumber": "3"})
    assert {value(o, "00080018") for o in found} == expected


def test_computed_counts_match_the_files(qido, datasets) -> None:
    found = {value(o, "0020000D"): o for o in search(qido, "/studies")}
    for study in {ds.StudyInstanceUID for ds in datasets}:
        members = [ds for ds in datasets if ds.StudyInstanceUID == study]
        obj = found[study]
        assert value(obj, "00201208") == len(members)
        assert value(obj, "00201206") == len({ds.SeriesInstanceUID for ds in members})
        assert obj["00080061"]["Value"] == sorted({ds.Modality for ds in members})


# --- includefield, limit, offset ------------------------------------------------------------


def test_includefield_list_repeated_and_all(qido, tutorial_files) -> None:
    study, series, _ = uids_of(tutorial_files[0])
    [plain] = search(qido, "/studies", {"StudyInstanceUID": study})
    assert "00101010" not in plain  # PatientAge is not a default
    [one] = search(qido, "/studies", [("StudyInstanceUID", study),
                                      ("includefield", "PatientAge,00280010"),
                                      ("includefield", "SOPClassUID")])
    assert value(one, "00101010") == "024Y"
    assert value(one, "00280010") == 979  # an instance attribute, from the first instance
    assert value(one, "00080016") == "1.2.840.10008.5.1.4.1.1.7"
    [everything] = search(qido, f"/studies/{study}/series/{series}/instances",
                          {"includefield": "all", "limit": 1})
    ds = pydicom.dcmread(tutorial_files[0], stop_before_pixels=True)
    assert value(everything, "00204000") == ds.ImageComments
    assert "7FE00010" in everything and "InlineBinary" not in everything["7FE00010"]
    [study_all] = search(qido, "/studies", {"StudyInstanceUID": study, "includefield": "all"})
    assert value(study_all, "00101010") == "024Y"
    assert "00280010" not in study_all  # all = the study's attributes, not an instance's


def test_empty_value_returns_the_attribute(qido, tutorial_files) -> None:
    found = search(qido, "/studies", {"StudyDescription": "", "PatientID": "P1"})
    assert [value(o, "00081030") for o in found] == ["Study of DOE"]


def test_limit_and_offset_page_through_results(qido, datasets) -> None:
    everything = search(qido, "/instances")
    assert len(everything) == len(datasets)
    pages = []
    for offset in range(0, len(datasets), 40):
        pages += search(qido, "/instances", {"limit": 40, "offset": offset})
    assert [value(o, "00080018") for o in pages] == [value(o, "00080018") for o in everything]
    assert len(search(qido, "/studies", {"limit": 2})) == 2
    assert search(qido, "/studies", {"offset": 10_000}) == []


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "words"), [
    ("/studies", {"NoSuchKeyword": "x"}, ["NoSuchKeyword"]),
    ("/studies", {"PatientWeight": "70"}, ["PatientWeight", "00101030"]),
    ("/studies", {"Modality": "CT"}, ["Modality", "study"]),
    ("/series", {"SOPInstanceUID": "1.2.3"}, ["SOPInstanceUID"]),
    ("/studies", {"StudyDate": "2020-01"}, ["StudyDate"]),
    ("/studies", {"StudyDate": "yesterday"}, ["StudyDate"]),
    ("/studies", {"StudyInstanceUID": "1.2.x"}, ["StudyInstanceUID"]),
    ("/studies", {"StudyInstanceUID": "1.2.*"}, ["wildcard"]),
    ("/studies", {"limit": "-1"}, ["limit"]),
    ("/studies", {"offset": "x"}, ["offset"]),
    ("/studies", {"fuzzymatching": "maybe"}, ["fuzzymatching"]),
    ("/studies", {"includefield": "NotAnAttribute"}, ["NotAnAttribute"]),
    ("/studies", {"StudyDate.PatientID": "1.2"}, ["not a sequence"]),
    ("/instances", {"SeriesNumber": "two"}, ["SeriesNumber"]),
])
def test_unsupported_queries_are_400_with_a_message(qido, path, params, words) -> None:
    answer = requests.get(qido.url + path, params=params)
    assert answer.status_code == 400
    for word in words:
        assert word in answer.text


def test_search_accept_and_unknown_path_uids(qido) -> None:
    search(qido, "/studies", accept="application/dicom+xml", status=406)
    search(qido, "/studies", accept="application/json")
    search(qido, "/studies", accept=None)
    search(qido, "/studies/1.2.x/series", status=400)
    assert search(qido, "/studies/1.2.3/series") == []
