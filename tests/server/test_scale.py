"""The server at archive size: deep QIDO pages give exactly what LIMIT/OFFSET gives, and STOW's
group commit keeps every acknowledged instance across kill -9 of the server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests
from support import make_instances

from dicomframes.server import serve

from .server_helpers import referenced, split_multipart, stow

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def test_deep_pages_are_the_rows_of_limit_offset(tmp_path: Path) -> None:
    with serve(tmp_path / "archive", durable=False) as server:
        for _ in range(3):
            items = make_instances(40)
            assert stow(server.url, items).status_code == 200
        every = requests.get(server.url + "/instances", timeout=30).json()
        assert len(every) == 120
        sops = [row["00080018"]["Value"][0] for row in every]
        for offset in (0, 1, 39, 40, 77, 119, 120, 500):
            for limit in (1, 7, 50):
                page = requests.get(server.url + "/instances", timeout=30,
                                    params={"limit": limit, "offset": offset}).json()
                assert [r["00080018"]["Value"][0] for r in page] == sops[offset:offset + limit]
        series_uids = sorted({row["0020000E"]["Value"][0] for row in every})
        one = [r["00080018"]["Value"][0] for r in every
               if r["0020000E"]["Value"][0] == series_uids[1]]
        page = requests.get(server.url + "/instances", timeout=30, params={
            "SeriesInstanceUID": series_uids[1], "offset": 13, "limit": 10}).json()
        assert [r["00080018"]["Value"][0] for r in page] == one[13:23]
        studies = requests.get(server.url + "/studies", timeout=30).json()
        tail = requests.get(server.url + "/studies", params={"offset": 2}, timeout=30).json()
        assert tail == studies[2:]
        url = page[0]["00081190"]["Value"][0]  # RetrieveURL, built without re-validation
        assert url == (f"{server.url}/studies/{page[0]['0020000D']['Value'][0]}/series/"
                       f"{series_uids[1]}/instances/{one[13]}")


def start(data: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "dicomframes", "serve", "--data",
                                str(data), "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    url = line.split(" at ")[1].split()[0]
    assert url.startswith("http://127.0.0.1:")
    return process, url


def test_stow_group_commit_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    acknowledged: dict[str, bytes] = {}
    for kill_after in (0, 1, 3):  # acknowledged requests before the kill, then one in flight
        process, url = start(data)
        try:
            for _ in range(kill_after):
                items = make_instances(30)
                answer = stow(url, items)
                assert answer.status_code == 200
                by_sop = {sop: item for item, sop in zip(items, referenced(answer.json()),
                                                          strict=True)}
                acknowledged.update(by_sop)
            in_flight = make_instances(60)
            outcome: dict[str, requests.Response | Exception] = {}

            def post(batch: list[bytes] = in_flight, url: str = url,
                     outcome: dict[str, requests.Response | Exception] = outcome) -> None:
                try:
                    outcome["answer"] = stow(url, batch)
                except requests.RequestException as exc:
                    outcome["error"] = exc

            sender = threading.Thread(target=post)
            sender.start()
            sender.join(0.05 * (kill_after + 1))  # kill during (or just after) the request
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            sender.join(timeout=60)
            answer = outcome.get("answer")
            if isinstance(answer, requests.Response) and answer.status_code == 200:
                acknowledged.update(dict(zip(referenced(answer.json()), in_flight,
                                             strict=True)))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        process, url = start(data)
        try:
            found = {r["00080018"]["Value"][0]
                     for r in requests.get(url + "/instances", timeout=30).json()}
            assert set(acknowledged) <= found
            for sop, item in acknowledged.items():
                rows = requests.get(url + "/instances", params={"SOPInstanceUID": sop},
                                    timeout=30).json()
                instance = rows[0]["00081190"]["Value"][0]
                got = requests.get(instance, headers={"Accept": DICOM_ANY}, timeout=30)
                assert split_multipart(got)[0][1] == item
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert len(acknowledged) >= 4 * 30
