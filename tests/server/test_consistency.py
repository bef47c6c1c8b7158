"""Index and files agree whatever happens: a DELETE killed (-9) before or after its commit,
STOW racing DELETE of the same study, and files changed behind the server's back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import requests
from support import make_instances

from dicomframes.server import serve
from dicomframes.server.storage import Archive

from .server_helpers import stow

COUNT = 40


def _load_study(folder: Path) -> tuple[str, list[bytes]]:
    """An archive in ``folder`` holding one study of COUNT instances; its UID and files."""
    files = make_instances(COUNT)
    with serve(folder) as server:
        answer = stow(server.url, files)
        assert answer.status_code == 200, answer.text
    study = answer.json()["00081190"]["Value"][0].rsplit("/", 1)[1]
    return study, files


def _state(folder: Path, study: str) -> tuple[int, int]:
    """(index rows, files on disk) of ``study`` after reopening the archive (start-up repair)."""
    archive = Archive(folder)
    try:
        rows = archive.db.execute("SELECT COUNT(*) FROM instances WHERE StudyInstanceUID = ?",
                                  (study,)).fetchone()[0]
    finally:
        archive.close()
    on_disk = sum(len(names) for _, _, names in os.walk(folder / "files" / study))
    return rows, on_disk


# The child deletes the study and kills itself (SIGKILL: no cleanup, no finally) at a chosen
# moment: inside the transaction (before the commit), or after the N-th file was unlinked.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import dicomframes.server.storage as storage
    folder, study, where, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    archive = storage.Archive(folder)
    calls = 0
    def die_after(real):
        def wrapped(*args, **kwargs):
            global calls
            result = real(*args, **kwargs)
            calls += 1
            if calls >= nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped
    if where == "before-commit":
        storage.recount_study = die_after(storage.recount_study)
    else:
        storage.os.unlink = die_after(os.unlink)
        storage.os.replace = die_after(os.replace)  # the earlier design moved files aside
    archive.delete(study)
    print("not killed")
""")


@pytest.mark.parametrize(("where", "nth"), [("before-commit", 1), ("files", 1), ("files", 3),
                                            ("files", COUNT - 1)])
def test_delete_killed_is_all_or_nothing(tmp_path: Path, where: str, nth: int) -> None:
    folder = tmp_path / "archive"
    study, files = _load_study(folder)
    child = subprocess.run([sys.executable, "-c", CHILD, str(folder), study, where, str(nth)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    rows, on_disk = _state(folder, study)
    if where == "before-commit":
        assert (rows, on_disk) == (COUNT, COUNT)
        with serve(folder) as server:  # and every instance still comes back whole
            answer = requests.get(f"{server.url}/studies/{study}",
                                  headers={"Accept": "multipart/related; "
                                           'type="application/dicom"; transfer-syntax=*'},
                                  timeout=60)
            assert answer.status_code == 200
            assert all(f in answer.content for f in files)
    else:
        assert (rows, on_disk) == (0, 0)  # the deletion committed: it is finished at start
    archive = Archive(folder)
    try:
        assert archive.db.execute("SELECT COUNT(*) FROM pending_deletions").fetchone()[0] == 0
    finally:
        archive.close()


def test_failure_inside_the_delete_transaction_leaves_everything(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    import dicomframes.server.storage as storage

    folder = tmp_path / "archive"
    study, _files = _load_study(folder)

    def broken(*args: object) -> None:
        raise RuntimeError("simulated crash before the commit")

    monkeypatch.setattr(storage, "recount_study", broken)
    archive = Archive(folder)
    with pytest.raises(RuntimeError):
        archive.delete(study)
    archive.close()
    monkeypatch.undo()
    assert _state(folder, study) == (COUNT, COUNT)


def test_stow_racing_delete_of_the_same_study_never_answers_500(tmp_path: Path) -> None:
    study_files = make_instances(6)
    statuses: list[int] = []
    with serve(tmp_path / "archive") as server:
        answer = stow(server.url, study_files)
        study = answer.json()["00081190"]["Value"][0].rsplit("/", 1)[1]
        stop = threading.Event()

        def deleter() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    statuses.append(session.delete(f"{server.url}/studies/{study}",
                                                   timeout=60).status_code)

        thread = threading.Thread(target=deleter)
        thread.start()
        try:
            for _ in range(60):
                statuses.append(stow(server.url, study_files).status_code)
        finally:
            stop.set()
            thread.join(timeout=60)
        assert 500 not in statuses, statuses
        assert set(statuses) <= {200, 202, 204, 404, 409}
        # the end state is consistent: what the index lists is on disk, whole
        stow(server.url, study_files)
        listed = requests.get(f"{server.url}/studies/{study}/instances", timeout=30).json()
        assert len(listed) == len(study_files)
    archive = Archive(tmp_path / "archive")
    try:
        report = archive.reconcile()
    finally:
        archive.close()
    assert report["missing"] == report["damaged"] == report["restored"] == 0


def _instance_paths(folder: Path, study: str) -> list[Path]:
    return sorted((folder / "files" / study).rglob("*.dcm"))


def test_truncated_file_is_never_served_short_and_is_set_aside_by_a_check(tmp_path: Path
                                                                          ) -> None:
    folder = tmp_path / "archive"
    files = make_instances(3)
    with serve(folder) as server:
        answer = stow(server.url, files)
        study = answer.json()["00081190"]["Value"][0].rsplit("/", 1)[1]
        urls = [item["00081190"]["Value"][0] for item in answer.json()["00081199"]["Value"]]
        victim = _instance_paths(folder, study)[0]
        size = victim.stat().st_size
        os.truncate(victim, size - 10)
        damaged = next(u for u in urls if u.endswith(victim.stem))
        whole = [u for u in urls if u != damaged]
        for url in (damaged, f"{damaged}/frames/1"):
            reply = requests.get(url, headers={"Accept": "*/*"}, timeout=30)
            assert reply.status_code == 500, (url, reply.status_code)
            assert "changed outside the server" in reply.text
        # the rest of the study still comes back; the answer says what was left out
        reply = requests.get(f"{server.url}/studies/{study}", timeout=30)
        assert reply.status_code == 206
        assert victim.stem in reply.headers["Warning"]
        assert reply.content.count(b"DICM") == 2
        assert all(requests.get(u, timeout=30).status_code == 200 for u in whole)
    archive = Archive(folder)  # a restart does not look at the files: only a check does
    try:
        assert archive.recovery is not None and archive.recovery.touched == []
        assert archive.count() == 3
        report = archive.reconcile()  # dicomframes check --repair
        assert report["damaged"] == 1 and archive.count() == 2
    finally:
        archive.close()
    assert (folder / "rejected" / victim.relative_to(folder)).exists()


def test_file_removed_behind_the_servers_back(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    files = make_instances(3)
    with serve(folder) as server:
        answer = stow(server.url, files)
        study = answer.json()["00081190"]["Value"][0].rsplit("/", 1)[1]
        victim = _instance_paths(folder, study)[1]
        victim.unlink()
        series_url = next(item["00081190"]["Value"][0] for item in
                          answer.json()["00081199"]["Value"]).rsplit("/instances/", 1)[0]
        reply = requests.get(series_url, timeout=30)
        assert reply.status_code == 206
        assert reply.content.count(b"DICM") == 2
        single = requests.get(f"{series_url}/instances/{victim.stem}", timeout=30)
        assert single.status_code == 404
        assert "missing" in single.text
