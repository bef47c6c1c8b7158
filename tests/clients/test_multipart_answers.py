"""Every 200 multipart WADO-RS answer of the embedded server over the whole stored pydicom
corpus is complete: it ends with its closing boundary (issue 11: nothing fails after the first
byte). Instance, series and study retrieves, with transfer-syntax=* and with the default
Accept; a refusal is a 4xx before any body."""

from __future__ import annotations

import pytest
import requests

from dicomframes.standard.mediatypes import boundary_of

from .conftest import Target, levels

ACCEPTS = {
    "any": 'multipart/related; type="application/dicom"; transfer-syntax=*',
    "default": 'multipart/related; type="application/dicom"',
}


@pytest.mark.parametrize("target", ["embedded"], indirect=True)
@pytest.mark.parametrize("accept", sorted(ACCEPTS))
def test_every_200_multipart_answer_is_complete(target: Target, accept: str) -> None:
    problems = []
    with requests.Session() as session:
        for level, uids, expected in levels(target):
            path = "/".join(f"{name}/{uid}" for name, uid in
                            zip(("studies", "series", "instances"), uids, strict=False))
            try:
                answer = session.get(f"{target.url}/{path}", timeout=60,
                                     headers={"Accept": ACCEPTS[accept]})
                body = answer.content
            except requests.RequestException as error:  # a connection closed mid-body
                problems.append(f"{level} {uids}: {type(error).__name__}")
                continue
            if answer.status_code != 200:
                if not 400 <= answer.status_code < 500 or accept == "any" or not answer.text:
                    problems.append(f"{level} {uids}: {answer.status_code} {answer.text!r}")
                continue
            boundary = boundary_of(answer.headers["Content-Type"])
            closing = f"--{boundary}--".encode()
            if not body.rstrip(b"\r\n").endswith(closing):
                problems.append(f"{level} {uids}: no closing boundary")
            elif body.count(f"--{boundary}\r\n".encode()) != len(expected):
                problems.append(f"{level} {uids}: {len(expected)} parts expected")
    assert not problems, "\n".join(problems)
