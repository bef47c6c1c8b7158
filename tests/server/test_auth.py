"""Bearer-token authentication of the embedded server, refusal to expose it without one, and
one-line errors of ``dicomframes serve``."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import make_instances, require

import dicomframes
from dicomframes.cli import main
from dicomframes.errors import ArchiveNotWritable, DICOMwebError, InsecureServer
from dicomframes.server import Server, serve
from dicomframes.server.runner import check_exposure

from .server_helpers import stow

TOKEN = "s3cret-Token-" + "x" * 20


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path / "archive", token=TOKEN) as server:
        yield server


def test_every_request_needs_the_token(guarded: Server) -> None:
    url = f"{guarded.url}/studies"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for method in ("GET", "POST", "DELETE"):
            target = url if method != "DELETE" else f"{url}/1.2.3"
            reply = requests.request(method, target, headers=headers, timeout=30)
            assert reply.status_code == 401, (method, headers)
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in reply.text and TOKEN not in str(reply.headers)
    reply = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert reply.status_code == 200
    assert TOKEN not in repr(guarded) and "token required" in repr(guarded)


def test_connect_with_token_works(guarded: Server) -> None:
    files = make_instances(2)
    reply = requests.post(f"{guarded.url}/studies", data=files[0],
                          headers={"Authorization": f"Bearer {TOKEN}",
                                   "Content-Type": "application/dicom",
                                   "Accept": "application/dicom+json"}, timeout=30)
    assert reply.status_code == 200
    client = dicomframes.connect(guarded.url, token=TOKEN)
    assert len(client.search_studies()) == 1
    anonymous = dicomframes.connect(guarded.url)
    with pytest.raises(DICOMwebError) as caught:
        anonymous.search_studies()
    assert caught.value.status == 401
    assert TOKEN not in str(caught.value)


def test_embedded_default_needs_no_token(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomframes.server import embedded

    monkeypatch.setenv("DICOMFRAMES_DATA", str(tmp_path / "embedded"))
    monkeypatch.setenv("DICOMFRAMES_SERVER_TOKEN", TOKEN)  # for `dicomframes serve` only
    client = dicomframes.connect()
    try:
        assert len(client.search_studies()) == 0
    finally:
        embedded().stop()


def test_non_loopback_without_token_is_refused() -> None:
    # decided before anything is bound: no address other than loopback is ever used
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        with pytest.raises(InsecureServer):
            check_exposure(host, None, False)
        with pytest.raises(InsecureServer):
            serve(host=host)
        check_exposure(host, TOKEN, False)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(host, None, False)


def test_insecure_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dicomframes.server.runner"):
        check_exposure("0.0.0.0", None, True)
    assert "without authentication" in caplog.text


def test_token_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), serve(tmp_path / "archive", token=TOKEN) as server:
        requests.get(f"{server.url}/studies", headers={"Authorization": "Bearer no"},
                     timeout=30)
        stow(server.url, make_instances(1))
    assert TOKEN not in caplog.text


def test_cli_refuses_exposed_server_in_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["serve", "--data", str(tmp_path / "a"), "--host", "0.0.0.0", "--port", "0"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "--insecure" in err


def test_cli_token_env_must_be_set(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    status = main(["serve", "--data", str(tmp_path / "a"), "--token-env", "NO_SUCH_TOKEN_VAR"])
    assert status == 2
    assert "NO_SUCH_TOKEN_VAR" in capsys.readouterr().err


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """An existing archive folder behind a read-only bind mount (root: permissions alone do
    not stop root)."""
    require(os.geteuid() == 0, "root (to mount a read-only bind mount)",
            "CI runs the tests as root")
    folder = tmp_path / "ro"
    serve(folder).stop()  # a complete archive, then made read-only
    subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_serve_on_read_only_folder_is_one_clear_error(read_only_folder: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(ArchiveNotWritable) as caught:
        serve(read_only_folder)
    assert str(read_only_folder) in str(caught.value)
    status = main(["serve", "--data", str(read_only_folder), "--port", "0"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "cannot be written" in err
    with pytest.raises(ArchiveNotWritable):
        serve(read_only_folder / "new")
