"""kill -9 of the server during STOW and DELETE, then a restart: the change feed and the index
agree (the feed's entries are written in the transaction that changes the index).

Agreement, read with plain sqlite3 and over HTTP: the instances whose last feed entry is a
create are exactly the indexed instances, every indexed instance has its create, Sequences
only grow, and ``/changefeed`` lists as "current" exactly the instances QIDO finds.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import requests

from .helpers import DICOM_JSON, ServerProcess, check_archive, make_study, report
from .test_kill9 import Senders, wait_for


def check_feed(server: ServerProcess) -> int:
    """The feed against the index (sqlite3) and against QIDO (HTTP); the number of entries."""
    rows = check_archive(server.folder)
    db = sqlite3.connect(f"file:{server.folder / 'index.sqlite3'}?mode=ro", uri=True,
                         timeout=30)
    try:
        entries = db.execute("SELECT seq, sop, action FROM changefeed ORDER BY seq").fetchall()
    finally:
        db.close()
    last: dict[str, str] = {}
    for _seq, sop, action in entries:
        last[sop] = action
    live = {sop for sop, action in last.items() if action == "create"}
    assert live == set(rows), (f"feed and index disagree: {len(live - set(rows))} created "
                               f"but not indexed, {len(set(rows) - live)} indexed without "
                               "their create")
    current: set[str] = set()
    offset = 0
    while True:
        page = requests.get(f"{server.url}/v1/changefeed", timeout=60, params={
            "offset": offset, "limit": 100, "includeMetadata": "false"}).json()
        current.update(e["SopInstanceUid"] for e in page if e["State"] == "current")
        offset += 100
        if offset >= (entries[-1][0] if entries else 0):
            break
    found = requests.get(f"{server.url}/instances", headers={"Accept": DICOM_JSON},
                         params={"limit": 100000}, timeout=60)
    listed = {i["00080018"]["Value"][0] for i in found.json()} if found.content else set()
    assert current == listed == set(rows)
    return len(entries)


def test_kill9_during_stow_leaves_feed_and_index_in_agreement(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    items = [i for _ in range(3) for i in make_study(150, per_series=75)]
    pending = [items[i : i + 10] for i in range(0, len(items), 10)]
    acked: set[str] = set()
    server = ServerProcess(data)
    try:
        for moment in (0.2, 0.5, 0.8):
            senders = Senders(server.url, pending, acked)
            wait_for(lambda m=moment, s=senders: len(acked) >= m * len(items) or not s.running,
                     f"{moment:.0%} acknowledged")
            server.kill9()
            senders.join()
            server.stop()
            server = ServerProcess(data)
            entries = check_feed(server)
            report("kill -9 during STOW, feed", moment=f"{moment:.0%}",
                   acknowledged=len(acked), entries=entries)
        Senders(server.url, pending, acked).join()
        assert check_feed(server) >= len(items)
    finally:
        server.stop()


def test_kill9_during_delete_leaves_feed_and_index_in_agreement(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    studies = [make_study(300) for _ in range(3)]
    server = ServerProcess(data)
    try:
        acked: set[str] = set()
        batches = [s[i : i + 100] for s in studies for i in range(0, len(s), 100)]
        Senders(server.url, batches, acked, threads=3).join()
        for study, moment in zip(studies, (0.0, 0.5, 0.9), strict=True):
            uid = study[0].study
            folder = data / "files" / uid
            answer: list[int] = []

            def delete(url: str = server.url, uid: str = uid,
                       answer: list[int] = answer) -> None:
                try:
                    answer.append(requests.delete(f"{url}/studies/{uid}",
                                                  timeout=60).status_code)
                except requests.RequestException:
                    answer.append(0)

            def files_left(folder: Path = folder) -> int:
                return sum(1 for _ in folder.rglob("*.dcm")) if folder.exists() else 0

            worker = threading.Thread(target=delete, daemon=True)
            worker.start()
            wait_for(lambda m=moment, a=answer: bool(a) or files_left() <= (1 - m) * 300,
                     f"{moment:.0%} of the study deleted", pause=0)
            server.kill9()
            worker.join(timeout=60)
            server.stop()
            server = ServerProcess(data)
            entries = check_feed(server)
            left = sum(r.study == uid for r in check_archive(data).values())
            assert left in (0, 300)
            report("kill -9 during DELETE, feed", moment=f"{moment:.0%}",
                   answered=answer, instances_left=left, entries=entries)
    finally:
        server.stop()
