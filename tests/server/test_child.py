"""The embedded server in a child process: ``dicomframes.connect(server="process")``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

import dicomframes
from dicomframes.samples import ct_slice
from dicomframes.server import ChildServer, embedded


def test_connect_process_serves_the_default_archive_from_a_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "archive"
    monkeypatch.delenv("DICOMWEB_URL", raising=False)
    monkeypatch.setenv("DICOMFRAMES_DATA", str(archive))
    monkeypatch.setenv("DICOMFRAMES_SERVER_TOKEN", "not-for-the-default")
    client = dicomframes.connect(server="process", progress=False)
    child = embedded("process")
    try:
        assert isinstance(child, ChildServer) and child.running
        assert client.url == child.url and client.url.startswith("http://127.0.0.1:")
        study, series = generate_uid(), generate_uid()
        pixels = np.arange(64 * 48, dtype=np.int16).reshape(64, 48) - 100
        ds = ct_slice(pixels, study=study, series=series, number=1)
        path = tmp_path / "slice.dcm"
        ds.save_as(path, enforce_file_format=True)
        client.store(path, progress=False)
        sop = str(pydicom.dcmread(path).SOPInstanceUID)
        np.testing.assert_array_equal(client.frames(study, series, sop, 1),
                                      pydicom.dcmread(path).pixel_array)
        # the child's archive is the default folder: a server started later finds the file
        assert any(archive.rglob("*")) and list(
            client.search_instances(study)["SOPInstanceUID"]) == [sop]
    finally:
        child.stop()
    assert not child.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{child.url}/studies", timeout=5)
    with dicomframes.serve(archive) as again:
        found = dicomframes.connect(again.url).search_instances(study)
        assert list(found["SOPInstanceUID"]) == [sop]


def test_connect_refuses_an_unknown_server_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMWEB_URL", raising=False)
    with pytest.raises(ValueError, match="'thread' or 'process'"):
        dicomframes.connect(server="elsewhere")
