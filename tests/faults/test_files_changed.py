"""Files changed behind the server's back: one stored file truncated, another deleted.

Whatever is asked (frames, the series, the instances), a 200 never carries fewer bytes than it
declares, and the series' other instances stay retrievable (or the answer is a clean error). A
restart does not look for such changes (it would read every file); ``dicomframes check`` finds
them and ``--repair`` makes the index agree with the files again.
"""

from __future__ import annotations

import http.client
import io
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
from support import make_dataset, to_bytes

from dicomframes.server import serve
from dicomframes.standard.multipart import decode
from dicomframes.standard.uids import new_uid

from .helpers import ANY_TS, check_archive, index_rows, report, stow

FRAME_BYTES = 16 * 16 * 2
OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DICOMS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class Answer:
    """A response read to its end over a fresh connection: ``complete`` is False when the body
    stopped short of its Content-Length (or of its last chunk)."""

    def __init__(self, url: str, accept: str) -> None:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                         headers={"Accept": accept})
            response = conn.getresponse()
            self.status = response.status
            self.headers = {k.lower(): v for k, v in response.getheaders()}
            try:
                self.body = response.read()
                self.complete = True
            except http.client.IncompleteRead as short:
                self.body = short.partial
                self.complete = False
        finally:
            conn.close()
        declared = self.headers.get("content-length")
        if declared is not None and int(declared) != len(self.body):
            self.complete = False

    def parts(self) -> list[bytes]:
        """The contents of a multipart answer."""
        return [bytes(p.content) for p in decode(self.body, self.headers["content-type"])]

    def __repr__(self) -> str:
        return f"<{self.status}, {len(self.body)} bytes, complete={self.complete}>"


def check_whole_or_error(answer: Answer, what: str) -> bool:
    """A 200 (or a 206 naming what is left out) must be complete; any other answer must be a
    clean error. True for a 200 or 206."""
    if answer.status in (200, 206):
        assert answer.complete, f"{what}: {answer.status} with fewer bytes than declared " \
            f"({answer})"
        return True
    assert 400 <= answer.status < 600, (what, answer)
    # a server-side error is fine if it says what is wrong; a bare "Internal Server Error" not
    text = answer.body.decode("utf-8", "replace").strip()
    assert text and text.lower() != "internal server error", \
        f"{what}: a bare {answer.status} ({text[:200]!r})"
    return False


@pytest.fixture
def damaged(tmp_path: Path):
    """A server holding one series of five 3-frame instances; then the file of the first is
    truncated in its pixel data and the file of the second deleted."""
    study, series = new_uid(), new_uid()
    datasets = [make_dataset(study, series, n + 1, frames=3) for n in range(5)]
    sent = {str(ds.SOPInstanceUID): to_bytes(ds) for ds in datasets}
    sops = list(sent)
    data = tmp_path / "archive"
    server = serve(data)
    try:
        assert stow(server.url, list(sent.values())).status_code == 200
        rows = index_rows(data)
        truncated = data / rows[sops[0]].path
        truncated.write_bytes(sent[sops[0]][: len(sent[sops[0]]) - FRAME_BYTES - 100])
        (data / rows[sops[1]].path).unlink()
        yield server, study, series, sops, sent
    finally:
        server.stop()


def _instance(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


def test_frames_of_changed_files_are_never_short(damaged) -> None:
    server, study, series, sops, _ = damaged
    answers = {}
    for sop in sops[:2]:
        for frames in ("1", "3", "1,2,3"):
            answer = Answer(f"{_instance(server.url, study, series, sop)}/frames/{frames}",
                            OCTETS)
            answers[f"{sop[-6:]}/{frames}"] = answer.status
            if check_whole_or_error(answer, f"frames {frames} of a changed file"):
                assert all(len(p) == FRAME_BYTES for p in answer.parts())
                assert len(answer.parts()) == len(frames.split(","))
    # the untouched instances are served as before
    for sop in sops[2:]:
        answer = Answer(f"{_instance(server.url, study, series, sop)}/frames/1,2,3", OCTETS)
        assert answer.status == 200 and answer.complete
        assert [len(p) for p in answer.parts()] == [FRAME_BYTES] * 3
    report("files changed: frames", answers=answers)


def test_series_and_instances_after_files_changed(damaged) -> None:
    server, study, series, sops, sent = damaged
    intact = {sent[s] for s in sops[2:]}
    answer = Answer(f"{server.url}/studies/{study}/series/{series}", DICOMS)
    if check_whole_or_error(answer, "retrieve of the series"):
        parts = answer.parts()
        assert all(p in set(sent.values()) for p in parts), "a part that is not a stored file"
        assert intact <= set(parts), "the series' intact instances are missing"
    for sop in sops[:2]:
        check_whole_or_error(Answer(_instance(server.url, study, series, sop), ANY_TS),
                             "retrieve of a changed file")
        got = Answer(_instance(server.url, study, series, sop), ANY_TS)
        assert got.status != 200 or got.body == sent[sop]
    for sop in sops[2:]:
        got = Answer(_instance(server.url, study, series, sop), ANY_TS)
        assert got.status == 200 and got.body == sent[sop]
    report("files changed: series", status=answer.status)


def _check(data: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomframes", "check", "--data", str(data),
                           "--quiet", *options], capture_output=True, text=True, timeout=300)


def test_restart_does_not_look_and_check_finds_and_repairs(damaged) -> None:
    """A restart does not compare the files (start-up is bounded by what was in flight):
    the changed files keep their rows and are answered with clean errors. ``dicomframes
    check`` finds them, and the files put in files/ without a row; ``--repair`` (refused
    while a server runs) makes index and files agree."""
    server, study, series, sops, sent = damaged
    data = Path(server.path)
    server.stop()
    stray = to_bytes(make_dataset(study, series, 9, frames=3))  # a valid file, no row
    stray_sop = str(pydicom.dcmread(io.BytesIO(stray)).SOPInstanceUID)
    (data / "files" / study / series / "added-by-hand.dcm").write_bytes(stray)
    (data / "files" / study / "junk.bin").write_bytes(b"not DICOM")
    with serve(data) as again:
        assert len(index_rows(data)) == 5, "the restart compared the files"
        for sop in sops[:2]:
            check_whole_or_error(Answer(_instance(again.url, study, series, sop), ANY_TS),
                                 "retrieve of a changed file")
        found = _check(data)
        assert found.returncode == 1, found.stderr
        lines = found.stdout.splitlines()
        for kind, sop in (("missing", sops[1]), ("damaged", sops[0])):
            assert any(line.startswith(kind) and sop in line for line in lines), found.stdout
        assert sum(line.startswith("unindexed") for line in lines) == 2, found.stdout
        assert "1 missing" in lines[-1] and "1 damaged" in lines[-1], lines[-1]
        refused = _check(data, "--repair")
        assert refused.returncode == 2 and "stop it" in refused.stderr, refused.stderr
    repaired = _check(data, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired:" in repaired.stdout and "1 restored" in repaired.stdout, repaired.stdout
    clean = _check(data)
    assert clean.returncode == 0 and "no differences" in clean.stdout, clean.stdout
    rows = check_archive(data)
    assert set(rows) == {*sops[2:], stray_sop}
    assert (data / "rejected" / "files" / study / "junk.bin").is_file()
    assert (data / "rejected" / rows[sops[2]].path.replace(sops[2], sops[0])).is_file()
    with serve(data) as again:
        assert Answer(_instance(again.url, study, series, stray_sop), ANY_TS).body == stray
        answer = Answer(f"{again.url}/studies/{study}/series/{series}", DICOMS)
        assert answer.status == 200 and answer.complete
        assert sorted(answer.parts()) == sorted([stray, *(sent[s] for s in sops[2:])])
    report("files changed: check", found=lines[-1], repaired=repaired.stdout.splitlines()[-1])
