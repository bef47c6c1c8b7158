"""DELETE at the three levels (the tutorial's calls 17-19): 204, then 404; files and index rows
are gone, the counts of what remains are right, and the instances can be stored again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from .server_helpers import DICOM_JSON, instance_url, stow, uids_of, value


def _rows(server) -> int:
    with sqlite3.connect(Path(server.path) / "index.sqlite3") as db:
        return db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]


def _files(server) -> list[Path]:
    return [p for p in (Path(server.path) / "files").rglob("*") if p.is_file()]


def _study(server, study: str) -> dict | None:
    found = requests.get(f"{server.url}/studies", params={"StudyInstanceUID": study},
                         headers={"Accept": DICOM_JSON}).json()
    return found[0] if found else None


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_delete_instance_series_and_study(server, tutorial_files, prefix) -> None:
    assert stow(server.url, tutorial_files).status_code == 200
    assert _rows(server) == 3 and len(_files(server)) == 3
    study, series, _ = uids_of(tutorial_files[0])
    base = server.url + prefix
    url = instance_url(base, tutorial_files[0])

    answer = requests.delete(url)
    assert answer.status_code == 204
    assert requests.delete(url).status_code == 404
    assert requests.get(url).status_code == 404
    assert requests.get(url + "/metadata").status_code == 404
    assert _rows(server) == 2 and len(_files(server)) == 2
    remaining = _study(server, study)
    assert value(remaining, "00201208") == 2
    assert value(remaining, "00201206") == 2

    series_url = f"{base}/studies/{study}/series/{series}"
    assert requests.delete(series_url).status_code == 204
    assert requests.delete(series_url).status_code == 404
    assert requests.get(series_url).status_code == 404
    assert _rows(server) == 1 and len(_files(server)) == 1
    remaining = _study(server, study)
    assert value(remaining, "00201208") == 1
    assert value(remaining, "00201206") == 1

    study_url = f"{base}/studies/{study}"
    assert requests.delete(study_url).status_code == 204
    assert requests.delete(study_url).status_code == 404
    assert requests.get(study_url).status_code == 404
    assert _study(server, study) is None
    assert requests.get(f"{server.url}/series").json() == []
    assert _rows(server) == 0 and _files(server) == []
    assert not [p for p in (Path(server.path) / "files").rglob("*")]  # folders removed too
    assert not [p for p in (Path(server.path) / "tmp").rglob("*") if not p.is_dir()]

    # what was deleted can be stored again
    assert stow(server.url, tutorial_files).status_code == 200
    assert _rows(server) == 3


def test_delete_with_bad_or_unknown_uids(server, tutorial_files) -> None:
    assert stow(server.url, tutorial_files[:1]).status_code == 200
    study, series, _ = uids_of(tutorial_files[0])
    assert requests.delete(f"{server.url}/studies/1.2.x").status_code == 400
    assert requests.delete(f"{server.url}/studies/{study}/series/1.2.3").status_code == 404
    assert requests.delete(f"{server.url}/studies/1.2.3/series/{series}").status_code == 404
    assert _rows(server) == 1
