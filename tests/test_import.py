"""`dicomframes import` / :func:`dicomframes.server.import_folder`: a messy folder indexed into
an archive, then searched and retrieved from a real server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import requests
from pydicom.data import get_testdata_file
from server.server_helpers import instance_url, split_multipart, uids_of
from support import make_files

from dicomframes.cli import main
from dicomframes.server import import_folder, serve
from dicomframes.server.importer import ALREADY_STORED, FAILED, SKIPPED, STORED

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def messy_folder(root: Path) -> dict[str, list[Path]]:
    """Nested valid files, a duplicate, a text file, a truncated file and a DICOMDIR."""
    good = make_files(root / "a" / "b", 3) + make_files(root / "c", 2)
    duplicate = root / "c" / "copy-of-first.dcm"
    shutil.copy(good[0], duplicate)
    (root / "notes.txt").write_text("not DICOM at all\n")
    truncated = root / "a" / "truncated.dcm"
    truncated.write_bytes(good[1].read_bytes()[:300])
    dicomdir = root / "media" / "DICOMDIR"  # a real one, from pydicom's test files
    dicomdir.parent.mkdir()
    shutil.copy(get_testdata_file("DICOMDIR"), dicomdir)
    shutil.copy(get_testdata_file("DICOMDIR"), root / "media" / "dicomdir.dcm")  # renamed
    return {"good": good, "duplicate": [duplicate], "bad": [root / "notes.txt", truncated],
            "dicomdir": [dicomdir]}


def retrieve(base: str, path: Path) -> bytes:
    answer = requests.get(instance_url(base, path), headers={"Accept": DICOM_ANY}, timeout=30)
    assert answer.status_code == 200, answer.text
    [(_headers, body)] = split_multipart(answer)
    return body


def test_import_of_a_messy_folder_then_search_and_retrieve(tmp_path: Path) -> None:
    files = messy_folder(tmp_path / "incoming")
    df = import_folder(tmp_path / "incoming", tmp_path / "archive")
    status = dict(zip(df["source"], df["status"], strict=True))
    for path in files["good"]:
        assert status[str(path)] == STORED
    assert status[str(files["duplicate"][0])] == ALREADY_STORED
    assert status[str(files["dicomdir"][0])] == SKIPPED
    for path in files["bad"]:
        assert status[str(path)] == FAILED
        row = df[df["source"] == str(path)].iloc[0]
        assert row["reason"] in (0x0110, 0xA900) and row["message"]  # unreadable, invalid
    renamed = df[df["source"] == str(tmp_path / "incoming" / "media" / "dicomdir.dcm")]
    assert list(renamed["status"]) == [FAILED] and "DICOMDIR" in renamed["message"].iloc[0]
    assert len(df) == len(list(p for p in (tmp_path / "incoming").rglob("*") if p.is_file()))

    with serve(tmp_path / "archive") as server:
        found = requests.get(server.url + "/instances", timeout=30).json()
        assert len(found) == len(files["good"])
        for path in files["good"]:
            assert retrieve(server.url, path) == path.read_bytes()
        stored = next((tmp_path / "archive" / "files").rglob("*.dcm"))
        assert not stored.is_symlink()  # copied

    again = import_folder(tmp_path / "incoming", tmp_path / "archive")
    assert STORED not in set(again["status"])


def test_in_place_import_is_served_without_copying(tmp_path: Path) -> None:
    good = make_files(tmp_path / "incoming" / "x", 4)
    df = import_folder(tmp_path / "incoming", tmp_path / "archive", in_place=True)
    assert list(df["status"]) == [STORED] * 4
    links = sorted((tmp_path / "archive" / "files").rglob("*.dcm"))
    assert len(links) == 4 and all(p.is_symlink() for p in links)
    assert {os.path.realpath(p) for p in links} == {str(p.resolve()) for p in good}
    with serve(tmp_path / "archive") as server:  # a restart keeps them (start-up repair)
        for path in good:
            assert retrieve(server.url, path) == path.read_bytes()
        study, series, sop = uids_of(good[0])
        assert requests.delete(f"{server.url}/studies/{study}/series/{series}/instances/{sop}",
                               timeout=30).status_code == 204
    assert good[0].is_file()  # deleting the instance removed the link, not the original
    with serve(tmp_path / "archive") as server:
        assert len(requests.get(server.url + "/instances", timeout=30).json()) == 3


def test_import_command(tmp_path: Path, capsys) -> None:
    make_files(tmp_path / "incoming", 3)
    (tmp_path / "incoming" / "junk.bin").write_bytes(b"\0" * 50)
    code = main(["import", str(tmp_path / "incoming"), "--data", str(tmp_path / "archive"),
                 "--quiet", "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 1  # one file failed
    assert "junk.bin" in out and "4 files: 3 stored, 1 failed" in out
    (tmp_path / "incoming" / "junk.bin").unlink()
    assert main(["import", str(tmp_path / "incoming"), "--data", str(tmp_path / "archive"),
                 "--quiet"]) == 0
    assert "3 already stored" in capsys.readouterr().out
