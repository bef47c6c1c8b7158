"""The third-party client matrix: the loaded servers every client test runs against, the
pydicom corpus and the checks shared by the clients.

Each client test module drives one client (Python ``dicomweb-client``, ``dicomtrolley``, the
npm ``dicomweb-client`` under Node.js) against ``target``: the embedded server and a real
Orthanc, both loaded with the tutorial's three files and the pydicom corpus. The corpus is every
``*.dcm`` file bundled with pydicom (the files ``pydicom.data.get_testdata_files("*.dcm")``
finds locally; that function would also try to download pydicom-data files, so the folder is
listed directly), each stored as is, except that a file whose SOP Instance UID another corpus
file already holds is stored as a copy with new UIDs (pydicom's files reuse UIDs: the MR_small
and rtdose variants, JPEG-lossy.dcm and JPGExtended.dcm...). Files a server refuses are left
out of that server's matrix (recorded in ``Target.refused``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from support import TUTORIAL_DATA, TUTORIAL_NAMES, require

from dicomframes.standard.multipart import encode, new_boundary, related_content_type
from dicomframes.standard.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    LOSSY_SYNTAXES,
)

JS = Path(__file__).resolve().parent / "js"

# How each server says "cannot send that in the transfer syntax asked for": PS3.18 406; Orthanc
# answers 500 when its transcoder fails (README: tested clients and servers).
CANNOT_TRANSCODE = {"embedded": {406}, "orthanc": {406, 500}}


def servers() -> list[str]:
    """``target`` parameters: the embedded server and Orthanc."""
    return ["embedded", "orthanc"]


# ---------------------------------------------------------------------------------------------
# The corpus and the loaded servers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One instance a server holds: its file, UIDs and stored transfer syntax."""

    name: str
    path: Path
    study: str
    series: str
    sop: str
    syntax: str
    has_pixels: bool


@dataclass
class Target:
    """A loaded DICOMweb server of the matrix: ``kind`` ("embedded"/"orthanc"), ``url`` (the
    DICOMweb root), ``stored`` (what it accepted) and ``refused`` (file name -> status)."""

    kind: str
    url: str
    stored: list[Stored] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    undecodable: frozenset[str] = frozenset()

    def by_name(self, name: str) -> Stored:
        """The stored instance of the corpus file (or tutorial file) ``name``."""
        return next(item for item in self.stored if item.name == name)

    def in_series(self, series: str) -> list[Stored]:
        """The stored instances of one series."""
        return [item for item in self.stored if item.series == series]

    def in_study(self, study: str) -> list[Stored]:
        """The stored instances of one study."""
        return [item for item in self.stored if item.study == study]

    def studies(self) -> list[str]:
        """The Study Instance UIDs held, in order of first appearance."""
        return list(dict.fromkeys(item.study for item in self.stored))

    def series(self) -> list[tuple[str, str]]:
        """The (study, series) pairs held, in order of first appearance."""
        return list(dict.fromkeys((item.study, item.series) for item in self.stored))

    def touched_by(self, names: frozenset[str]) -> tuple[set[str], set[str], set[str]]:
        """The SOP, series and study UIDs of the instances named ``names``."""
        hit = [item for item in self.stored if item.name in names]
        return ({i.sop for i in hit}, {i.series for i in hit}, {i.study for i in hit})


def _corpus_files() -> list[Path]:
    return sorted(Path(pydicom.data.DATA_ROOT, "test_files").glob("*.dcm"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    """(name, file) for every pydicom test file; a file reusing an earlier file's SOP Instance
    UID is replaced by a copy with new UIDs (same transfer syntax)."""
    folder = tmp_path_factory.mktemp("client-corpus")
    seen: set[str] = set()
    out: list[tuple[str, Path]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in _corpus_files():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                sop = str(ds.get("SOPInstanceUID", ""))
            except Exception:  # unreadable: sent as is, the servers refuse it
                out.append((path.name, path))
                continue
            if not sop or sop not in seen:
                seen.add(sop)
                out.append((path.name, path))
                continue
            try:
                full = pydicom.dcmread(path)
                full.StudyInstanceUID = generate_uid()
                full.SeriesInstanceUID = generate_uid()
                full.SOPInstanceUID = generate_uid()
                full.file_meta.MediaStorageSOPInstanceUID = full.SOPInstanceUID
                copy = folder / path.name
                full.save_as(copy, enforce_file_format=True)
            except Exception:  # truncated files cannot be rewritten: sent as is
                copy = path
            out.append((path.name, copy))
    return out


def stow_one(url: str, path: Path, auth: object = None) -> requests.Response:
    """POST one file to ``url/studies`` (a plain STOW-RS request)."""
    boundary = new_boundary()
    body = b"".join(encode([({"Content-Type": "application/dicom"}, str(path))], boundary))
    return requests.post(f"{url}/studies", data=body, auth=auth, timeout=60, headers={
        "Content-Type": related_content_type(boundary, "application/dicom"),
        "Accept": "application/dicom+json"})


def _load(target: Target, files: list[tuple[str, Path]]) -> Target:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, path in files:
            answer = stow_one(target.url, path)
            if answer.status_code != 200:
                target.refused[name] = answer.status_code
                continue
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if not decodable(path):
                target.undecodable |= {name}
            target.stored.append(Stored(
                name, path, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                str(ds.SOPInstanceUID), syntax_of(ds),
                "PixelData" in pydicom.dcmread(path, force=True)))
    return target


def decodable(path: Path) -> bool:
    """Whether pydicom and the installed plug-ins decode the file's pixel data (files without
    pixel data count as decodable): what the embedded server's transcoding relies on."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" in ds:
            ds.pixel_array  # noqa: B018 - decoding is the test
    except Exception:
        return False
    return True


def syntax_of(ds: Dataset) -> str:
    """The transfer syntax of a file read with pydicom: its meta information's, else the
    encoding pydicom found (files without meta information)."""
    declared = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if declared:
        return str(declared)
    implicit, little = ds.original_encoding
    if implicit:
        return "1.2.840.10008.1.2"
    return "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def _tutorial() -> list[tuple[str, Path]]:
    return [(name, TUTORIAL_DATA / name) for name in TUTORIAL_NAMES]


@pytest.fixture(scope="session")
def matrix_embedded(tmp_path_factory: pytest.TempPathFactory,
                    corpus: list[tuple[str, Path]]) -> Iterator[Target]:
    """The embedded server loaded with the tutorial files and the corpus (read-only use)."""
    from dicomframes.server import serve

    with serve(tmp_path_factory.mktemp("matrix-embedded"), durable=False) as server:
        yield _load(Target("embedded", server.url), _tutorial() + corpus)


@pytest.fixture(scope="session")
def matrix_orthanc(tmp_path_factory: pytest.TempPathFactory,
                   matrix_embedded: Target) -> Iterator[Target]:
    """A private Orthanc (so that the session's shared one stays as other tests expect it)
    loaded with the files the embedded server accepted (Orthanc also takes files without
    File Meta Information and sends them back so, which no client can read as Part 10)."""
    from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

    require(orthanc_installed(), "Orthanc", "apt-get install orthanc orthanc-dicomweb")
    with start_orthanc(tmp_path_factory.mktemp("matrix-orthanc")) as server:
        files = [(item.name, item.path) for item in matrix_embedded.stored]
        yield _load(Target("orthanc", server.dicomweb_url), files)


@pytest.fixture(scope="session")
def scratch_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DICOMweb root of a second private Orthanc for store tests (new UIDs each time)."""
    from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

    require(orthanc_installed(), "Orthanc", "apt-get install orthanc orthanc-dicomweb")
    with start_orthanc(tmp_path_factory.mktemp("scratch-orthanc")) as server:
        yield server.dicomweb_url


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Target:
    """The loaded server named by the test's parameter ("embedded" or "orthanc")."""
    return request.getfixturevalue(f"matrix_{request.param}")


@pytest.fixture
def scratch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """An empty server of the kind named by the parameter, for store and delete tests."""
    if request.param == "embedded":
        from dicomframes.server import serve

        with serve(tmp_path / "archive", durable=False) as server:
            yield Target("embedded", server.url)
        return
    yield Target("orthanc", request.getfixturevalue("scratch_orthanc"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test using ``target`` or ``scratch`` against both servers unless the test
    parametrizes it itself (with :func:`servers`)."""
    for name in ("target", "scratch"):
        if name in metafunc.fixturenames and not any(
                name in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
            metafunc.parametrize(name, ["embedded", "orthanc"], indirect=True)


# ---------------------------------------------------------------------------------------------
# Checks shared by the clients
# ---------------------------------------------------------------------------------------------


def read_part(data: bytes) -> Dataset:
    """A retrieved Part-10 part as a dataset (pixel data included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def original(item: Stored) -> Dataset:
    """The dataset that was stored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(item.path, force=True)


def check_parts(target: Target, expected: list[Stored], parts: list[Dataset],
                any_syntax: bool) -> list[str]:
    """Problems with the datasets retrieved for ``expected``: every instance exactly once;
    with ``any_syntax`` (``transfer-syntax=*``) as stored, pixel data unchanged; else in
    Explicit VR Little Endian, or (lossy stored data, PS3.18 allows it) as stored."""
    problems = []
    got = sorted(str(ds.SOPInstanceUID) for ds in parts)
    want = sorted(item.sop for item in expected)
    # Orthanc leaves out of a 200 answer the instances it cannot transcode (README).
    partial = target.kind == "orthanc" and not any_syntax and set(got) <= set(want)
    if got != want and not partial:
        return [f"instances {got} != {want}"]
    by_sop = {item.sop: item for item in expected}
    for ds in parts:
        item = by_sop[str(ds.SOPInstanceUID)]
        syntax = str(ds.file_meta.TransferSyntaxUID)
        stored = item.syntax
        if target.kind == "embedded" and stored == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            stored = ExplicitVRLittleEndian  # the embedded server inflates once, at STOW
        if any_syntax:
            if syntax != stored:
                problems.append(f"{item.name}: {syntax} instead of the stored {stored}")
            elif item.has_pixels and \
                    ds.PixelData != original(item).PixelData:
                problems.append(f"{item.name}: pixel data changed")
        elif syntax != ExplicitVRLittleEndian and not (
                syntax == item.syntax and item.syntax in LOSSY_SYNTAXES):
            problems.append(f"{item.name}: {syntax} ({UID(syntax).name}) by default")
    return problems


# Frames Orthanc cannot send (README): Big Endian and Deflated files (500), native YBR_FULL_422
# (400).
ORTHANC_NO_FRAMES_SYNTAXES = frozenset({EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN})
ORTHANC_NO_FRAMES_NAMES = frozenset({"SC_ybr_full_422_uncompressed.dcm"})


def frames_refused(target: Target, item: Stored, status: int | None) -> bool:
    """Whether a failed frames request is an expected one: a file whose pixel data cannot be
    decoded (MR_truncated.dcm: cut short) gets a 4xx/5xx; Orthanc's documented gaps."""
    if item.name in target.undecodable and status in (400, 404, 406, 410, 500):
        return True
    return target.kind == "orthanc" and (item.syntax in ORTHANC_NO_FRAMES_SYNTAXES or
                                         item.name in ORTHANC_NO_FRAMES_NAMES)


def levels(target: Target, exclude: frozenset[str] = frozenset()) -> Iterator[
        tuple[str, tuple[str, ...], list[Stored]]]:
    """Every retrieve of the matrix: ("instance"|"series"|"study", UIDs, expected instances),
    leaving out the resources that hold a file named in ``exclude``."""
    sops, series_hit, studies_hit = target.touched_by(exclude)
    for item in target.stored:
        if item.sop not in sops:
            yield "instance", (item.study, item.series, item.sop), [item]
    for study, series in target.series():
        if series not in series_hit:
            yield "series", (study, series), target.in_series(series)
    for study in target.studies():
        if study not in studies_hit:
            yield "study", (study,), target.in_study(study)


def value(entry: dict, tag: str) -> object:
    """The first value of ``tag`` in a DICOM JSON object, or None."""
    values = entry.get(tag, {}).get("Value")
    return values[0] if values else None


def chosen_levels(target: Target, undecodable: bool) -> list[
        tuple[str, tuple[str, ...], list[Stored]]]:
    """The retrieves of :func:`levels` that hold a file pydicom cannot decode
    (``undecodable``), or the others."""
    if not undecodable:
        return list(levels(target, exclude=target.undecodable))
    kept = {uids for _, uids, _ in levels(target, exclude=target.undecodable)}
    return [entry for entry in levels(target) if entry[1] not in kept]


def frame_count(item: Stored) -> int:
    """Number of Frames of a stored image (1 when absent or unreadable, as in badVR.dcm)."""
    try:
        return max(1, int(original(item).get("NumberOfFrames", 1) or 1))
    except ValueError:
        return 1


def run_plan(url: str, calls: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    """Run ``calls`` with the npm client in one Node.js process; their results by id."""
    node = shutil.which("node")
    require(node is not None, "Node.js", "apt-get install nodejs npm")
    require((JS / "node_modules" / "dicomweb-client").is_dir(), "the npm dicomweb-client",
            "cd tests/clients/js && npm ci")
    (work / "plan.json").write_text(json.dumps({"url": url, "calls": calls}))
    done = subprocess.run([str(node), str(JS / "matrix.mjs"), str(work / "plan.json"),
                           str(work / "out")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, Any] = json.loads(done.stdout)
    return results
