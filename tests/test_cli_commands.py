"""The ``dicomframes`` command (upload, search, retrieve, demo) run as a real subprocess."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
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


# ---- errors as one line, no traceback unless --debug ---------------------------------------


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserting there is no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dicomframes: error: ")
    return lines[0]


def test_refused_connection_is_one_line_and_debug_adds_the_traceback() -> None:
    import socket

    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        plain = run("search", "studies", "--url", url)
        debug = run("--debug", "search", "studies", "--url", url)
        debug_after = run("retrieve", "1.2.3", "--out", "unused", "--url", url, "--debug")
    line = one_line_error(plain)
    assert f"GET {url}/studies" in line and "connection refused" in line
    for result in (debug, debug_after):
        assert result.returncode == 2
        assert "Traceback" in result.stderr and "ConnectionRefused" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("dicomframes: error: ")


def test_server_errors_and_bad_uids_are_one_line(embedded, tmp_path: Path) -> None:
    missing = one_line_error(run("retrieve", "1.2.3.999", "--out", str(tmp_path),
                                 "--url", embedded.url))
    assert "404" in missing and "/studies/1.2.3.999" in missing
    malformed = one_line_error(run("search", "series", "--study", "1.2..3",
                                   "--url", embedded.url))
    assert "invalid StudyInstanceUID" in malformed and "'1.2..3'" in malformed
    no_token = one_line_error(run("search", "studies", "--url", embedded.url, "--token-env",
                                  "DICOMFRAMES_TEST_NO_SUCH_VAR"))
    assert "DICOMFRAMES_TEST_NO_SUCH_VAR is not set" in no_token


def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), "--data", str(tmp_path / "archive"),
                     timeout=120)
    line = one_line_error(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--port 0" in line
    assert not (tmp_path / "archive").exists()


def test_help_texts_have_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    from dicomframes.cli import main

    shown = run("--help")
    assert shown.returncode == 0
    commands = re.search(r"\{([a-z,]+)\}", shown.stdout)
    assert commands is not None
    names = commands.group(1).split(",")
    assert {"serve", "upload", "search", "retrieve", "demo"} <= set(names)
    texts = [shown.stdout]
    for name in names:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        texts.append(capsys.readouterr().out)
    for text in texts:
        assert "``" not in text and ":func:" not in text and ":class:" not in text, text
        assert ":meth:" not in text and "--debug" in text


def test_csv_prints_times_of_day_as_hh_mm_ss(embedded, tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", 1, patient_id="CLI-TM-1")
    assert run("upload", *map(str, files), "--url", embedded.url, "--quiet").returncode == 0
    found = run("search", "studies", "--filter", "PatientID=CLI-TM-1", "--format", "csv",
                "--url", embedded.url)
    assert found.returncode == 0, found.stderr
    rows = list(csv.DictReader(io.StringIO(found.stdout)))
    assert [r["StudyTime"] for r in rows] == ["10:15:00"]
    assert "days" not in found.stdout


def test_time_text_keeps_the_fraction() -> None:
    import datetime as dt

    import pandas as pd

    from dicomframes.cli.text import time_text

    assert time_text(pd.Timedelta(hours=12)) == "12:00:00"
    assert time_text(pd.Timedelta("07:05:03.25")) == "07:05:03.250000"
    assert time_text(dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=1)) == \
        "23:59:59.000001"


def test_progress_counts_only_acknowledged_instances(embedded, tmp_path: Path) -> None:
    (tmp_path / "notes.dcm").write_bytes(b"not dicom at all")
    broken = run("upload", str(tmp_path / "notes.dcm"), "--url", embedded.url)
    assert broken.returncode == 1
    assert "0/1 stored, 1 failed" in broken.stderr and "1/1" not in broken.stderr

    files = make_files(tmp_path / "good", 2, patient_id="CLI-PROGRESS")
    good = run("upload", *map(str, files), str(tmp_path / "notes.dcm"), "--url", embedded.url)
    assert good.returncode == 1
    assert "2/3 stored, 1 failed" in good.stderr and "3/3" not in good.stderr


def test_the_help_examples_work_and_the_archive_folder_has_one_default(
        embedded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`search --help`'s StudyDate example is one the server takes; serve, import and reset
    all default to the archive connect() uses (DICOMFRAMES_DATA)."""
    from dicomframes.cli import _data, build_parser

    shown = run("search", "--help")
    example = re.search(r"StudyDate=(\S+)", " ".join(shown.stdout.split()))
    assert example is not None
    found = run("search", "studies", "--url", embedded.url, "--filter",
                f"StudyDate={example.group(1)}")
    assert found.returncode == 0, found.stderr
    serve_help = run("serve", "--help").stdout
    assert "Run the embedded DICOMweb server" in serve_help
    assert "the StudyInstanceUID" in run("retrieve", "--help").stdout
    parser = build_parser()
    archive = tmp_path / "archive"
    monkeypatch.setenv("DICOMFRAMES_DATA", str(archive))
    for argv in (["serve"], ["import", "folder"], ["reset"]):
        assert _data(parser.parse_args(argv)) == archive
    assert _data(parser.parse_args(["serve", "--data", str(tmp_path)])) == tmp_path
