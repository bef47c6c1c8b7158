"""Bad requests sent by the third-party clients get 4xx answers that name what was wrong
(issue 11, item 5), on the embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from .conftest import Target, run_plan

dicomweb_client = pytest.importorskip("dicomweb_client")
from dicomweb_client.api import DICOMwebClient  # noqa: E402

UNKNOWN = "1.2.826.0.1.3680043.8.498.1"
TOO_LONG = "1." + "2" * 70  # digits and dots, but longer than a UID may be (64)
# (the Python client checks UIDs itself and refuses that one; "1.02.3" passes its check, and
# a UID component may not start with 0)


@pytest.mark.parametrize("target", ["embedded"], indirect=True)
def test_python_client(target: Target) -> None:
    client = DICOMwebClient(url=target.url)
    item = target.by_name("CT_small.dcm")
    cases = [
        (lambda: client.search_for_studies(search_filters={"NotAKeyword": "x"}), 400,
         "NotAKeyword"),
        (lambda: client.search_for_studies(search_filters={"StudyDate": "2020-01-01"}), 400,
         "StudyDate"),
        (lambda: client.search_for_studies(fields=["Nope"]), 400, "Nope"),
        (lambda: client.retrieve_study(UNKNOWN), 404, UNKNOWN),
        (lambda: client.retrieve_instance_metadata(item.study, item.series, UNKNOWN), 404,
         UNKNOWN),
        (lambda: client.retrieve_instance_frames(item.study, item.series, item.sop,
                                                 frame_numbers=[2]), 404, "2"),
        (lambda: client.retrieve_series("1.02.3", item.series), 400, "1.02.3"),
    ]
    for call, status, named in cases:
        with pytest.raises(requests.HTTPError) as raised:
            call()
        answer = raised.value.response
        assert answer is not None and answer.status_code == status, answer
        assert named in answer.text, answer.text


@pytest.mark.parametrize("target", ["embedded"], indirect=True)
def test_npm_client(target: Target, tmp_path: Path) -> None:
    item = target.by_name("CT_small.dcm")
    uids = {"studyInstanceUID": item.study, "seriesInstanceUID": item.series}
    calls = [
        {"id": "keyword", "method": "searchForStudies",
         "options": {"queryParams": {"NotAKeyword": "x"}}},
        {"id": "study", "method": "retrieveStudy", "options": {"studyInstanceUID": UNKNOWN}},
        {"id": "frame", "method": "retrieveInstanceFrames", "options": {
            **uids, "sopInstanceUID": item.sop, "frameNumbers": [2]}},
        {"id": "uid", "method": "retrieveSeriesMetadata", "options": {
            "studyInstanceUID": TOO_LONG, "seriesInstanceUID": item.series}},
    ]
    results = run_plan(target.url, calls, tmp_path)
    assert {key: r["status"] for key, r in results.items()} == \
        {"keyword": 400, "study": 404, "frame": 404, "uid": 400}
    # the answer's words reach the caller where the client keeps them (binary requests)
    assert UNKNOWN in results["study"]["body"] and "2" in results["frame"]["body"]
