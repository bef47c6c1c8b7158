"""Bulk STOW (dicomframes.client.store) against the embedded server and a real Orthanc."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import socket
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import pydicom
import pytest
from support import make_dataset, make_files, make_instances, to_bytes

from dicomframes import connect
from dicomframes.client.store import (
    ALREADY_STORED,
    COLUMNS,
    FAILED,
    NOT_ACKNOWLEDGED,
    SKIPPED,
    STORED,
    Progress,
    discover,
    post_batch,
)
from dicomframes.standard import multipart
from dicomframes.standard.stow import OUT_OF_RESOURCES, Failed, stow_response
from dicomframes.standard.uids import new_uid


@pytest.fixture(params=["embedded", "orthanc"])
def client(request: pytest.FixtureRequest):
    """A Client of the embedded server, then of Orthanc (each test runs against both)."""
    if request.param == "embedded":
        server = request.getfixturevalue("embedded")
        return connect(server.url)
    orthanc = request.getfixturevalue("orthanc")
    return connect(orthanc.dicomweb_url, auth=orthanc.auth)


def _server_uids(client, study: str) -> set[str]:
    df = client.search_instances(study=study)
    return set(df["SOPInstanceUID"]) if len(df) else set()


def _by_source(df):
    return {row.source: row for row in df.itertuples(index=False)}


def test_mixed_items_each_get_an_outcome(client, tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    folder = tmp_path / "in"
    files = make_files(folder, 4, study, series)
    (folder / "notes.txt").write_text("this is not DICOM\n")
    (folder / "sub").mkdir()
    shutil.copy(files[0], folder / "sub" / "copy-of-first.dcm")  # same SOPInstanceUID
    broken = make_dataset(study, series, 90)
    (folder / "truncated.dcm").write_bytes(to_bytes(broken)[:-300])  # pixel data cut short
    zipped = [make_dataset(study, series, 50 + i) for i in range(2)]
    with zipfile.ZipFile(folder / "more.zip", "w") as zf:
        for i, ds in enumerate(zipped):
            zf.writestr(f"inner/z{i}.dcm", to_bytes(ds))
    as_dataset = make_dataset(study, series, 60)
    as_bytes = make_dataset(study, series, 61)

    df = client.store([folder, as_dataset, to_bytes(as_bytes), tmp_path / "missing.dcm"],
                      progress=False, batch_size=3)

    assert list(df.columns) == COLUMNS
    assert str(df["reason"].dtype) == "Int64"
    rows = _by_source(df)
    for path in files:
        assert rows[str(path)].status == STORED, rows[str(path)]
        assert rows[str(path)].RetrieveURL.endswith(rows[str(path)].SOPInstanceUID)
    notes = rows[str(folder / "notes.txt")]
    assert notes.status == FAILED and "not a DICOM file" in notes.message
    copy = rows[str(folder / "sub" / "copy-of-first.dcm")]
    assert copy.status == SKIPPED and str(files[0]) in copy.message
    truncated = rows[str(folder / "truncated.dcm")]
    # found before sending: Orthanc answers 400 without details, the embedded server an
    # unnamed failure item, so the server's answer cannot say which file was cut short
    assert truncated.status == FAILED and "truncated DICOM file" in truncated.message
    for i, ds in enumerate(zipped):
        row = rows[f"{folder / 'more.zip'}!inner/z{i}.dcm"]
        assert row.status == STORED and row.SOPInstanceUID == ds.SOPInstanceUID
    assert rows["<Dataset 1>"].status == STORED
    assert rows["<bytes 1>"].status == STORED
    assert rows[str(tmp_path / "missing.dcm")].status == FAILED

    expected = {pydicom.dcmread(p).SOPInstanceUID for p in files}
    expected |= {ds.SOPInstanceUID for ds in [*zipped, as_dataset, as_bytes]}
    assert _server_uids(client, study) == expected  # the truncated file is not there
    summary = df.attrs["summary"]
    assert summary[STORED] == len(expected)
    assert summary[FAILED] == 3
    assert summary["instances"] == len(df)


def test_storing_again_is_not_a_failure(client, tmp_path: Path) -> None:
    files = make_files(tmp_path, 3)
    first = client.store(files, progress=False)
    assert (first["status"] == STORED).all()
    again = client.store(files, progress=False)
    # The embedded server says "already stored" (45070); Orthanc answers 200 as if new.
    assert set(again["status"]) <= {STORED, ALREADY_STORED}
    already = again[again["status"] == ALREADY_STORED]
    assert (already["reason"] == 45070).all()


def test_skip_existing_resumes_an_interrupted_upload(client, tmp_path: Path) -> None:
    files = make_files(tmp_path, 6)
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    client.store(files[:4], progress=False)  # the "interrupted" first attempt

    df = client.store(files, progress=False, skip_existing=True)

    status = dict(zip(df["source"], df["status"], strict=True))
    assert [status[str(p)] for p in files] == [SKIPPED] * 4 + [STORED] * 2
    assert set(df.loc[df["status"] == SKIPPED, "message"]) == {"already on the server"}
    sent = df.attrs["summary"]["bytes"]
    assert sum(p.stat().st_size for p in files[4:]) < sent < sum(p.stat().st_size for p in files)
    assert len(_server_uids(client, study)) == 6


def test_study_mismatch_fails_those_rows(client, tmp_path: Path) -> None:
    study_a, study_b = new_uid(), new_uid()
    a = make_files(tmp_path / "a", 2, study_a)
    b = make_files(tmp_path / "b", 2, study_b)

    df = client.store([*a, *b], study=study_a, progress=False)

    status = dict(zip(df["source"], df["status"], strict=True))
    assert [status[str(p)] for p in a] == [STORED, STORED]
    assert [status[str(p)] for p in b] == [FAILED, FAILED]
    reasons = df.loc[df["status"] == FAILED, "reason"]
    assert reasons.notna().all()  # 43265 (embedded, Azure) or 272 (Orthanc)
    assert not _server_uids(client, study_b)


def test_orthanc_silently_dropped_parts_are_reported(orthanc, tmp_path: Path) -> None:
    client = connect(orthanc.dicomweb_url, auth=orthanc.auth)
    files = make_files(tmp_path, 2)
    instances = discover(files)
    # Orthanc ignores parts whose Content-Type it does not understand and answers 200.
    status = post_batch(client, instances, part_type="application/octet-stream")
    assert status == 200
    assert [i.status for i in instances] == [FAILED, FAILED]
    assert all(i.message == NOT_ACKNOWLEDGED for i in instances)


def test_cancel_stops_after_the_current_request(embedded, tmp_path: Path) -> None:
    client = connect(embedded.url)
    files = make_files(tmp_path, 5)
    cancel = threading.Event()
    seen: list[Progress] = []

    def callback(progress: Progress) -> None:
        seen.append(progress)
        cancel.set()

    df = client.store(files, progress=False, workers=1, batch_size=1, callback=callback,
                      cancel=cancel)

    assert list(df["status"]) == [STORED] + [SKIPPED] * 4
    assert set(df["message"][1:]) == {"cancelled before sending"}
    assert seen[0].instances_done == 1 and seen[-1].instances_done == 5
    assert seen[0].bytes_done > files[0].stat().st_size  # the multipart framing counts too


def test_no_server_fails_every_row_without_raising(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = connect(f"http://127.0.0.1:{port}", retries=0, timeout=5)
    df = client.store(make_files(tmp_path, 2), progress=False)
    assert list(df["status"]) == [FAILED, FAILED]
    assert all(m.startswith("request failed") for m in df["message"])


def test_discover_expands_glob_patterns(tmp_path: Path) -> None:
    make_files(tmp_path / "x" / "y", 3)
    found = discover(str(tmp_path / "**" / "*.dcm"))
    assert len(found) == 3 and all(i.status is None and i.sop_instance_uid for i in found)
    assert discover(str(tmp_path / "*.nothing"))[0].message == "no file matches this pattern"


def test_named_bytes_and_zip_bytes(embedded, tmp_path: Path) -> None:
    client = connect(embedded.url)
    ds = make_dataset()
    buffer = tmp_path / "a.zip"
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("one.dcm", to_bytes(make_dataset(ds.StudyInstanceUID)))
    df = client.store([("picked.dcm", to_bytes(ds)), ("upload.zip", buffer.read_bytes())],
                      progress=False)
    assert list(df["source"]) == ["picked.dcm", "upload.zip!one.dcm"]
    assert list(df["status"]) == [STORED, STORED]


def test_discover_names_each_kind_of_truncation() -> None:
    """Pixel Data cut short is named with both sizes; a file that ends inside the Pixel Data
    element header fails too (pydicom stops at it already)."""
    study, series = new_uid(), new_uid()
    whole = to_bytes(make_dataset(study, series, 1))
    start = whole.rindex(b"\xe0\x7f\x10\x00")  # (7FE0,0010) little endian
    declared = int.from_bytes(whole[start + 8:start + 12], "little")
    cut_value, cut_header = discover([("value.dcm", whole[:-300]),
                                      ("header.dcm", whole[:start + 9])])
    assert cut_value.status == FAILED
    assert cut_value.message == (f"truncated DICOM file: its Pixel Data declares {declared} "
                                 f"bytes, only {declared - 300} are present")
    assert cut_header.status == FAILED and "DICOM file" in cut_header.message


# ---- a full disk stops the upload (issue 12) ----------------------------------------------------


class _FullDisk(http.server.BaseHTTPRequestHandler):
    """A STOW-RS server whose disk is full: 507 without a body, or 409 whose
    FailedSOPSequence refuses the first posted instance with 0xA700 (the others unnamed)."""

    protocol_version = "HTTP/1.1"
    mode = "507"
    posts: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        parts = multipart.decode(body, self.headers["Content-Type"])
        type(self).posts.append(len(parts))
        if self.mode == "507":
            answer = b"insufficient storage: the archive disk is full"
            self.send_response(507)
            self.send_header("Content-Type", "text/plain")
        else:
            first = pydicom.dcmread(io.BytesIO(parts[0].content))
            answer = json.dumps(stow_response([], [
                Failed(first.SOPClassUID, first.SOPInstanceUID, OUT_OF_RESOURCES)])).encode()
            self.send_response(409)
            self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["507", "409"])
def test_out_of_resources_stops_the_upload(mode: str) -> None:
    handler = type("FullDisk", (_FullDisk,), {"mode": mode, "posts": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = connect(f"http://127.0.0.1:{server.server_address[1]}")
        df = client.store(make_instances(6), batch_size=2, workers=1, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.posts == [2]  # one request; nothing resent one by one, nothing more sent
    assert df["status"].tolist() == [FAILED] * 6
    assert df["reason"].tolist() == [OUT_OF_RESOURCES] * 6
    assert all("out of resources" in m for m in df["message"])
    assert df["message"].iloc[0].endswith(f"(HTTP {mode}" + (
        ": insufficient storage: the archive disk is full)" if mode == "507" else ")"))
    assert df["message"].iloc[5].startswith("not sent: ")
    assert df.attrs["summary"]["requests"] == 1


# ---- zip members and symbolic links (issue 12) --------------------------------------------------


def test_zip_members_climbing_out_get_a_failed_row(embedded, tmp_path: Path) -> None:
    good, evil = make_dataset(number=1), make_dataset(number=2)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/good.dcm", to_bytes(good))
        zf.writestr("../evil.dcm", to_bytes(evil))
        zf.writestr("/etc/absolute.dcm", to_bytes(evil))
    df = connect(embedded.url).store(archive, progress=False)
    rows = _by_source(df)
    assert rows[f"{archive}!ok/good.dcm"].status == STORED
    for name in ("../evil.dcm", "/etc/absolute.dcm"):
        row = rows[f"{archive}!{name}"]
        assert row.status == FAILED and name in row.message and "unsafe" in row.message
    as_bytes = discover(("upload.zip", archive.read_bytes()))
    assert sorted(i.status or "" for i in as_bytes) == ["", FAILED, FAILED]


def test_symlinks_out_of_the_folder_are_skipped_unless_followed(embedded,
                                                                tmp_path: Path) -> None:
    folder, outside = tmp_path / "upload", tmp_path / "elsewhere"
    (inside,) = make_files(folder, 1)
    (away,) = make_files(outside, 1)
    (folder / "link-out.dcm").symlink_to(away)
    (folder / "dir-out").symlink_to(outside, target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "link-in.dcm").symlink_to(inside)
    (folder / "broken.dcm").symlink_to(tmp_path / "nothing-here.dcm")

    rows = {i.source: i for i in discover(folder)}
    for name in ("link-out.dcm", "dir-out"):
        link = rows[str(folder / name)]
        assert link.status == SKIPPED and "outside the folder" in link.message
        assert "follow_symlinks=True" in link.message
    assert rows[str(folder / "broken.dcm")].status == FAILED
    assert rows[str(folder / "sub" / "link-in.dcm")].sop_instance_uid == (
        rows[str(inside)].sop_instance_uid)  # a link within the folder is followed
    assert str(away) not in rows

    client = connect(embedded.url)
    df = client.store(folder, progress=False)
    assert (df["status"] == STORED).sum() == 1  # the file inside; its link is a repeat
    followed = client.store(folder, progress=False, follow_symlinks=True)
    by = _by_source(followed)
    assert by[str(folder / "link-out.dcm")].status == STORED
    assert by[str(folder / "dir-out" / away.name)].status in (ALREADY_STORED, SKIPPED)
