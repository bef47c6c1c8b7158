"""The ``dicomframes`` command (upload, search, retrieve, demo) run as a real subprocess."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pydicom
from support import make_files

from dicomframes.standard.uids import new_uid


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    """``python -m dicomframes ARGS`` with DICOMWEB_URL unset unless ``env`` sets it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "dicomframes", *args], capture_output=True,
                          text=True, env=environ, timeout=timeout, check=False)


def test_upload_reports_each_file_and_fails_when_one_failed(embedded, tmp_path: Path) -> None:
    files = make_files(tmp_path / "scans", 3)
    (tmp_path / "scans" / "broken.dcm").write_bytes(b"not dicom at all")

    result = run("upload", str(tmp_path / "scans"), "--url", embedded.url, "--quiet")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert sum(" stored " in f" {line} " for line in lines) == 3
    assert any("broken.dcm" in line and "failed" in line for line in lines)
    assert "3 stored, 1 failed" in result.stdout

    again = run("upload", *map(str, files), "--url", embedded.url, "--quiet",
                "--skip-existing", "--format", "csv")
    assert again.returncode == 0, again.stderr
    rows = list(csv.DictReader(io.StringIO(again.stdout)))
    assert [r["status"] for r in rows] == ["skipped"] * 3


def test_search_and_retrieve_round_trip(embedded, tmp_path: Path) -> None:
    study = new_uid()
    files = make_files(tmp_path / "in", 2, study, patient_id="CLI-RT-1")
    assert run("upload", *map(str, files), "--url", embedded.url, "--quiet").returncode == 0

    found = run("search", "studies", "--filter", "PatientID=CLI-RT-1", "--format", "csv",
                env={"DICOMWEB_URL": embedded.url})
    assert found.returncode == 0, found.stderr
    rows = list(csv.DictReader(io.StringIO(found.stdout)))
    assert [r["StudyInstanceUID"] for r in rows] == [study]

    listed = run("search", "instances", "--study", study, "--url", embedded.url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[-1] == "SOPInstanceUID"
    for path in files:
        assert str(pydicom.dcmread(path).SOPInstanceUID) in listed.stdout

    out = tmp_path / "out"
    got = run("retrieve", study, "--out", str(out), "--url", embedded.url)
    assert got.returncode == 0, got.stderr
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 2
    for path in written:
        ds = pydicom.dcmread(path)
        assert path.relative_to(out).parts == (study, ds.SeriesInstanceUID,
                                               f"{ds.SOPInstanceUID}.dcm")
    originals = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).PixelData for p in files}
    assert {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).PixelData
            for p in written} == originals


def test_bad_arguments_are_reported_not_raised(embedded, tmp_path: Path) -> None:
    bad = run("retrieve", "1.2.3/../x", "--out", str(tmp_path), "--url", embedded.url)
    assert bad.returncode == 2 and "invalid" in bad.stderr and "Traceback" not in bad.stderr
    missing = run("upload", str(tmp_path), "--url", embedded.url, "--token-env",
                  "DICOMFRAMES_TEST_NO_SUCH_VAR")
    assert missing.returncode != 0 and "DICOMFRAMES_TEST_NO_SUCH_VAR" in missing.stderr
    nothing = run("search", "studies", "--url", embedded.url, "--filter", "PatientID")
    assert nothing.returncode == 2 and "KEY=VALUE" in nothing.stderr


def test_demo_runs_on_its_own_server() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "3 stored" in result.stdout
    assert "Anony" in result.stdout
    assert "979, 985, 3)" in result.stdout
    assert len(result.stdout.splitlines()) < 30


def test_token_from_env_is_sent_but_never_printed(tmp_path: Path) -> None:
    """A server that echoes the Authorization header into its 401 answer: the command fails with
    the server's words, and the token appears in neither stdout nor stderr."""
    import http.server
    import threading

    seen: list[str] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            seen.append(auth)
            body = f"denied for {auth}".encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        secret = "s3cr3t-token-XYZ"
        result = run("search", "studies", "--url", url, "--token-env", "MY_TOKEN",
                     env={"MY_TOKEN": secret})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen and seen[0] == f"Bearer {secret}"
    assert result.returncode != 0
    assert "401" in result.stdout + result.stderr
    assert secret not in result.stdout + result.stderr


def test_reset_deletes_the_default_archive_only_when_confirmed(tmp_path: Path) -> None:
    from dicomframes.server import serve

    archive = tmp_path / "archive"
    with serve(archive) as server:
        server_url = server.url
        assert run("upload", *map(str, make_files(tmp_path / "scans", 2)), "--url", server_url,
                   "--quiet").returncode == 0
    env = {"DICOMFRAMES_DATA": str(archive)}

    refused = run("reset", env=env)                    # no terminal to ask on, and no --yes
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert archive.exists()

    done = run("reset", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"deleted {archive}")
    assert not archive.exists()

    again = run("reset", "--yes", env=env)
    assert again.returncode == 0
    assert "nothing to reset" in again.stdout


def test_reset_never_deletes_a_folder_that_is_not_an_archive(tmp_path: Path) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.txt").write_text("years of work")

    result = run("reset", "--data", str(precious), "--yes")

    assert result.returncode == 1
    assert "not an archive" in result.stderr
    assert (precious / "chapter1.txt").exists()
