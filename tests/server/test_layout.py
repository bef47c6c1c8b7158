"""The server's modules: the standard layer's rules in use, typed index rows, import rules."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

import dicomframes.server
from dicomframes.server.index import PreparedInstance, metadata_json, prepare_instance
from dicomframes.server.query import QueryError, parse_query
from dicomframes.server.storage import Stored, StoreFailure
from dicomframes.server.store_routes import StowRoutes
from dicomframes.standard.dicomjson import dataset_to_json
from dicomframes.standard.lut import first_number
from dicomframes.standard.paths import ResourcePath
from dicomframes.standard.pixellayout import locate_pixel_data
from dicomframes.standard.stow import ALREADY_EXISTS, INVALID
from dicomframes.standard.temporal import normalize_date

from .server_helpers import DICOM_JSON, instance_url, stow, uids_of

SERVER = Path(dicomframes.server.__file__).parent


def test_normalize_date_accepts_both_forms_and_refuses_non_dates() -> None:
    assert normalize_date("20240131") == "20240131"
    assert normalize_date(" 2024.01.31 ") == "20240131"
    assert normalize_date("09990101") == "09990101"
    for bad in ("2024013", "20241301", "20240230", "2024-01-31x", ""):
        with pytest.raises(ValueError):
            normalize_date(bad)


def test_date_ranges_take_the_old_form_and_refuse_impossible_dates() -> None:
    query = parse_query("study", [("StudyDate", "2024.01.01-20240131")])
    assert query.args == ["20240101", "20240131"]
    with pytest.raises(QueryError, match="is not a date"):
        parse_query("study", [("StudyDate", "20241345")])


def test_first_number_reads_multi_values() -> None:
    assert first_number("40\\400") == 40.0
    assert first_number(pydicom.multival.MultiValue(float, [1.5, 2])) == 1.5
    assert first_number("") is None
    assert first_number(None, 3.0) == 3.0


def test_prepare_instance_gives_a_typed_record() -> None:
    path = get_testdata_file("CT_small.dcm")
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        size = Path(path).stat().st_size
        layout = locate_pixel_data(fp, ds, size)
    resource = ResourcePath(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    p = prepare_instance(metadata_json(ds, resource), resource, ds.SOPClassUID, layout,
                         size)
    assert isinstance(p, PreparedInstance)
    assert (p.study, p.series, p.sop) == (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                          ds.SOPInstanceUID)
    assert p.columns["study"]["PatientName"] == str(ds.PatientName)
    assert p.columns["study"]["PatientName_fold"] == str(ds.PatientName).casefold()
    assert p.columns["study"]["PatientName_words"].startswith(" ")
    assert p.columns["series"]["Modality"] == "CT"
    metadata = json.loads(p.metadata)
    assert metadata["7FE00010"]["BulkDataURI"] == "/" + resource.child("bulkdata/7FE00010")


def _old_stow_answer(stored: list[Stored], failed: list[StoreFailure], study: str | None,
                     base: str) -> dict:
    """The STOW answer as the server built it before (pydicom data sets)."""
    ds = pydicom.Dataset()
    studies = {s.study for s in stored} | ({study} if study else set())
    if len(studies) == 1:
        ds.RetrieveURL = f"{base}/studies/{next(iter(studies))}"
    if failed:
        items = []
        for failure in failed:
            item = pydicom.Dataset()
            if failure.sop_class:
                item.ReferencedSOPClassUID = failure.sop_class
            if failure.sop_instance:
                item.ReferencedSOPInstanceUID = failure.sop_instance
            item.FailureReason = failure.reason
            items.append(item)
        ds.FailedSOPSequence = items
    if stored:
        items = []
        for s in stored:
            item = pydicom.Dataset()
            item.ReferencedSOPClassUID = s.sop_class
            item.ReferencedSOPInstanceUID = s.sop_instance
            item.RetrieveURL = f"{base}/studies/{s.study}/series/{s.series}/instances/" \
                f"{s.sop_instance}"
            items.append(item)
        ds.ReferencedSOPSequence = items
    return dataset_to_json(ds)


@pytest.mark.parametrize("case", ["stored", "mixed", "failed", "two_studies"])
def test_stow_answer_is_the_same_json_as_before(case: str) -> None:
    base = "http://127.0.0.1:8042/v1"
    stored = [Stored("1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2")]
    if case == "two_studies":
        stored.append(Stored("1.2.9", "1.2.9.4", "1.2.9.4.5", "1.2.840.10008.5.1.4.1.1.2"))
    failed = [StoreFailure(ALREADY_EXISTS, "already", "1.2.840.10008.5.1.4.1.1.4", "1.2.7"),
              StoreFailure(INVALID, "no uid")]
    if case == "stored":
        failed = []
    if case == "failed":
        stored = []
    response = StowRoutes._stow_response([*stored, *failed], None, base)
    assert json.loads(response.body) == _old_stow_answer(stored, failed, None, base)
    assert response.status_code == {"stored": 200, "failed": 409}.get(case, 202 if failed
                                                                      else 200)


def test_frame_lists_with_non_ascii_digits_are_400(loaded: dicomframes.server.Server,
                                                   pydicom_files: dict[str, Path]) -> None:
    url = instance_url(loaded.url, pydicom_files["explicit"])
    for frames, status in (("\u00b2", 400), ("0", 400), ("1,x", 400), ("2", 404)):
        answer = requests.get(f"{url}/frames/{frames}", timeout=30,
                              headers={"Accept": "multipart/related; type=\"application/"
                                                 "octet-stream\"; transfer-syntax=*"})
        assert answer.status_code == status, (frames, answer.text)


def test_stow_retrieve_urls_use_the_service_base(server: dicomframes.server.Server) -> None:
    path = get_testdata_file("CT_small.dcm")
    answer = stow(server.url + "/v2", [path], accept=DICOM_JSON)
    assert answer.status_code == 200, answer.text
    study, series, sop = uids_of(path)
    item = answer.json()["00081199"]["Value"][0]
    assert item["00081190"]["Value"] == [f"{server.url}/v2/studies/{study}/series/{series}/"
                                         f"instances/{sop}"]
    assert answer.json()["00081190"]["Value"] == [f"{server.url}/v2/studies/{study}"]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import in a file, function-local ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
    return found


def test_the_server_imports_only_the_standard_layer_errors_and_itself() -> None:
    for path in SERVER.glob("*.py"):
        for level, module in _imports(path):
            if level == 1 or (level == 0 and not module.startswith("dicomframes")):
                continue  # itself, or a third-party / standard library module
            name = module if level == 0 else "dicomframes." + module
            assert name == "dicomframes.errors" or name.startswith("dicomframes.standard"), \
                f"{path.name} imports {name}"


def test_no_server_module_is_over_600_lines() -> None:
    for path in SERVER.glob("*.py"):
        lines = len(io.StringIO(path.read_text()).readlines())
        assert lines <= 600, f"{path.name} has {lines} lines"
