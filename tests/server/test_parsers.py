"""Parser processes: large STOW requests and imports are written and parsed by child processes.

They must store exactly what the request's own thread stores, lose nothing when a worker dies,
never outlive a server killed with kill -9, and never run the caller's script a second time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import requests
from support import make_instances

from dicomframes.server import serve
from dicomframes.server.importer import STORED, import_folder
from dicomframes.server.parsers import CHUNK

from .server_helpers import referenced, stow

WORKER_MODULE = "dicomframes.server.parse_worker"


def workers_of(pid: int) -> list[psutil.Process]:
    """The parser processes started by process ``pid``."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if WORKER_MODULE in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def listing(url: str) -> dict[str, dict]:
    rows = requests.get(url + "/instances", params={"includefield": "all"}, timeout=30).json()
    return {row["00080018"]["Value"][0]: row for row in rows}


def metadata(url: str, study: str) -> list[dict]:
    answer = requests.get(f"{url}/studies/{study}/metadata", timeout=30)
    assert answer.status_code == 200, answer.text
    return sorted(answer.json(), key=lambda obj: obj["00080018"]["Value"][0])


def test_workers_store_what_the_request_thread_stores(tmp_path: Path) -> None:
    items = make_instances(3 * CHUNK + 5, patient_name="Worker^Parsed", study_date="20200102")
    items.append(b"not a DICOM file at all")
    answers = {}
    for workers in (0, 2):
        with serve(tmp_path / f"archive-{workers}", parse_workers=workers) as server:
            if workers:
                server.archive.parsers.start(wait=True)
                assert server.archive.parsers.ready
                assert len(workers_of(os.getpid())) >= workers
            answer = stow(server.url, items)
            assert answer.status_code == 202, answer.text  # all but the broken part
            assert len(referenced(answer.json())) == len(items) - 1
            study = next(iter(listing(server.url).values()))["0020000D"]["Value"][0]
            answers[workers] = (listing(server.url), metadata(server.url, study),
                                answer.json())
    in_thread, by_workers = answers[0], answers[2]
    assert len(by_workers[0]) == len(items) - 1
    strip = server_free  # the two servers differ only in their URLs
    assert strip(by_workers[1]) == strip(in_thread[1])
    assert strip(list(by_workers[0].values())) == strip(list(in_thread[0].values()))
    assert by_workers[2]["00081198"] == in_thread[2]["00081198"]  # the failed part, alike


def server_free(obj):
    """``obj`` with every http://127.0.0.1:port prefix removed."""
    if isinstance(obj, dict):
        return {k: server_free(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [server_free(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("http://127.0.0.1:"):
        return "/" + obj.split("/", 3)[3]
    return obj


def test_a_killed_worker_costs_no_instance(tmp_path: Path) -> None:
    with serve(tmp_path / "archive", parse_workers=2) as server:
        server.archive.parsers.start(wait=True)
        victims = workers_of(os.getpid())
        assert victims
        for victim in victims:
            victim.kill()
        psutil.wait_procs(victims, timeout=10)
        items = make_instances(2 * CHUNK)
        answer = stow(server.url, items)
        assert answer.status_code == 200, answer.text
        assert len(referenced(answer.json())) == len(items)
        again = stow(server.url, make_instances(2 * CHUNK))  # by replaced workers
        assert again.status_code == 200, again.text
        assert len(listing(server.url)) == 4 * CHUNK
        assert len(workers_of(os.getpid())) >= 1


def test_workers_do_not_outlive_a_server_killed_with_kill_9(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "dicomframes", "serve", "--data",
                                str(tmp_path / "archive"), "--port", "0",
                                "--parse-workers", "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://")).rstrip(",;")
        answer = stow(url, make_instances(2 * CHUNK))
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 60  # started with the server, in the background
        while len(workers := workers_of(process.pid)) < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"the server started {len(workers)} parser processes, not 2")
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        _gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"parser processes outlived their server: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import requests
        from support import make_instances
        from dicomframes.server import serve
        from dicomframes.standard import multipart

        print("script body ran", flush=True)
        with serve({str(tmp_path / "archive")!r}, parse_workers=2) as server:
            server.archive.parsers.start(wait=True)
            boundary = multipart.new_boundary()
            parts = [({{"Content-Type": "application/dicom"}}, item)
                     for item in make_instances(3 * {CHUNK})]
            answer = requests.post(
                server.url + "/studies", data=b"".join(multipart.encode(parts, boundary)),
                headers={{"Content-Type": multipart.related_content_type(
                    boundary, "application/dicom")}}, timeout=120)
            print("stored", len(answer.json()["00081199"]["Value"]), flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("script body ran") == 1, done.stdout
    assert f"stored {3 * CHUNK}" in done.stdout, done.stdout


def test_import_by_workers_matches_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for n, data in enumerate(make_instances(150)):
        (folder / f"{n:04d}.dcm").write_bytes(data)
    (folder / "0005.dcm").write_bytes(b"truncated" * 3)
    (folder / "copy.dcm").write_bytes((folder / "0007.dcm").read_bytes())
    tables = {}
    for workers in (1, 2):
        df = import_folder(folder, tmp_path / f"archive-{workers}", workers=workers,
                           batch_size=100)
        tables[workers] = df[["source", "status", "reason", "SOPInstanceUID"]]
    assert tables[2].equals(tables[1])
    assert (tables[2]["status"] == STORED).sum() == 149
    with serve(tmp_path / "archive-2", parse_workers=0) as server:
        assert len(listing(server.url)) == 149


@pytest.mark.parametrize("count", [1, CHUNK - 1])
def test_small_requests_stay_in_the_request_thread(tmp_path: Path, count: int) -> None:
    with serve(tmp_path / "archive") as server:
        assert stow(server.url, make_instances(count)).status_code == 200
        assert server.archive.parsers is not None
        assert server.archive.parsers.state == "cold"  # never started
