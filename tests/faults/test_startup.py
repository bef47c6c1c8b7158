"""Start-up work is proportional to what was in flight, not to the archive (the journal of
intents, dicomframes/server/journal.py).

A real server (``dicomframes serve`` in a child process) or a real ``dicomframes import`` is
killed with SIGKILL at a chosen point of its work: just after the intent of a group commit is
durable, after the k-th file was renamed into files/ (inside the transaction, before the
commit), or after the k-th file of a committed DELETE was unlinked. The child kills itself
right after the chosen call returns, so the point is exact, not guessed with a timer. Then the
archive is opened again and the report of its start-up (``Archive.recovery``) must name only
the files of the interrupted request, never the hundreds of others; the index agrees with the
files, and every instance the index holds comes back byte-identical.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from dicomframes.server import serve
from dicomframes.server.storage import Archive

from .helpers import (
    Instance,
    ServerProcess,
    check_archive,
    check_retrievable,
    index_rows,
    make_study,
    report,
    stow,
)

BASE = 300  # instances stored (and acknowledged) before the interrupted request
INFLIGHT = 40  # instances of the interrupted STOW request

# Runs a dicomframes command (argv[3:]) that kills itself (SIGKILL: no cleanup) right after
# the chosen call: "intent" (the intent of a group commit is durable), "rename" / "unlink"
# (the nth file renamed into / unlinked from files/).
KILLER = textwrap.dedent("""
    import os, signal, sys
    import dicomframes.server.storage as storage
    where, nth, files = sys.argv[1], int(sys.argv[2]), os.path.realpath(sys.argv[3])
    calls = 0
    def die_after(real, is_counted):
        def wrapped(*args, **kwargs):
            global calls
            result = real(*args, **kwargs)
            if is_counted(args):
                calls += 1
                if calls >= nth:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped
    in_files = lambda path: os.path.realpath(path).startswith(files + os.sep)
    if where == "intent":
        storage.open_intent = die_after(storage.open_intent, lambda args: True)
    elif where == "rename":
        os.replace = die_after(os.replace, lambda args: in_files(args[1]))
    else:
        os.unlink = die_after(os.unlink, lambda args: in_files(args[0]))
    from dicomframes.cli import main
    sys.exit(main(sys.argv[4:]))
""")


def _base_archive(folder: Path) -> dict[str, Instance]:
    """An archive of BASE acknowledged instances, stopped cleanly."""
    items = make_study(BASE, per_series=100)
    with serve(folder) as server:
        answer = stow(server.url, items)
        assert answer.status_code == 200, answer.text[:300]
    return {i.sop: i for i in items}


def _open_intents(folder: Path) -> list[list[str]]:
    """The paths of each intent still open (read with plain sqlite3, before any start-up)."""
    db = sqlite3.connect(f"file:{folder / 'index.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return [json.loads(r[0]) for r in db.execute("SELECT paths FROM intents")]
    finally:
        db.close()


def _killed_server(folder: Path, where: str, nth: int) -> ServerProcess:
    """``dicomframes serve`` that kills itself at ``where`` (see KILLER)."""
    return ServerProcess(folder, "--parse-workers", "0", command=[
        sys.executable, "-c", KILLER, where, str(nth), str(folder / "files"), "serve"])


def _start_up(folder: Path) -> tuple[dict[str, int], list[str]]:
    """Open the archive as a server does; what its start-up did and the files it touched."""
    archive = Archive(folder)
    try:
        assert archive.recovery is not None
        return dict(archive.recovery.counts), list(archive.recovery.touched)
    finally:
        archive.close()


def test_clean_restart_and_idle_kill9_touch_no_file(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    sent = _base_archive(folder)
    counts, touched = _start_up(folder)  # after a clean stop
    assert touched == [] and not any(counts.values()), counts
    with ServerProcess(folder) as server:  # kill -9 of an idle server
        assert requests.get(f"{server.url}/studies", timeout=30).status_code == 200
        server.kill9()
    counts, touched = _start_up(folder)
    assert touched == [] and not any(counts.values()), counts
    assert set(check_archive(folder)) == set(sent)


@pytest.mark.parametrize(("where", "nth"), [("intent", 1), ("rename", 17),
                                            ("rename", INFLIGHT)])
def test_kill9_during_stow_restores_only_the_inflight_files(tmp_path: Path, where: str,
                                                            nth: int) -> None:
    folder = tmp_path / "archive"
    sent = _base_archive(folder)
    inflight = make_study(INFLIGHT)
    sent.update({i.sop: i for i in inflight})
    server = _killed_server(folder, where, nth)
    try:
        with pytest.raises(requests.ConnectionError):
            stow(server.url, inflight)
        server.process.wait(timeout=30)
        assert server.process.returncode == -signal.SIGKILL
    finally:
        server.stop()
    [intent] = _open_intents(folder)
    assert len(intent) == INFLIGHT
    counts, touched = _start_up(folder)
    renamed = 0 if where == "intent" else nth
    report("kill -9 during STOW, then start-up", where=where, nth=nth, **counts,
           touched=len(touched), archive=BASE + INFLIGHT)
    assert counts["intents"] == 1 and counts["restored"] == renamed
    assert len(touched) == renamed and set(touched) <= set(intent)
    rows = check_archive(folder)
    assert len(rows) == BASE + renamed
    assert _open_intents(folder) == []
    with ServerProcess(folder) as again:
        check_retrievable(again.url, sent, rows)
        answer = stow(again.url, inflight)  # the client's retry stores the rest
        assert answer.status_code in (200, 202, 409), answer.text[:300]
    assert set(check_archive(folder)) == set(sent)


@pytest.mark.parametrize("nth", [1, 150])
def test_kill9_during_delete_finishes_only_that_deletion(tmp_path: Path, nth: int) -> None:
    folder = tmp_path / "archive"
    sent = _base_archive(folder)
    doomed = make_study(200, per_series=100)
    with serve(folder) as server:
        assert stow(server.url, doomed).status_code == 200
    sent.update({i.sop: i for i in doomed})
    server = _killed_server(folder, "unlink", nth)
    try:
        with pytest.raises(requests.ConnectionError):
            requests.delete(f"{server.url}/studies/{doomed[0].study}", timeout=60)
        server.process.wait(timeout=30)
    finally:
        server.stop()
    counts, touched = _start_up(folder)
    report("kill -9 during DELETE, then start-up", nth=nth, **counts, touched=len(touched))
    assert touched == [] and counts["intents"] == 0
    assert counts["deleted"] == len(doomed) - nth  # the files the DELETE had not unlinked
    rows = check_archive(folder)
    assert set(rows) == set(sent) - {i.sop for i in doomed}


def test_kill9_during_import_restores_only_the_inflight_batch(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    sent = _base_archive(folder)
    source = tmp_path / "incoming"
    source.mkdir()
    items = make_study(700, per_series=100)  # batches of 500: the kill comes in the second
    sent.update({i.sop: i for i in items})
    for n, item in enumerate(items):
        (source / f"f{n:05d}.dcm").write_bytes(item.data)
    command = [sys.executable, "-c", KILLER, "rename", "507", str(folder / "files"), "import",
               str(source), "--data", str(folder), "--quiet", "--workers", "1"]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [intent] = _open_intents(folder)
    counts, touched = _start_up(folder)
    report("kill -9 during import, then start-up", **counts, touched=len(touched))
    assert counts["restored"] == 7 and len(touched) == 7 and set(touched) <= set(intent)
    assert len(check_archive(folder)) == BASE + 507
    done = subprocess.run([sys.executable, "-m", "dicomframes", *command[6:]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = check_archive(folder)
    assert set(rows) == set(sent)
    with ServerProcess(folder) as server:
        check_retrievable(server.url, sent, list(rows)[::10])
    assert index_rows(folder).keys() == sent.keys()


def test_archive_without_a_journal_is_compared_once(tmp_path: Path) -> None:
    """An archive made before the journal (no ``intents`` table) cannot tell a clean stop from
    a crash: its first start-up compares every file (a file left in place without its row is
    indexed), the next ones do not."""
    folder = tmp_path / "archive"
    sent = _base_archive(folder)
    orphan = make_study(1)[0]
    path = folder / "files" / orphan.study / orphan.series / f"{orphan.sop}.dcm"
    path.parent.mkdir(parents=True)
    path.write_bytes(orphan.data)
    db = sqlite3.connect(folder / "index.sqlite3")
    db.execute("DROP TABLE intents")
    db.close()
    _start_up(folder)
    assert set(check_archive(folder)) == {*sent, orphan.sop}
    path.unlink()  # behind the server's back: the next start-up does not look
    counts, touched = _start_up(folder)
    assert touched == [] and not any(counts.values())
    assert orphan.sop in index_rows(folder)
