"""`dicomframes import` / :func:`dicomframes.server.import_folder`: a messy folder indexed into
an archive, then searched and retrieved from a real server on 127.0.0.1."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests
from faults.helpers import make_study
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


PEAK_RSS = ("import resource, sys\nfrom dicomframes.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def _import_peak_rss(tmp_path: Path, count: int) -> int:
    """Peak RSS (kB) of a child running ``dicomframes import`` on ``count`` files whose paths
    are long (2.6 kB): an importer that keeps a row or a path per file grows by megabytes."""
    deep = tmp_path / f"src{count}" / "/".join(c * 240 for c in "abcdefghij")
    deep.mkdir(parents=True)
    for n, item in enumerate(make_study(count, per_series=500)):
        (deep / f"{'f' * 200}{n:07d}.dcm").write_bytes(item.data)
    report = tmp_path / f"report{count}.csv"
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, "import",
                           str(tmp_path / f"src{count}"), "--data",
                           str(tmp_path / f"archive{count}"), "--quiet", "--workers", "1",
                           "--report", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{count} files: {count} stored" in done.stdout
    with open(report, newline="", encoding="utf-8") as fp:  # every outcome row, streamed
        rows = list(csv.DictReader(fp))
    assert len(rows) == count and {r["status"] for r in rows} == {STORED}
    return int(done.stdout.split("peak-rss-kb")[1].split()[0])


def test_import_memory_stays_flat(tmp_path: Path) -> None:
    """Importing 4N files peaks at about the memory of importing N: outcome rows go to the
    report file, not to a list (the importer that kept them grew by 36 MB from 1,000 to
    4,000 of these files; this one by 2-3 MB)."""
    small, large = _import_peak_rss(tmp_path, 1000), _import_peak_rss(tmp_path, 4000)
    print(f"\n[import peak RSS] 1000 files: {small / 1024:.0f} MB, 4000 files: "
          f"{large / 1024:.0f} MB")
    assert large - small < 12 * 1024, (small, large)
