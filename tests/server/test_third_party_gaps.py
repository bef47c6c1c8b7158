"""Issue 11: what third-party clients need from the embedded server, against a real server on
127.0.0.1 loaded with real files (the tutorial's and pydicom's whole corpus).

Nothing fails after the first byte; parent UIDs in hierarchical QIDO results; Explicit VR Little
Endian by default; ModalitiesInStudy at every level; thumbnails and rendered studies/series;
combined date-time ranges; matching inside sequences; CORS wired through serve() and the CLI.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from support import make_dataset, to_bytes

from dicomframes.cli import build_parser
from dicomframes.server import Server, serve

from .server_helpers import boundary_of, split_multipart, stow, uids_of, value

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def get(url: str, accept: str | None = None, **params: str) -> requests.Response:
    """GET with an Accept header (none when ``accept`` is None)."""
    headers = {"Accept": accept} if accept is not None else {}
    return requests.get(url, headers=headers, params=params or None, timeout=120)


def assert_whole(answer: requests.Response) -> None:
    """A 200 multipart answer ends with its closing boundary (nothing was cut short)."""
    assert answer.status_code == 200, answer.text[:300]
    delim = b"--" + boundary_of(answer.headers["Content-Type"]).encode()
    assert answer.content.rstrip(b"\r\n").endswith(b"\r\n" + delim + b"--"), \
        f"{answer.url}: no closing boundary"
    length = answer.headers.get("Content-Length")
    assert length is None or int(length) == len(answer.content)


def syntax_of(content_type: str) -> str | None:
    """The transfer-syntax parameter of a (part) Content-Type."""
    match = re.search(r"transfer-syntax=\"?([0-9.*]+)", content_type)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------
# the pydicom corpus
# --------------------------------------------------------------------------------------------


def corpus_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every *.dcm file bundled with pydicom; one whose SOP Instance UID another already has
    is written to ``folder`` with new UIDs (pydicom's files reuse UIDs)."""
    source = Path(pydicom.data.__file__).parent / "test_files"
    seen: set[str] = set()
    for path in sorted(source.glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            sop = str(ds.SOPInstanceUID)
        except Exception:  # not a file the server can hold either: it is sent as is
            yield path.name, path
            continue
        if sop not in seen:
            seen.add(sop)
            yield path.name, path
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        copy = folder / path.name
        try:
            ds.save_as(copy, enforce_file_format=True)
        except Exception:
            continue
        seen.add(ds.SOPInstanceUID)
        yield path.name, copy


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Server, dict[str, tuple[str, str, str]]]]:
    """A server holding every pydicom file it accepts: (server, name -> (study, series, sop))."""
    folder = tmp_path_factory.mktemp("corpus")
    stored: dict[str, tuple[str, str, str]] = {}
    with serve(tmp_path_factory.mktemp("corpus-archive")) as server:
        for name, path in corpus_files(folder):
            answer = stow(server.url, [path])
            if answer.status_code == 200:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    stored[name] = uids_of(path)
        assert len(stored) > 50
        yield server, stored


def test_every_multipart_200_of_the_corpus_ends_with_its_closing_boundary(corpus) -> None:
    server, stored = corpus
    accepts = [None, "*/*", DICOM_MULTIPART, f"{DICOM_MULTIPART}; transfer-syntax=*",
               f"{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}"]
    statuses: dict[int, int] = {}
    for study, series, sop in stored.values():
        base = f"{server.url}/studies/{study}/series/{series}"
        for accept in accepts:
            answer = get(f"{base}/instances/{sop}", accept)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 200:
                assert_whole(answer)
                for headers, _ in split_multipart(answer):
                    assert syntax_of(headers["content-type"]) not in (None, "*")
            else:  # decided before the first byte, saying why
                assert answer.status_code == 406, (answer.status_code, answer.text)
                assert "transfer-syntax" in answer.text
        meta = get(f"{base}/instances/{sop}/metadata", "application/dicom+json").json()[0]
        count = str(value(meta, "00280008") or "1").strip()
        frames = (int(count) if count.isdigit() else 1) if "7FE00010" in meta else 0
        for frame_list in ([f"1,{frames}"] if frames else []):
            for accept in ["multipart/related; type=\"application/octet-stream\"",
                           "multipart/related; type=\"application/octet-stream\"; "
                           "transfer-syntax=*", "*/*"]:
                answer = get(f"{base}/instances/{sop}/frames/{frame_list}", accept)
                if answer.status_code == 200:
                    assert_whole(answer)
                else:
                    assert answer.status_code == 406, (answer.status_code, answer.text)
    for study, series, _ in stored.values():
        for url in (f"{server.url}/studies/{study}",
                    f"{server.url}/studies/{study}/series/{series}"):
            answer = get(url, DICOM_MULTIPART)
            if answer.status_code == 200:
                assert_whole(answer)
            else:
                assert answer.status_code == 406, (answer.status_code, answer.text)
    assert statuses.get(200, 0) > 4 * len(stored)


def test_jpeg_lossy_is_406_or_sent_as_stored_never_cut_short(corpus) -> None:
    server, stored = corpus
    study, series, sop = stored["JPEG-lossy.dcm"]
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
    for target in (url, f"{server.url}/studies/{study}"):
        asked = get(target, f"{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}")
        assert asked.status_code == 406
        assert "1.2.840.10008.1.2.4.51" in asked.text or "decode" in asked.text
        # no syntax named: the lossy data as stored (PS3.18 8.7.3.5.2), each part saying so
        default = get(target, DICOM_MULTIPART)
        assert_whole(default)
        syntaxes = {syntax_of(h["content-type"]) for h, _ in split_multipart(default)}
        assert "1.2.840.10008.1.2.4.51" in syntaxes
    single = get(url, f"application/dicom; transfer-syntax={EXPLICIT_LE}")
    assert single.status_code == 406


@pytest.mark.parametrize("accept", [None, "*/*", DICOM_MULTIPART, "application/dicom"])
def test_default_transfer_syntax_is_explicit_vr_little_endian(corpus, accept) -> None:
    server, stored = corpus
    study, series, sop = stored["rtdose.dcm"]  # stored Implicit VR Little Endian
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
    answer = get(url, accept)
    assert answer.status_code == 200
    if answer.headers["Content-Type"].startswith("multipart/"):
        [(headers, body)] = split_multipart(answer)
        assert syntax_of(headers["content-type"]) == EXPLICIT_LE
    else:
        body = answer.content
        assert syntax_of(answer.headers["Content-Type"]) == EXPLICIT_LE
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE and ds.SOPInstanceUID == sop
    stored_bytes = get(url, f"{DICOM_MULTIPART}; transfer-syntax=*")
    [(headers, _)] = split_multipart(stored_bytes)
    assert syntax_of(headers["content-type"]) == "1.2.840.10008.1.2"


# --------------------------------------------------------------------------------------------
# QIDO
# --------------------------------------------------------------------------------------------


def qido(url: str, **params: str) -> list[dict]:
    """A QIDO search: 200 and the DICOM JSON results."""
    answer = get(url, "application/dicom+json", **params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_hierarchical_results_carry_the_parent_uids(loaded: Server, tutorial_files) -> None:
    study, series, sop = uids_of(tutorial_files[0])
    for found in qido(f"{loaded.url}/studies/{study}/series"):
        assert value(found, "0020000D") == study
    [found] = qido(f"{loaded.url}/studies/{study}/series/{series}/instances",
                   SOPInstanceUID=sop)
    assert value(found, "0020000D") == study and value(found, "0020000E") == series
    for found in qido(f"{loaded.url}/studies/{study}/instances"):
        assert value(found, "0020000D") == study and value(found, "0020000E")


def test_modalities_in_study_at_every_level(loaded: Server, pydicom_files) -> None:
    study, series, sop = uids_of(pydicom_files["native_multiframe"])  # RTDOSE
    found = qido(f"{loaded.url}/instances", ModalitiesInStudy="RTDOSE")
    assert sop in {value(f, "00080018") for f in found}
    assert all(value(f, "00080060") in (None, "RTDOSE") or True for f in found)
    found = qido(f"{loaded.url}/series", ModalitiesInStudy="RTDOSE,XX")
    assert series in {value(f, "0020000E") for f in found}
    assert qido(f"{loaded.url}/instances", ModalitiesInStudy="NOSUCH") == []
    found = qido(f"{loaded.url}/studies/{study}/instances", ModalitiesInStudy="RT*")
    assert [value(f, "00080018") for f in found] == [sop]


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[Dataset]]]:
    """A server holding five studies at known date-times, with sequences to match inside."""
    stamps = [("20200101", "090000"), ("20200101", "170000"), ("20200115", "030000"),
              ("20200131", "190000"), ("20200201", "120000")]
    sets = []
    for number, (date, time) in enumerate(stamps, start=1):
        ds = make_dataset(number=number, patient_id=f"DT{number}")
        ds.StudyDate, ds.StudyTime = date, time
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.99.{number}"
        ds.ReferencedStudySequence = [ref]
        request = Dataset()
        request.ScheduledProcedureStepID = f"SPS-{number}"
        request.RequestedProcedureID = "RP-7" if number % 2 else "RP-8"
        ds.RequestAttributesSequence = [request]
        sets.append(ds)
    with serve(tmp_path_factory.mktemp("dated")) as server:
        answer = stow(server.url, [to_bytes(ds) for ds in sets])
        assert answer.status_code == 200, answer.text
        yield server, sets


def patients(found: list[dict]) -> list[str]:
    """The Patient IDs of QIDO results, sorted."""
    return sorted(value(f, "00100020") for f in found)


def test_combined_date_time_ranges(dated) -> None:
    server, _ = dated
    url = f"{server.url}/studies"
    # from 1 January 10:00 to 31 January 18:00, not 10:00-18:00 on each day
    assert patients(qido(url, StudyDate="20200101-20200131", StudyTime="1000-1800")) == \
        ["DT2", "DT3"]
    assert patients(qido(url, StudyDate="20200101-", StudyTime="1000-")) == \
        ["DT2", "DT3", "DT4", "DT5"]
    assert patients(qido(url, StudyDate="-20200131", StudyTime="-1800")) == \
        ["DT1", "DT2", "DT3"]
    # a single date with a time range: each matched on its own, as before
    assert patients(qido(url, StudyDate="20200101", StudyTime="1000-1800")) == ["DT2"]
    found = qido(f"{server.url}/instances", StudyDate="20200101-20200131",
                 StudyTime="1000-1800")
    assert patients(found) == ["DT2", "DT3"]
    bad = get(url, "application/dicom+json", StudyDate="2020x-", StudyTime="10-")
    assert bad.status_code == 400 and "StudyDate" in bad.text


def test_matching_inside_sequences(dated) -> None:
    server, _ = dated
    for level in ("studies", "series", "instances"):
        url = f"{server.url}/{level}"
        found = qido(url, **{"ReferencedStudySequence.ReferencedSOPInstanceUID":
                             "1.2.826.0.1.3680043.99.3"})
        assert patients(found) == ["DT3"]
        assert patients(qido(url, **{"RequestAttributesSequence.ScheduledProcedureStepID":
                                     "SPS-4"})) == ["DT4"]
    url = f"{server.url}/instances"
    assert patients(qido(url, **{"RequestAttributesSequence.RequestedProcedureID": "RP-8"})) \
        == ["DT2", "DT4"]
    assert patients(qido(url, **{"00400275.00401001": "RP-7"})) == ["DT1", "DT3", "DT5"]
    assert patients(qido(url, **{"RequestAttributesSequence.ScheduledProcedureStepID":
                                 "SPS-*"})) == ["DT1", "DT2", "DT3", "DT4", "DT5"]
    found = qido(url, **{"ReferencedStudySequence.ReferencedSOPInstanceUID":
                         "1.2.826.0.1.3680043.99.1,1.2.826.0.1.3680043.99.5"})
    assert patients(found) == ["DT1", "DT5"]
    assert "00081110" in found[0]  # the matching key is returned
    assert qido(url, **{"RequestAttributesSequence.ScheduledProcedureStepID": "nope"}) == []
    for key, words in [("PatientID.PatientName", "not a sequence"),
                       ("ReferencedStudySequence.NoSuchKeyword", "NoSuchKeyword"),
                       ("ReferencedStudySequence.ReferencedSOPInstanceUID", "wildcards")]:
        answer = get(url, "application/dicom+json", **{key: "1.2*"})
        assert answer.status_code == 400 and words in answer.text, answer.text


# --------------------------------------------------------------------------------------------
# thumbnails and rendered studies / series
# --------------------------------------------------------------------------------------------


def image_of(answer: requests.Response, media_type: str) -> Image.Image:
    """The image of a 200 answer of ``media_type``."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(media_type)
    image = Image.open(io.BytesIO(answer.content))
    assert image.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[media_type]
    return image


def test_thumbnails_at_every_level(loaded: Server, tutorial_files, pydicom_files) -> None:
    study, series, sop = uids_of(tutorial_files[0])
    base = f"{loaded.url}/studies/{study}"
    urls = [f"{base}/thumbnail", f"{base}/series/{series}/thumbnail",
            f"{base}/series/{series}/instances/{sop}/thumbnail",
            f"{base}/series/{series}/instances/{sop}/frames/1/thumbnail"]
    for url in urls:
        image = image_of(get(url, "image/jpeg"), "image/jpeg")
        assert max(image.size) <= 128
        image = image_of(get(url, "image/png", viewport="64,64"), "image/png")
        assert max(image.size) <= 64
        image_of(get(url), "image/jpeg")
        assert get(url, "application/dicom").status_code == 406
    # a multi-frame instance: the middle frame of the frames listed
    m_study, m_series, m_sop = uids_of(pydicom_files["native_multiframe"])
    frames = f"{loaded.url}/studies/{m_study}/series/{m_series}/instances/{m_sop}/frames"
    image_of(get(f"{frames}/3,5,7/thumbnail", "image/png"), "image/png")
    assert get(f"{frames}/99/thumbnail", "image/png").status_code == 404
    w_study = uids_of(pydicom_files["no_pixels"])[0]
    answer = get(f"{loaded.url}/studies/{w_study}/thumbnail", "image/jpeg")
    assert answer.status_code == 404 and "pixel data" in answer.text
    assert get(f"{loaded.url}/studies/1.2.3.4/thumbnail").status_code == 404


def test_rendered_study_and_series(loaded: Server, tutorial_files) -> None:
    study, series, _ = uids_of(tutorial_files[0])
    studies = {uids_of(p)[0] for p in tutorial_files}
    count = sum(uids_of(p)[0] == study for p in tutorial_files)
    answer = get(f"{loaded.url}/studies/{study}/rendered",
                 'multipart/related; type="image/png"')
    assert_whole(answer)
    parts = split_multipart(answer)
    assert len(parts) == count and len(studies) >= 1
    for headers, body in parts:
        assert headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(body)).format == "PNG"
    answer = get(f"{loaded.url}/studies/{study}/series/{series}/rendered", viewport="32,32")
    assert_whole(answer)
    for headers, body in split_multipart(answer):
        assert headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(body)).size) <= 32
    refused = get(f"{loaded.url}/studies/{study}/rendered", "image/jpeg")
    assert refused.status_code == 406 and "multipart/related" in refused.text


# --------------------------------------------------------------------------------------------
# CORS wired through serve() and the command line
# --------------------------------------------------------------------------------------------


def test_cors_through_serve(tmp_path: Path) -> None:
    origin = "http://localhost:3000"
    with serve(tmp_path / "a", cors=[origin + "/"]) as server:
        assert server.cors_origins == (origin,)
        answer = requests.get(f"{server.url}/studies", headers={"Origin": origin}, timeout=30)
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        preflight = requests.options(f"{server.url}/studies", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept"})
        assert preflight.status_code == 204
        refused = requests.options(f"{server.url}/studies", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert refused.status_code == 403
    with serve(tmp_path / "b", cors=[origin], token="s3cret") as server:
        preflight = requests.options(f"{server.url}/studies", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept"})
        assert preflight.status_code == 204
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"]
        denied = requests.get(f"{server.url}/studies", headers={"Origin": origin}, timeout=30)
        assert denied.status_code == 401
        assert denied.headers["Access-Control-Allow-Origin"] == origin
    with serve(tmp_path / "c") as server:  # off by default
        answer = requests.get(f"{server.url}/studies", headers={"Origin": origin}, timeout=30)
        assert "Access-Control-Allow-Origin" not in answer.headers
    with pytest.raises(ValueError, match="scheme://host"):
        serve(tmp_path / "d", cors=["*"])


def test_serve_cors_option_is_repeatable() -> None:
    args = build_parser().parse_args(["serve", "--data", "x", "--cors", "http://a:1",
                                      "--cors", "https://b.example"])
    assert args.cors == ["http://a:1", "https://b.example"]
    assert build_parser().parse_args(["serve", "--data", "x"]).cors == []
