"""Client tests over real HTTP: the embedded server and Orthanc (every test that takes
``dicomweb`` runs against both), plus tiny scripted HTTP servers on 127.0.0.1 for behaviour no
real server shows on demand (503/429 with Retry-After, dropped connections, truncated bodies)."""

from __future__ import annotations

import csv
import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pydicom
import pytest
from support import TUTORIAL_DATA, DicomwebServer, make_instances

from dicomframes import errors
from dicomframes.client import Client, Exchange, connect, qido_params

STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
SERIES_GR = "1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
SERIES_B = "1.2.826.0.1.3680043.8.498.77033797676425927098669402985243398207"
GREEN = "1.2.826.0.1.3680043.8.498.12714725698140337137334606354172323212"
RED = "1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
BLUE = "1.2.826.0.1.3680043.8.498.13273713909719068980354078852867170114"
ALL_SOPS = {GREEN, RED, BLUE}
TOKEN = "s3cr3t-t0ken-that-must-never-leak"


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tutorial(dicomweb: DicomwebServer, tutorial_files: list[Path]) -> Client:
    """A client on a server holding the tutorial's three files (stored by plain requests)."""
    dicomweb.stow(tutorial_files)
    client = connect(dicomweb.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def pixels_by_sop(tutorial_files: list[Path]) -> dict[str, np.ndarray]:
    return {str(ds.SOPInstanceUID): ds.pixel_array
            for ds in (pydicom.dcmread(p) for p in tutorial_files)}


class Scripted:
    """A tiny HTTP/1.1 server on 127.0.0.1 that answers from a script and records requests.

    Each script step is ``(status, headers, body)``, ``"drop"`` (close the connection without
    answering) or a callable ``(handler) -> None`` that writes the answer itself. The last step
    repeats once the script is used up.
    """

    def __init__(self, steps: list[Any]) -> None:
        self.steps = list(steps)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                step = outer.steps.pop(0) if len(outer.steps) > 1 else outer.steps[0]
                if step == "drop":
                    self.close_connection = True
                    return
                if callable(step):
                    step(self)
                    return
                status, headers, payload = step
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Any]], Scripted]]:
    servers: list[Scripted] = []

    def start(steps: list[Any]) -> Scripted:
        server = Scripted(steps)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


JSON = {"Content-Type": "application/dicom+json"}


def study_json(uid: str) -> dict:
    return {"0020000D": {"vr": "UI", "Value": [uid]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}}


# ---------------------------------------------------------------------------------------------
# query encoding (pure)
# ---------------------------------------------------------------------------------------------


def test_qido_params_keywords_tags_dates_lists() -> None:
    params = qido_params({
        "PatientName": "Doe^J*",
        "00100020": "ID?",
        "(0008,0060)": "CT",
        "0x00080050": "A1",
        "StudyDate": (date(2020, 1, 1), None),
        "StudyTime": (None, "12:30:00"),
        "SOPInstanceUID": [GREEN, RED],
        "includefield": ["StudyDescription", "00081030", (0x0008, 0x0061)],
        "fuzzymatching": True,
        "limit": 10,
        "offset": 20,
        "PatientBirthDate": None,
    })
    assert params == {
        "PatientName": "Doe^J*",
        "00100020": "ID?",
        "00080060": "CT",
        "00080050": "A1",
        "StudyDate": "20200101-",
        "StudyTime": "-123000",
        "SOPInstanceUID": f"{GREEN},{RED}",
        "includefield": "StudyDescription,00081030,00080061",
        "fuzzymatching": "true",
        "limit": "10",
        "offset": "20",
    }
    assert qido_params({"StudyDate": ("2020-01-01", datetime(2020, 12, 31, 23))}) == {
        "StudyDate": "20200101-20201231"}
    assert qido_params({"StudyDate": "20200101-20201231"})["StudyDate"] == "20200101-20201231"
    assert qido_params({"StudyDate": pd.Timestamp("2020-09-22")})["StudyDate"] == "20200922"
    assert qido_params({"AcquisitionDateTime": datetime(2020, 9, 22, 12, 0, 1)}) == {
        "AcquisitionDateTime": "20200922120001"}
    assert qido_params({"includefield": "all"}) == {"includefield": "all"}
    assert qido_params({"StudyDate": (None, None)}) == {}


def test_qido_params_refuses_unknown_attributes_and_bad_uids() -> None:
    with pytest.raises(ValueError, match="PatientsNam"):
        qido_params({"PatientsNam": "x"})
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        qido_params({"SOPInstanceUID": ["1.2.3", "1.2.x"]})
    with pytest.raises(ValueError, match="limit"):
        qido_params({"limit": -1})


def test_uids_are_validated_before_any_request() -> None:
    client = Client("http://127.0.0.1:9")  # nothing listens there: no request may be sent
    for bad in ("../etc/passwd", "1.2.3/../..", "1.02.3", "", "1.2.3?x=1"):
        with pytest.raises(ValueError, match="UID"):
            client.metadata_json(bad)
        with pytest.raises(ValueError, match="UID"):
            client.retrieve(STUDY, bad)
    assert not client.history


def test_wildcards_travel_unencoded(scripted: Callable[..., Scripted]) -> None:
    """Orthanc compares query values without percent-decoding: * ? ^ , must arrive raw,
    while characters that must be encoded are (space, +, &, =, #, %)."""
    server = scripted([(200, JSON, b"[]")])
    client = connect(server.url)
    client.search_studies(PatientName="Doe^J?hn*", SOPInstanceUID=[GREEN, RED],
                          StudyDescription="a b+c&d=e#f%5E", limit=5)
    path = server.seen[0][1]
    assert "PatientName=Doe^J?hn*" in path
    assert f"SOPInstanceUID={GREEN},{RED}" in path
    assert "StudyDescription=a%20b%2Bc%26d%3De%23f%255E" in path
    assert path.endswith("limit=5")


# ---------------------------------------------------------------------------------------------
# the tutorial's calls (1-19) against both real servers
# ---------------------------------------------------------------------------------------------


def test_store_calls_1_2_3(dicomweb: DicomwebServer, tutorial_files: list[Path]) -> None:
    client = connect(dicomweb.url)
    # 1. POST /studies, one part per file
    outcome = client.store(tutorial_files)
    assert len(outcome) == 3
    assert set(outcome["status"]) <= {"stored", "already stored"}
    # 2. POST /studies/{study}: a part of another study fails
    other = make_instances(1)
    outcome = client.store([*tutorial_files[:1], other[0]], study=STUDY)
    by_status = outcome["status"].tolist()
    assert by_status[0] in ("stored", "already stored")
    assert by_status[1] == "failed"
    # 3. single-part application/dicom: Orthanc refuses it (415), the embedded server takes it
    single = make_instances(1)[0]
    headers = {"Content-Type": "application/dicom", "Accept": "application/dicom+json"}
    if dicomweb.kind == "orthanc":
        with pytest.raises(errors.UnsupportedMediaType) as info:
            client.request("POST", "studies", headers=headers, data=single)
        assert info.value.status == 415
    else:
        response = client.request("POST", "studies", headers=headers, data=single)
        assert response.status_code == 200
        assert "00081199" in response.json()


def test_retrieve_calls_4_6_8(tutorial: Client, pixels_by_sop: dict) -> None:
    # 4. the whole study
    datasets = tutorial.retrieve(STUDY)
    assert {str(ds.SOPInstanceUID) for ds in datasets} == ALL_SOPS
    for ds in datasets:
        assert np.array_equal(ds.pixel_array, pixels_by_sop[str(ds.SOPInstanceUID)])
    exchange = tutorial.last_exchange
    assert exchange.status == 200 and len(exchange.parts) == 3
    assert all(p.headers.get("Content-Type", "").startswith("application/dicom")
               for p in exchange.parts)
    # 6. one series, lazily
    iterator = tutorial.iter_retrieve(STUDY, SERIES_GR)
    assert not isinstance(iterator, list)
    assert {str(ds.SOPInstanceUID) for ds in iterator} == {GREEN, RED}
    # 8. one instance
    (ds,) = tutorial.retrieve(STUDY, SERIES_B, BLUE)
    assert str(ds.SOPInstanceUID) == BLUE
    assert "transfer-syntax=*" in tutorial.last_exchange.request_headers["Accept"]


def test_metadata_calls_5_7_9(tutorial: Client) -> None:
    study = tutorial.metadata(STUDY)                      # 5
    series = tutorial.metadata(STUDY, SERIES_GR)          # 7
    instance = tutorial.metadata(STUDY, SERIES_B, BLUE)   # 9
    assert len(study) == 3 and len(series) == 2 and len(instance) == 1
    assert set(study["SOPInstanceUID"]) == ALL_SOPS
    assert set(series["SOPInstanceUID"]) == {GREEN, RED}
    assert instance["SOPInstanceUID"].tolist() == [BLUE]
    assert (study["Rows"] == 979).all() and (study["Columns"] == 985).all()
    assert pd.api.types.is_integer_dtype(study["Rows"])
    assert pd.api.types.is_datetime64_any_dtype(study["StudyDate"])
    assert (study["StudyDate"] == pd.Timestamp("2020-09-22")).all()
    assert (study["PatientName"] == "Anony Mous").all()
    raw = tutorial.metadata_json(STUDY, SERIES_B, BLUE)
    assert isinstance(raw, list) and isinstance(raw[0], dict)
    pixel = raw[0].get("7FE00010") or raw[0].get("7fe00010")
    assert "BulkDataURI" in pixel and "InlineBinary" not in pixel


def test_frames_call_10(tutorial: Client, pixels_by_sop: dict) -> None:
    one = tutorial.frames(STUDY, SERIES_GR, GREEN, 1)
    assert one.shape == (979, 985, 3) and one.dtype == np.uint8
    assert np.array_equal(one, pixels_by_sop[GREEN])
    every = tutorial.frames(STUDY, SERIES_GR, RED)
    assert every.shape == (1, 979, 985, 3)
    assert np.array_equal(every[0], pixels_by_sop[RED])
    listed = tutorial.frames(STUDY, SERIES_B, BLUE, [1])
    assert np.array_equal(listed[0], pixels_by_sop[BLUE])
    assert "frames/1" in tutorial.last_exchange.url
    with pytest.raises(ValueError, match="frame"):
        tutorial.frames(STUDY, SERIES_B, BLUE, [2])  # checked against NumberOfFrames
    with pytest.raises(errors.DICOMwebError) as info:  # the server's own answer
        tutorial.request("GET", f"studies/{STUDY}/series/{SERIES_B}/instances/{BLUE}/frames/2",
                         headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert info.value.status in (400, 404)


def test_search_calls_11_to_16(tutorial: Client) -> None:
    studies = tutorial.search_studies(StudyInstanceUID=STUDY)                  # 11
    assert studies["StudyInstanceUID"].tolist() == [STUDY]
    assert tutorial.search_studies(PatientName="Anony*")["StudyInstanceUID"].tolist() == [STUDY]
    series = tutorial.search_series(SeriesInstanceUID=SERIES_GR)               # 12
    assert series["SeriesInstanceUID"].tolist() == [SERIES_GR]
    series = tutorial.search_series(STUDY, SeriesInstanceUID=SERIES_B)         # 13
    assert series["SeriesInstanceUID"].tolist() == [SERIES_B]
    assert "/studies/" in tutorial.last_exchange.url
    inst = tutorial.search_instances(SOPInstanceUID=GREEN)                     # 14
    assert inst["SOPInstanceUID"].tolist() == [GREEN]
    inst = tutorial.search_instances(STUDY, SOPInstanceUID=RED)                # 15
    assert inst["SOPInstanceUID"].tolist() == [RED]
    inst = tutorial.search_instances(STUDY, SERIES_B, SOPInstanceUID=BLUE)     # 16
    assert inst["SOPInstanceUID"].tolist() == [BLUE]
    # A search on one UID of its own level matches one row at most: sent as the tutorial
    # sends it, without a page size
    assert tutorial.last_exchange.url.endswith(
        f"/studies/{STUDY}/series/{SERIES_B}/instances?SOPInstanceUID={BLUE}")
    inst = tutorial.search_instances(series=SERIES_GR)
    # limit=None (the default) fetches every page: the first page's size is explicit
    assert tutorial.last_exchange.url.endswith(f"&limit={tutorial.page_size}")
    assert set(inst["SOPInstanceUID"]) == {GREEN, RED}


def test_delete_calls_17_18_19(dicomweb: DicomwebServer) -> None:
    study_uid = pydicom.dcmread(io.BytesIO(make_instances(1)[0])).StudyInstanceUID
    data = [*make_instances(2, study=study_uid), *make_instances(1, study=study_uid)]
    dicomweb.stow(data)
    first, second, third = (pydicom.dcmread(io.BytesIO(b)) for b in data)
    client = connect(dicomweb.url)
    if dicomweb.kind == "orthanc":
        with pytest.raises(errors.MethodNotAllowed) as info:
            client.delete(study_uid)
        assert info.value.status == 405
        assert "does not offer DICOMweb DELETE" in str(info.value)
        assert client.capabilities["delete"] is False
        assert len(client.metadata(study_uid)) == 3  # nothing was deleted
        return
    # 17. one instance
    client.delete(study_uid, first.SeriesInstanceUID, first.SOPInstanceUID)
    assert set(client.metadata(study_uid)["SOPInstanceUID"]) == {
        second.SOPInstanceUID, third.SOPInstanceUID}
    with pytest.raises(errors.NotFound):
        client.delete(study_uid, first.SeriesInstanceUID, first.SOPInstanceUID)
    # 18. one series
    client.delete(study_uid, third.SeriesInstanceUID)
    assert client.metadata(study_uid)["SOPInstanceUID"].tolist() == [second.SOPInstanceUID]
    # 19. the study
    client.delete(study_uid)
    with pytest.raises(errors.NotFound):
        client.metadata(study_uid)
    with pytest.raises(errors.NotFound) as info:
        client.delete(study_uid)
    assert info.value.status == 404 and info.value.method == "DELETE"
    assert client.capabilities["delete"] is True


# ---------------------------------------------------------------------------------------------
# searches: filters, paging, DataFrame types
# ---------------------------------------------------------------------------------------------


def test_search_filters(tutorial: Client) -> None:
    def uids(df: pd.DataFrame, column: str = "SOPInstanceUID") -> set[str]:
        return set(df[column]) if len(df) else set()

    c = tutorial
    assert uids(c.search_studies(PatientName="An?ny*"), "StudyInstanceUID") == {STUDY}
    assert uids(c.search_studies(PatientName="Nobody*"), "StudyInstanceUID") == set()
    assert STUDY in uids(c.search_studies(StudyDate=("20200101", None)), "StudyInstanceUID")
    assert STUDY in uids(c.search_studies(StudyDate=(date(2020, 9, 1), date(2020, 9, 30))),
                         "StudyInstanceUID")
    assert STUDY in uids(c.search_studies(StudyDate=date(2020, 9, 22)), "StudyInstanceUID")
    assert STUDY not in uids(c.search_studies(StudyDate=(None, "20200921")),
                             "StudyInstanceUID")
    assert STUDY not in uids(c.search_studies(StudyDate=("2020-09-23", None)),
                             "StudyInstanceUID")
    assert uids(c.search_instances(SOPInstanceUID=[GREEN, BLUE])) == {GREEN, BLUE}
    assert uids(c.search_instances(STUDY, **{"00080018": RED})) == {RED}
    series = c.search_series(STUDY, Modality="OT")
    assert set(series["SeriesInstanceUID"]) == {SERIES_GR, SERIES_B}
    studies = c.search_studies(StudyInstanceUID=STUDY, includefield=["PatientSex", "00101010"])
    assert "PatientSex" in studies.columns
    assert studies["PatientSex"].tolist() == ["F"]
    everything = c.search_instances(STUDY, SERIES_B, includefield="all")
    assert {"Rows", "Columns"} <= set(everything.columns)
    assert "includefield=all" in c.last_exchange.url


def test_search_dataframe_types(tutorial: Client) -> None:
    studies = tutorial.search_studies(StudyInstanceUID=STUDY)
    row = studies.iloc[0]
    assert pd.api.types.is_datetime64_any_dtype(studies["StudyDate"])
    assert row["StudyDate"] == pd.Timestamp("2020-09-22")
    assert row["PatientName"] == "Anony Mous"
    assert isinstance(row["StudyInstanceUID"], str)
    assert pd.api.types.is_integer_dtype(studies["NumberOfStudyRelatedInstances"])
    assert row["NumberOfStudyRelatedInstances"] == 3
    assert studies.dicom.client is tutorial
    raw = tutorial.search_studies(StudyInstanceUID=STUDY, raw=True)
    assert len(raw) == 1


def test_paging_with_limit_none(dicomweb: DicomwebServer) -> None:
    data = make_instances(5, patient_id="PAGING")
    study = pydicom.dcmread(io.BytesIO(data[0])).StudyInstanceUID
    dicomweb.stow(data)
    client = connect(dicomweb.url, page_size=2)
    before = len(client.history)
    df = client.search_instances(study)
    assert len(df) == 5 and df["SOPInstanceUID"].is_unique
    urls = [e.url for e in list(client.history)[before:]]
    assert len(urls) == 3  # 2 + 2 + 1 (short page: stop)
    assert urls[1].endswith("limit=2&offset=2") and urls[2].endswith("limit=2&offset=4")
    # a limit above the page size pages too, and stops at the limit
    assert len(client.search_instances(study, limit=3)) == 3
    # a limit within the page size is a single request, sent as given
    df = client.search_instances(study, limit=2, offset=1)
    assert len(df) == 2
    assert client.last_exchange.url.endswith("limit=2&offset=1")
    assert len(client.search_instances(study, offset=4)) == 1


def test_paging_stops_when_server_ignores_offset(scripted: Callable[..., Scripted]) -> None:
    page = json.dumps([study_json("1.2.3"), study_json("1.2.4")]).encode()
    server = scripted([(200, JSON, page)])
    client = connect(server.url, page_size=2)
    with pytest.warns(RuntimeWarning, match="offset"):
        df = client.search_studies()
    assert df["StudyInstanceUID"].tolist() == ["1.2.3", "1.2.4"]
    assert len(server.seen) == 2


def test_paging_hard_cap(scripted: Callable[..., Scripted]) -> None:
    counter = iter(range(1, 10_000))

    def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = json.dumps([study_json(f"1.2.{next(counter)}")]).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/dicom+json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server = scripted([endless])
    client = connect(server.url, page_size=1, max_pages=5, progress=False)
    with pytest.warns(RuntimeWarning, match="5 pages"):
        df = client.search_studies()
    assert len(df) == 5 and len(server.seen) == 5


def test_empty_answers_204_and_empty_list(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(204, {}, b""), (200, JSON, b"[]")])
    client = connect(server.url)
    for _ in range(2):
        df = client.search_series(limit=10)
        assert len(df) == 0
        assert {"SeriesInstanceUID", "Modality"} <= set(df.columns)
    assert len(server.seen) == 2


# ---------------------------------------------------------------------------------------------
# metadata against the tutorial's dicom-metadata.csv
# ---------------------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    if value is None or (not isinstance(value, list | tuple | np.ndarray) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp | datetime):
        return value.strftime("%Y%m%d")
    if isinstance(value, pd.Timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def test_metadata_matches_tutorial_csv(tutorial: Client) -> None:
    with open(TUTORIAL_DATA / "dicom-metadata.csv", newline="") as f:
        expected = {row["SOPInstanceUID"]: row for row in csv.DictReader(f)}
    df = tutorial.metadata(STUDY, split_multivalued=True)
    shared = [c for c in df.columns if c in next(iter(expected.values()))]
    assert {"ImageType", "ImageType1", "ImageType2", "PixelSpacing", "PixelSpacing1",
            "StudyDate", "StudyTime", "PatientName", "Rows", "InstanceNumber"} <= set(shared)
    assert len(shared) >= 30
    compared = 0
    for _, row in df.iterrows():
        want = expected[row["SOPInstanceUID"]]
        for column in shared:
            assert _canonical(row[column]) == want[column].strip(), (column, row[column])
            compared += 1
    assert compared == 3 * len(shared)


# ---------------------------------------------------------------------------------------------
# rendered, bulk data
# ---------------------------------------------------------------------------------------------


def test_rendered(tutorial: Client) -> None:
    picture = tutorial.rendered(STUDY, SERIES_GR, GREEN)
    assert picture.shape[:2] == (979, 985) and picture.dtype == np.uint8
    frame = tutorial.rendered(STUDY, SERIES_GR, GREEN, frame=1)
    assert frame.shape[:2] == (979, 985)
    assert tutorial.last_exchange.url.endswith("/frames/1/rendered")


def test_bulkdata_absolute_and_relative(tutorial: Client, pixels_by_sop: dict) -> None:
    obj = tutorial.metadata_json(STUDY, SERIES_GR, GREEN)[0]
    uri = (obj.get("7FE00010") or obj["7fe00010"])["BulkDataURI"]
    data = tutorial.bulkdata(uri)
    raw = pixels_by_sop[GREEN].tobytes()
    assert data[: len(raw)] == raw and len(data) - len(raw) in (0, 1)
    if uri.startswith("http"):
        relative = uri[len(tutorial.url):]
        assert tutorial.bulkdata(relative)[: len(raw)] == raw
    with pytest.raises(ValueError, match="refusing"):
        tutorial.bulkdata("http://127.0.0.2:1/elsewhere/bulk/7fe00010")


# ---------------------------------------------------------------------------------------------
# errors and secrets
# ---------------------------------------------------------------------------------------------


def test_not_found_carries_status_url_and_message(tutorial: Client) -> None:
    missing = "1.2.3.4.5.6.7.8.9"
    with pytest.raises(errors.NotFound) as info:
        tutorial.metadata(missing)
    error = info.value
    assert isinstance(error, errors.DICOMwebError)
    assert error.status == 404 and error.method == "GET"
    assert error.url == f"{tutorial.url}/studies/{missing}/metadata"
    assert error.message  # Orthanc sends it without a Content-Type: read anyway
    assert tutorial.last_exchange.status == 404
    with pytest.raises(errors.NotFound):
        tutorial.retrieve(missing)


def test_error_body_read_without_content_type(scripted: Callable[..., Scripted]) -> None:
    long = b"bad   query:\n  PatientNam is not a supported attribute " + b"x" * 5000
    server = scripted([(400, {}, long)])
    client = connect(server.url)
    with pytest.raises(errors.BadRequest) as info:
        client.search_studies(PatientName="x")
    assert info.value.message.startswith("bad query: PatientNam is not a supported attribute")
    assert len(info.value.message) <= 1000


def test_token_never_leaks(embedded: Any, tutorial_files: list[Path],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded server ignores tokens, so a real exchange can carry one."""
    dicomweb = DicomwebServer("embedded", embedded.url, embedded)
    dicomweb.stow(tutorial_files)
    client = connect(dicomweb.url, token=TOKEN)
    client.search_studies(StudyInstanceUID=STUDY)
    client.retrieve(STUDY, SERIES_B, BLUE)
    with pytest.raises(errors.NotFound) as info:
        client.metadata("1.2.3.4.5")
    texts = [repr(client), str(client), repr(info.value), str(info.value),
             info.value.message, json.dumps(info.value.headers), repr(client.session.auth),
             repr(client._auth)]
    for exchange in client.history:
        texts += [str(exchange), repr(exchange), exchange._repr_html_(), exchange.curl()]
        assert exchange.request_headers["Authorization"] == "Bearer ***"
    assert all(TOKEN not in text for text in texts)
    assert "$DICOMWEB_TOKEN" in client.last_exchange.curl()
    # the token is sent, though
    monkeypatch.setenv("DICOMWEB_URL", dicomweb.url)
    monkeypatch.setenv("DICOMWEB_TOKEN", TOKEN)
    from_env = connect()
    assert from_env.url == dicomweb.url and TOKEN not in repr(from_env)
    assert from_env.search_studies(StudyInstanceUID=STUDY)["StudyInstanceUID"].tolist() == [STUDY]


def test_token_is_sent_and_redacted(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(401, {"WWW-Authenticate": "Bearer"}, TOKEN.encode() + b" rejected")])
    client = connect(server.url, token=TOKEN)
    with pytest.raises(errors.DICOMwebError) as info:
        client.search_studies(limit=1)
    assert server.seen[0][2]["Authorization"] == f"Bearer {TOKEN}"
    assert info.value.status == 401
    assert TOKEN not in str(info.value) and "*** rejected" in info.value.message
    assert TOKEN.encode() not in info.value.body and b"*** rejected" in info.value.body
    assert TOKEN not in str(client.last_exchange)


def test_basic_auth_against_orthanc(tmp_path: Path, tutorial_files: list[Path]) -> None:
    from support import require

    from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

    require(orthanc_installed(), "Orthanc", "apt-get install orthanc orthanc-dicomweb")
    password = "pa55-word-xyz"
    with start_orthanc(tmp_path / "orthanc", username="alice", password=password) as server:
        with pytest.raises(errors.DICOMwebError) as info:
            connect(server.dicomweb_url).search_studies()
        assert info.value.status == 401
        client = connect(server.dicomweb_url, auth=("alice", password))
        assert len(client.search_studies()) == 0
        assert client.last_exchange.request_headers["Authorization"] == "Basic ***"
        in_url = connect(server.dicomweb_url.replace("://", f"://alice:{password}@"))
        assert password not in in_url.url and password not in repr(in_url)
        assert len(in_url.search_studies()) == 0
        assert password not in str(in_url.last_exchange)


# ---------------------------------------------------------------------------------------------
# retries, over a real loopback server
# ---------------------------------------------------------------------------------------------


def test_retry_on_503_then_200_honours_retry_after(scripted: Callable[..., Scripted]) -> None:
    body = json.dumps([study_json("1.2.3")]).encode()
    server = scripted([(503, {"Retry-After": "1"}, b"busy"), (200, JSON, body)])
    client = connect(server.url)
    df = client.search_studies(limit=10)
    assert df["StudyInstanceUID"].tolist() == ["1.2.3"]
    assert len(server.seen) == 2
    statuses = [e.status for e in client.history]
    assert statuses == [503, 200]
    assert client.history[-1].attempt == 2


def test_retry_on_429_and_gives_up(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(429, {"Retry-After": "0"}, b"slow down")])
    client = connect(server.url, retries=2)
    with pytest.raises(errors.DICOMwebError) as info:
        client.search_studies(limit=1)
    assert info.value.status == 429 and "slow down" in info.value.message
    assert len(server.seen) == 3  # first try + 2 retries


def test_connection_errors_retried_for_get_only(scripted: Callable[..., Scripted]) -> None:
    server = scripted(["drop", (200, JSON, b"[]")])
    client = connect(server.url, backoff=0.01)
    assert len(client.search_studies(limit=1)) == 0
    assert len(server.seen) == 2
    assert client.history[0].status is None and client.history[0].error

    server = scripted(["drop", (200, JSON, b"{}")])
    client = connect(server.url, backoff=0.01)
    parts = iter([b"--b\r\nContent-Type: application/dicom\r\n\r\nx\r\n--b--\r\n"])
    with pytest.raises(errors.ConnectionFailed, match="closed the connection"):
        client.request("POST", "studies", data=parts,
                       headers={"Content-Type": "multipart/related; boundary=b"})
    assert len(server.seen) == 1  # STOW is never sent twice


def test_streamed_post_not_retried_on_503(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(503, {"Retry-After": "0"}, b""), (200, JSON, b"{}")])
    client = connect(server.url)
    with pytest.raises(errors.DICOMwebError) as info:
        client.request("POST", "studies", data=iter([b"abc"]),
                       headers={"Content-Type": "multipart/related; boundary=b"},
                       summary="multipart/related, 1 part, 3 B")
    assert info.value.status == 503 and len(server.seen) == 1
    assert client.last_exchange.request_body == "multipart/related, 1 part, 3 B"


def test_post_not_retried_on_503_even_with_a_bytes_body(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(503, {"Retry-After": "0"}, b"busy"), (200, JSON, b"{}")])
    client = connect(server.url)
    with pytest.raises(errors.DICOMwebError) as info:
        client.request("POST", "studies", data=b"--b\r\n\r\nx\r\n--b--\r\n",
                       headers={"Content-Type": "multipart/related; boundary=b"})
    assert info.value.status == 503 and len(server.seen) == 1  # STOW is never sent twice
    server.steps[:] = [(503, {"Retry-After": "0"}, b"busy"), (204, {}, b"")]
    client.request("DELETE", f"studies/{STUDY}")  # idempotent: retried after the 503
    assert [seen[0] for seen in server.seen] == ["POST", "DELETE", "DELETE"]


# ---------------------------------------------------------------------------------------------
# multipart answers: truncation, single part
# ---------------------------------------------------------------------------------------------


def _multipart_writer(parts: list[bytes], close: bool) -> Callable[..., None]:
    def write(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type",
                            'multipart/related; type="application/dicom"; boundary=XyZ')
        handler.send_header("Connection", "close")
        handler.end_headers()
        for part in parts:
            handler.wfile.write(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + part
                                + b"\r\n")
        if close:
            handler.wfile.write(b"--XyZ--\r\n")
        handler.close_connection = True

    return write


def test_truncated_retrieve_raises(scripted: Callable[..., Scripted]) -> None:
    files = make_instances(2)
    ok = scripted([_multipart_writer(files, close=True)])
    assert len(connect(ok.url).retrieve(STUDY)) == 2
    cut = scripted([_multipart_writer(files, close=False)])
    client = connect(cut.url)
    got = []
    with pytest.raises(errors.MultipartError, match=r"truncated|closing|complete parts"):
        got.extend(client.iter_retrieve(STUDY))
    assert len(got) <= 2


def test_single_part_retrieve_answer(scripted: Callable[..., Scripted]) -> None:
    data = make_instances(1)[0]
    server = scripted([(200, {"Content-Type": "application/dicom"}, data)])
    (ds,) = connect(server.url).retrieve(STUDY, SERIES_GR, GREEN)
    assert ds.SOPInstanceUID == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID


def test_transcode_refused_falls_back(scripted: Callable[..., Scripted]) -> None:
    files = make_instances(1)
    server = scripted([(500, {}, b"cannot transcode"), _multipart_writer(files, close=True)])
    client = connect(server.url)
    with pytest.warns(RuntimeWarning, match="cannot send transfer syntax"):
        (_ds,) = client.retrieve(STUDY, transfer_syntax="1.2.840.10008.1.2.4.90")
    assert "transfer-syntax=1.2.840.10008.1.2.4.90" in server.seen[0][2]["Accept"]
    assert "transfer-syntax=*" in server.seen[1][2]["Accept"]


# ---------------------------------------------------------------------------------------------
# the teaching view: Exchange, history, trace
# ---------------------------------------------------------------------------------------------


def test_exchange_transcript(tutorial: Client) -> None:
    tutorial.search_studies(StudyInstanceUID=STUDY)
    exchange = tutorial.last_exchange
    assert isinstance(exchange, Exchange)
    text = str(exchange)
    assert f"> GET {urlsplit(tutorial.url).path}/studies?StudyInstanceUID={STUDY}" in text
    assert "> Accept: application/dicom+json" in text
    assert "< HTTP/1.1 200" in text
    assert '"0020000D"' in text or '"0020000d"' in text  # the pretty JSON answer
    html_text = exchange._repr_html_()
    assert "<pre" in html_text and "&gt; GET" in html_text
    tutorial.retrieve(STUDY, SERIES_GR)
    text = str(tutorial.last_exchange)
    assert "multipart body, 2 parts" in text and "application/dicom" in text
    assert exchange.curl().startswith("curl -X GET")

    out = io.StringIO()
    with tutorial.trace(out):
        tutorial.search_series(STUDY)
        tutorial.retrieve(STUDY, SERIES_B, BLUE)
    printed = out.getvalue()
    assert printed.count("> GET") == 2 and "multipart body, 1 part" in printed
    tutorial.search_series(STUDY)
    assert out.getvalue() == printed  # tracing ended with the block
    assert len(tutorial.history) <= tutorial.history.maxlen


def test_history_is_bounded() -> None:
    client = Client("http://127.0.0.1:9", history_size=3, retries=0)
    for _ in range(5):
        with pytest.raises(errors.ConnectionRefused):
            client.search_studies(limit=1)
    assert len(client.history) == 3


def test_request_low_level(tutorial: Client) -> None:
    response = tutorial.request("GET", f"studies/{STUDY}/series",
                                params={"Modality": "OT"},
                                headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert tutorial.last_exchange.url.endswith(f"/studies/{STUDY}/series?Modality=OT")


def test_connect_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMWEB_URL", raising=False)
    with pytest.raises(ValueError):
        Client("ftp://example.org")
    with pytest.raises(ValueError):
        Client("http://127.0.0.1:1", token="a", auth=("u", "p"))
    client = Client("http://127.0.0.1:1/dicom-web/")
    assert client.url == "http://127.0.0.1:1/dicom-web"
    assert client.session.verify is True
    assert "dicom-web" in repr(client)


def test_connect_without_url_uses_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomframes.server

    monkeypatch.delenv("DICOMWEB_URL", raising=False)
    monkeypatch.setenv("DICOMWEB_TOKEN", TOKEN)  # ignored without DICOMWEB_URL
    monkeypatch.setenv("DICOMFRAMES_DATA", str(tmp_path / "archive"))
    client = connect()
    assert client.url == dicomframes.server.embedded().url
    assert client.url.startswith("http://127.0.0.1:")
    assert "bearer" not in repr(client)
    assert isinstance(client.search_studies(), pd.DataFrame)


def test_bulkdata_single_part_answer(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(200, {"Content-Type": "application/octet-stream"}, b"\x01\x02\x03\x04")])
    client = connect(server.url)
    assert client.bulkdata(f"{server.url}/studies/{STUDY}/bulk/7fe00010") == b"\x01\x02\x03\x04"
    assert client.bulkdata(f"studies/{STUDY}/bulk/7fe00010") == b"\x01\x02\x03\x04"
    assert server.seen[1][1] == f"/studies/{STUDY}/bulk/7fe00010"


def test_read_timeout_is_retried_for_get(scripted: Callable[..., Scripted]) -> None:
    import time

    def slow(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(3)
        handler.close_connection = True

    server = scripted([slow, (200, JSON, b"[]")])
    client = connect(server.url, timeout=1.0, backoff=0.01)
    assert len(client.search_studies(limit=1)) == 0
    assert "Timeout" in (client.history[0].error or "")
    assert client.history[-1].status == 200
    impatient = connect(server.url, timeout=1.0, retries=0)
    server.steps[:] = [slow]
    with pytest.raises(errors.ConnectionTimedOut, match="no answer within 1 s"):
        impatient.search_studies(limit=1)


def test_caret_in_person_name_matches_on_real_servers(dicomweb: DicomwebServer) -> None:
    """Orthanc does not percent-decode queries: "Doe^J*" only matches when ^ travels raw."""
    data = make_instances(1, patient_name="Caretson^Jo", patient_id="CARET")
    study = pydicom.dcmread(io.BytesIO(data[0])).StudyInstanceUID
    dicomweb.stow(data)
    client = connect(dicomweb.url)
    found = client.search_studies(PatientName="Caretson^J*", PatientID="CARET")
    assert study in set(found["StudyInstanceUID"])
    assert "PatientName=Caretson^J*" in client.last_exchange.url


# ---------------------------------------------------------------------------------------------
# errors that no server reported, the package's names, the low-level multipart call
# ---------------------------------------------------------------------------------------------


def test_empty_metadata_raises_empty_response_with_full_url(
        scripted: Callable[..., Scripted]) -> None:
    """A server that answers 200 with nothing is not a 404: EmptyResponse names the full URL."""
    import dicomframes
    from dicomframes.client import frames as frames_module

    server = scripted([(200, JSON, b"[]")])
    client = connect(server.url)
    study, series, sop = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    with pytest.raises(dicomframes.EmptyResponse) as info:
        client.frames(study, series, sop)
    error = info.value
    assert not isinstance(error, errors.NotFound)
    assert isinstance(error, errors.DicomFramesError)
    assert error.method == "GET"
    assert error.url == f"{server.url}/studies/{study}/series/{series}/instances/{sop}/metadata"
    assert error.url in str(error) and "no metadata" in str(error)
    with pytest.raises(errors.EmptyResponse) as info:
        frames_module.fetch_volume(client, study, series)
    assert info.value.url == f"{server.url}/studies/{study}/series/{series}/metadata"
    assert "no image instances" in info.value.message


def test_package_lists_its_public_names() -> None:
    import dicomframes

    names = dir(dicomframes)
    for name in ("connect", "Client", "serve", "Server", "EmptyResponse", "NotFound",
                 "DICOMwebError", "DecoderMissing", "MultipartError", "__version__"):
        assert name in names, name
    assert dicomframes.EmptyResponse is errors.EmptyResponse


def test_iter_multipart_is_public_and_recorded(scripted: Callable[..., Scripted]) -> None:
    body = (b"--XX\r\nContent-Type: application/octet-stream\r\n\r\nabc\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\n\r\ndefg\r\n--XX--\r\n")
    ctype = 'multipart/related; type="application/octet-stream"; boundary=XX'
    server = scripted([(200, {"Content-Type": ctype}, body)])
    client = connect(server.url)
    parts = [(bytes(p.content), ts) for p, ts in client.iter_multipart("studies/1.2/bulk")]
    assert parts == [(b"abc", None), (b"defg", None)]
    accept = server.seen[-1][2]["Accept"]
    assert accept == 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    assert [p.size for p in client.last_exchange.parts] == [3, 4]
