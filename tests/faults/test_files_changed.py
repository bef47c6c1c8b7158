"""Files changed behind the server's back: one stored file truncated, another deleted.

Whatever is asked (frames, the series, the instances, a restart), a 200 never carries fewer
bytes than it declares, the series' other instances stay retrievable (or the answer is a clean
error), and after a restart the index agrees with the files again.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import make_dataset, to_bytes

from dicomframes.server import serve
from dicomframes.standard.multipart import decode
from dicomframes.standard.uids import new_uid

from .helpers import ANY_TS, DICOM_JSON, check_archive, index_rows, report, stow

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


def test_restart_after_files_changed_repairs_the_index(damaged) -> None:
    server, study, series, sops, sent = damaged
    data = Path(server.path)
    server.stop()
    with serve(data) as again:
        rows = check_archive(data)
        assert set(rows) == set(sops[2:]), "the truncated or deleted file is still indexed"
        for sop in sops[:2]:
            assert Answer(_instance(again.url, study, series, sop), ANY_TS).status == 404
        answer = Answer(f"{again.url}/studies/{study}/series/{series}", DICOMS)
        assert answer.status == 200 and answer.complete
        assert sorted(answer.parts()) == sorted(sent[s] for s in sops[2:])
        found = Answer(f"{again.url}/studies/{study}/series/{series}/instances", DICOM_JSON)
        assert found.status == 200 and found.body.count(b'"00080018"') == 3
