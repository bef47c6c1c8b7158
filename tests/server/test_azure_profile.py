"""The Azure-strict profile (serve(profile="azure")): searches refused as the Azure DICOM
service refuses them, 204 for no match, everything else as the default profile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomframes.server import Server, serve

from .server_helpers import stow, uids_of

STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
JSON = {"Accept": "application/dicom+json"}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, tutorial_files: list[Path]
           ) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("strict"), profile="azure") as running:
        assert stow(running.url + "/v2", tutorial_files).status_code == 200
        yield running


def get(server: Server, path_query: str) -> requests.Response:
    return requests.get(f"{server.url}/v2/{path_query}", headers=JSON, timeout=30)


@pytest.mark.parametrize("path_query", [
    f"studies?StudyInstanceUID={STUDY}",
    "studies?PatientID=ID1",
    "studies?PatientName=anon&fuzzymatching=true",
    "studies?StudyDate=20200101-20201231",
    "studies?00100020=ID1&limit=200&offset=0",
    "series?Modality=OT&includefield=all",
    f"studies/{STUDY}/series?Modality=OT",
])
def test_what_azure_accepts_is_answered(strict: Server, path_query: str) -> None:
    answer = get(strict, path_query)
    assert answer.status_code == 200, answer.text
    assert answer.json()


@pytest.mark.parametrize(("path_query", "named"), [
    ("studies?PatientID=ID*", "wildcard"),
    ("studies?PatientName=Anony?Mous", "wildcard"),
    ("studies?Modality=OT", "Modality is not a searchable attribute"),
    ("studies?NumberOfStudyRelatedInstances=3", "not a searchable attribute"),
    (f"studies/{STUDY}/series?PatientID=ID1", "not a searchable attribute for a study's series"),
    ("studies?PatientID=", "empty"),
    ("studies?PatientID=ID1&limit=500", "limit"),
    ("studies?AccessionNumber=1,2", "not a list"),
])
def test_what_azure_refuses_is_refused_with_the_reason(strict: Server, path_query: str,
                                                        named: str) -> None:
    answer = get(strict, path_query)
    assert answer.status_code == 400
    assert named in answer.text


def test_no_match_is_204_without_a_body(strict: Server) -> None:
    answer = get(strict, "studies?PatientID=nobody")
    assert (answer.status_code, answer.content) == (204, b"")


def test_the_default_profile_keeps_wildcards(tmp_path: Path,
                                             tutorial_files: list[Path]) -> None:
    with serve(tmp_path / "archive") as running:
        assert stow(running.url, tutorial_files[:1]).status_code == 200
        answer = requests.get(f"{running.url}/studies?PatientID=ID*", headers=JSON, timeout=30)
        assert answer.status_code == 200
        assert answer.json()[0]["0020000D"]["Value"] == [uids_of(tutorial_files[0])[0]]


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        serve(None, profile="gcp")
