"""The client against a remote-like archive (dicomframes.testing.remote): a page cap of 200,
429 with Retry-After in both forms, bearer tokens that rotate and expire, a 401 storm, and the
token absent from every artefact.

The proxy and the embedded server behind it run in this process on 127.0.0.1; every request
crosses a real loopback socket.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import make_files, make_instances

import dicomframes
from dicomframes.client import TokenFile, connect
from dicomframes.client.credentials import AccessToken
from dicomframes.standard.uids import new_uid
from dicomframes.testing.remote import RemoteLike

STUDIES = 6
PER_STUDY = 50  # 300 instances, 6 studies


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An embedded server holding 6 studies of 50 instances and one of 450 (page cap)."""
    from dicomframes.server import serve

    with serve(tmp_path_factory.mktemp("remote-archive")) as server:
        with connect(server.url, progress=False) as client:
            items: list[bytes] = []
            for i in range(STUDIES):
                items += make_instances(PER_STUDY, study_date=f"2021031{i}")
            big = new_uid()
            items += make_instances(450, study=big, study_date="20200101")
            outcome = client.store(items, progress=False)
            assert set(outcome["status"]) == {"stored"}
        server.big_study = big  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    return tmp_path / "token"


class Recorded:
    """A picklable token function that reads the token file and notes what it returned (in
    this process), to look for the tokens afterwards."""

    seen: ClassVar[list[str]] = []

    def __init__(self, path: Path) -> None:
        self.file = TokenFile(path)

    def __call__(self) -> str:
        token = str(self.file())
        Recorded.seen.append(token)
        return token


# ---- the page cap --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "cap"])
def test_page_cap_200_respected(archive: Any, mode: str, tmp_path: Path) -> None:
    direct = connect(archive.url, progress=False).search_instances(study=archive.big_study)
    with RemoteLike(archive.url, round_trip=0, bandwidth=None, page_cap_mode=mode) as remote, \
            connect(remote.url, progress=False, page_size=1000) as client:
        df = client.search_instances(study=archive.big_study)
        assert len(df) == 450 and df["SOPInstanceUID"].is_unique
        assert set(df["SOPInstanceUID"]) == set(direct["SOPInstanceUID"])
        assert client.capabilities["page_cap"] == 200
        refused = [s for s in remote.seen if s.status == 400]
        assert len(refused) == (1 if mode == "refuse" else 0)  # learned once, then kept to
        if mode == "refuse":  # every answered search asked for 200 rows or fewer
            answered = [s for s in remote.seen if s.status == 200]
            assert all(int(s.path.split("limit=")[1].split("&")[0]) <= 200 for s in answered)
        summary = client.harvest(tmp_path / "ds", progress=False)  # page_size 1000 asked
        assert summary.rows == STUDIES * PER_STUDY + 450
        assert pq.read_table(tmp_path / "ds").to_pandas()["SOPInstanceUID"].is_unique
        # a fresh reader (as on a Dask worker) meeting a study larger than the cap
        import warnings

        from dicomframes.dask import RowsMissing, read_dicomweb

        with warnings.catch_warnings():
            warnings.simplefilter("error", RowsMissing)
            frame = read_dicomweb(remote.url, rows_per_partition=100).compute(scheduler="sync")
        assert len(frame) == STUDIES * PER_STUDY + 450 and frame["SOPInstanceUID"].is_unique
    assert remote.rewrite_target("GET", "/studies") == "/studies?limit=100"
    capped = "/instances?limit=200" if mode == "cap" else None
    assert remote.rewrite_target("GET", "/instances?limit=1000") == capped


# ---- throttling ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_pauses_every_thread(archive: Any, form: str) -> None:
    with RemoteLike(archive.url, round_trip=0, bandwidth=None) as remote, \
            connect(remote.url, progress=False) as client:
        client.search_studies(limit=1)  # connections warm
        remote.throttle_next(1, retry_after=1, form=form)
        results: list[int] = []
        errors: list[BaseException] = []

        def search() -> None:
            try:
                results.append(len(client.search_studies(limit=2)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        first = threading.Thread(target=search)
        first.start()
        while client.transport.throttle.throttled < 1 and first.is_alive():
            time.sleep(0.005)
        others = [threading.Thread(target=search) for _ in range(3)]
        for thread in others:
            thread.start()
        for thread in [first, *others]:
            thread.join(60)
        assert not errors and results == [2, 2, 2, 2]
        refused = [s for s in remote.seen if s.status == 429]
        assert len(refused) == 1 and refused[0].retry_until is not None
        after = [s for s in remote.seen if s.at > refused[0].at]
        assert len(after) == 4  # the refused one again, and the three others
        assert all(s.at >= refused[0].retry_until - 0.005 for s in after)
        assert client.transport.throttle.throttled == 1


def test_throttled_when_the_wait_outlasts_the_deadline(archive: Any) -> None:
    with RemoteLike(archive.url, round_trip=0, bandwidth=None) as remote, \
            connect(remote.url, progress=False, deadline=2) as client:
        remote.throttle_next(1, retry_after=30)
        with pytest.raises(dicomframes.Throttled) as info:
            client.search_studies(limit=1)
        assert info.value.wait == 30 and info.value.status == 429
        assert remote.url in info.value.url and "30 s" in str(info.value)
        assert len(remote.seen) == 1  # not sent again: the wait asked is past the deadline
        # the gate stays closed for the client's other calls, which give up at once too
        with pytest.raises(dicomframes.Throttled):
            client.search_studies(limit=1)
        assert len(remote.seen) == 1


def test_throttled_after_retries_with_backoff(archive: Any) -> None:
    with RemoteLike(archive.url, round_trip=0, bandwidth=None) as remote, \
            connect(remote.url, progress=False, retries=2, backoff=0.01) as client:
        remote.throttle_next(5, retry_after=0)
        with pytest.raises(dicomframes.Throttled) as info:
            client.search_studies(limit=1)
        assert info.value.attempts == 3 and len(remote.seen) == 3


def test_harvest_with_throttling_gets_every_row_once(archive: Any, tmp_path: Path) -> None:
    with RemoteLike(archive.url, round_trip=0.005, bandwidth=None, throttle=0.2,
                    retry_after=0, seed=7) as remote, \
            connect(remote.url, progress=False, retries=10) as client:
        summary = client.harvest(tmp_path / "ds", progress=False, rows_per_partition=60,
                                 page_size=50)
    table = pq.read_table(tmp_path / "ds").to_pandas()
    assert summary.rows == len(table) == STUDIES * PER_STUDY + 450
    assert table["SOPInstanceUID"].is_unique
    assert summary.throttled == remote.throttled > 0


# ---- tokens --------------------------------------------------------------------------------


def test_401_storm_refreshes_once_per_request(archive: Any, tokens: Path) -> None:
    calls: list[int] = []

    def wrong() -> str:
        calls.append(1)
        return f"never-valid-{len(calls)}"

    with RemoteLike(archive.url, round_trip=0, bandwidth=None, token_file=tokens) as remote, \
            connect(remote.url, token=wrong, progress=False) as client:
        for _ in range(3):
            with pytest.raises(dicomframes.DICOMwebError) as info:
                client.search_studies(limit=1)
            assert info.value.status == 401
        assert len(calls) == 1 + 3  # the first token, then one new one per request
        assert remote.refused == 6  # each request sent twice, never more


def test_fixed_string_token_is_not_refreshed(archive: Any, tokens: Path) -> None:
    with RemoteLike(archive.url, round_trip=0, bandwidth=None, token_file=tokens) as remote, \
            connect(remote.url, token="stale", progress=False) as client:
        with pytest.raises(dicomframes.DICOMwebError) as info:
            client.search_studies(limit=1)
        assert info.value.status == 401 and remote.refused == 1


def test_credential_with_scopes_refreshes_before_expiry(archive: Any, tokens: Path) -> None:
    class Credential:
        def __init__(self) -> None:
            self.scopes: list[tuple[str, ...]] = []

        def get_token(self, *scopes: str) -> AccessToken:
            self.scopes.append(scopes)
            return AccessToken(tokens.read_text().strip(), int(time.time()) + 3600)

    credential = Credential()
    scope = dicomframes.client.AZURE_DICOM_SCOPE
    with RemoteLike(archive.url, round_trip=0, bandwidth=None, token_file=tokens) as remote, \
            connect(remote.url, token=credential, scopes=scope, progress=False) as client:
        for _ in range(3):
            client.search_studies(limit=1)
        assert credential.scopes == [(scope,)]  # one token, good for an hour
        assert remote.refused == 0
        assert "credential Credential" in repr(client)


def test_token_rotation_during_harvest(archive: Any, tokens: Path, tmp_path: Path) -> None:
    # one request at a time, each at least 50 ms: the harvest outlives a token (0.8 s)
    with RemoteLike(archive.url, round_trip=0.05, bandwidth=None, token_file=tokens,
                    token_lifetime=0.8, rotate_every=0.2) as remote, \
            connect(remote.url, token=TokenFile(tokens), progress=False) as client:
        summary = client.harvest(tmp_path / "ds", progress=False, rows_per_partition=30,
                                 page_size=50, workers=1)
    table = pq.read_table(tmp_path / "ds").to_pandas()
    assert summary.rows == len(table) == STUDIES * PER_STUDY + 450
    assert table["SOPInstanceUID"].is_unique
    assert remote.refused > 0  # tokens did expire during the harvest, and were replaced


def test_token_rotation_during_upload_and_volume(archive: Any, tokens: Path,
                                                 tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    files = make_files(tmp_path / "files", 60, study=study, series=series)
    # 30 requests one after another, each at least 50 ms: longer than a token lives (0.8 s)
    with RemoteLike(archive.url, round_trip=0.05, bandwidth=None, token_file=tokens,
                    token_lifetime=0.8, rotate_every=0.2) as remote, \
            connect(remote.url, token=TokenFile(tokens), progress=False) as client:
        outcome = client.store(files, batch_size=2, workers=1, progress=False)
        assert set(outcome["status"]) == {"stored"} and len(outcome) == 60
        refused_by_upload = remote.refused
        volume = client.volume(study, series, workers=2)
        for _ in range(2):  # each at least 30 rounds of 50 ms: more than a token's life
            volume = client.volume(study, series, workers=2)
    assert refused_by_upload > 0
    direct = connect(archive.url, progress=False)
    assert direct.search_instances(study=study, series=series)["SOPInstanceUID"].is_unique
    assert len(direct.search_instances(study=study, series=series)) == 60
    np.testing.assert_array_equal(volume, direct.volume(study, series))


def test_token_file_credential_refreshes_before_expiry(archive: Any, tokens: Path) -> None:
    # 40 requests of at least 30 ms: longer than a token lives (1 s)
    with RemoteLike(archive.url, round_trip=0.03, bandwidth=None, token_file=tokens,
                    token_lifetime=1.0, rotate_every=0.25) as remote, \
            connect(remote.url, token=TokenFile(tokens, lifetime=1.0), progress=False) as client:
        for _ in range(40):
            client.search_studies(limit=1)
        assert client.transport.auth.provider.fetches > 1
        assert remote.refused <= 1  # asked again before each token expired


def test_download_selection_resumes_and_checks_counts(archive: Any, tmp_path: Path) -> None:
    with RemoteLike(archive.url, round_trip=0.01, bandwidth=None) as remote, \
            connect(remote.url, progress=False) as client:
        studies = client.search_studies(StudyDate="20210310-20210311")
        assert len(studies) == 2
        table = studies.dicom.download(tmp_path / "out", progress=False)
        assert table["complete"].all() and table["on_disk"].sum() == 2 * PER_STUDY
        files = sorted((tmp_path / "out").glob("*/*/*.dcm"))
        assert len(files) == 2 * PER_STUDY
        for path in files[:3]:
            import pydicom

            ds = pydicom.dcmread(path)
            assert path.stem == ds.SOPInstanceUID
            assert path.parent.name == ds.SeriesInstanceUID
            assert path.parent.parent.name == ds.StudyInstanceUID
        before = len(remote.seen)
        again = studies.dicom.download(tmp_path / "out", progress=False)
        assert again["fetched"].sum() == 0
        retrieves = [s for s in list(remote.seen)[before:] if "limit" not in s.path]
        assert retrieves == []  # complete series cost no request
        files[0].unlink()
        third = studies.dicom.download(tmp_path / "out", progress=False)
        assert third["fetched"].sum() == 1 and third["complete"].all()
        some = client.search_instances(study=studies["StudyInstanceUID"].iloc[0]).head(4)
        picked = some.dicom.download(tmp_path / "picked", progress=False)
        assert picked["on_disk"].sum() == 4 and picked["expected"].sum() == 4


def test_token_absent_from_every_artefact(archive: Any, tokens: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    Recorded.seen.clear()
    caplog.set_level(logging.DEBUG)
    trace = io.StringIO()
    with RemoteLike(archive.url, round_trip=0.02, bandwidth=None, token_file=tokens,
                    token_lifetime=0.8, rotate_every=0.2) as remote, \
            connect(remote.url, token=Recorded(tokens), progress=False,
                    history_size=1000) as client, client.trace(trace):
        summary = client.harvest(tmp_path / "ds", progress=False, rows_per_partition=30,
                                 page_size=50, workers=1)
        outcome = client.store(make_instances(5), batch_size=2, progress=False)
        remote.throttle_next(1, retry_after=30)
        with pytest.raises(dicomframes.Throttled) as throttled, client.time_limit(1):
            client.search_studies(limit=1)
        history = list(client.history)
    bad = tmp_path / "bad"
    bad.write_text("not-a-valid-token-for-the-proxy\n")
    with RemoteLike(archive.url, round_trip=0, bandwidth=None, token_file=tokens) as remote, \
            connect(remote.url, token=Recorded(bad), progress=False) as client, \
            pytest.raises(dicomframes.DICOMwebError) as unauthorized:
        client.search_studies(limit=1)
    assert summary.rows > 0 and len(outcome) == 5
    assert len(Recorded.seen) > 1  # tokens rotated
    texts = [repr(client), str(client), trace.getvalue(), caplog.text,
             str(throttled.value), repr(throttled.value), str(unauthorized.value),
             repr(unauthorized.value), str(unauthorized.value.headers),
             str(outcome.attrs), outcome.to_csv(), str(summary),
             (tmp_path / "ds" / "_harvest.jsonl").read_text()]
    texts += [str(e) + e.curl() + json.dumps(e.request_headers) for e in history]
    for part in (tmp_path / "ds").glob("*.parquet"):
        metadata = pq.read_metadata(part).metadata or {}
        texts.append(str(metadata))
    for token in set(Recorded.seen):
        for text in texts:
            assert token not in text


def test_remote_command_serves_with_rotating_tokens(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    token_file = tmp_path / "token"
    command = [sys.executable, "-m", "dicomframes", "remote", "--port", "0", "--round-trip",
               "5", "--token-file", str(token_file), "--data", str(tmp_path / "archive")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("remote-like DICOMweb archive at http://127.0.0.1:"), first
        url = first.split(" at ", 1)[1].split(":", 2)
        url = ":".join(url[:2]) + ":" + url[2].split(":")[0]
        with connect(url, token=TokenFile(token_file), progress=False) as client:
            client.store(make_instances(3), progress=False)
            assert len(client.search_instances()) == 3
        with connect(url, progress=False) as anonymous, \
                pytest.raises(dicomframes.DICOMwebError) as info:
            anonymous.search_studies()
        assert info.value.status == 401
    finally:
        process.terminate()
        assert process.wait(30) == 0


def test_azure_strict_server_behind_the_link(tmp_path: Path) -> None:
    """The Azure-strict profile (400 for a limit over 200, 204 for no match) behind the
    remote-like link: searches, harvest and read_dicomweb ask for at most 200 rows."""
    from dicomframes.dask import read_dicomweb
    from dicomframes.server import serve

    with serve(tmp_path / "azure", profile="azure") as server:
        with connect(server.url, progress=False) as direct:
            big = new_uid()
            direct.store(make_instances(30) + make_instances(260, study=big), progress=False)
        with RemoteLike(server.url, round_trip=0.005, bandwidth=None,
                        page_cap=None) as remote, \
                connect(remote.url, progress=False, page_size=1000) as client:
            assert len(client.search_instances(study=big)) == 260
            summary = client.harvest(tmp_path / "ds", progress=False)
            frame = read_dicomweb(remote.url).compute(scheduler="sync")
        assert summary.rows == len(frame) == 290 and frame["SOPInstanceUID"].is_unique
        assert client.capabilities["page_cap"] == 200
        assert any(s.status == 400 for s in remote.seen)  # the server's own refusal, learned
