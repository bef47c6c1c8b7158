"""The npm dicomweb-client (the OHIF viewer's DICOMweb client, pinned in js/package.json) under
Node.js against the loaded embedded server and Orthanc.

js/matrix.mjs runs a plan of client calls and writes what they returned; the plan of each
server runs once (one Node.js process) and the tests below check its results: searches at
every level, metadata at three levels, retrieve of every stored file at every level, frames,
rendered, thumbnails and store (the client has no delete)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from support import make_files

from .conftest import (
    CANNOT_TRANSCODE,
    Target,
    check_parts,
    chosen_levels,
    frame_count,
    frames_refused,
    levels,
    original,
    read_part,
    run_plan,
    value,
)

RENDERED = ("green-square.dcm", "CT_small.dcm", "examples_ybr_color.dcm")
LEVEL_METHOD = {"instance": "retrieveInstance", "series": "retrieveSeries",
                "study": "retrieveStudy"}
UID_KEYS = ("studyInstanceUID", "seriesInstanceUID", "sopInstanceUID")
ANY = [{"mediaType": "application/dicom", "transferSyntaxUID": "*"}]


def _uids(values: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(UID_KEYS, values, strict=False))


def _store_plan(store_dir: Path) -> list[dict[str, Any]]:
    """Store: new, duplicate, into its own study, another study's instance into it."""
    new = make_files(store_dir / "new", 2)
    other = make_files(store_dir / "other", 1)
    study = str(pydicom.dcmread(new[0], stop_before_pixels=True).StudyInstanceUID)
    return [
        {"id": "store-new", "method": "storeInstances", "datasets": [str(new[0])]},
        {"id": "store-duplicate", "method": "storeInstances", "datasets": [str(new[0])]},
        {"id": "store-same-study", "method": "storeInstances", "datasets": [str(new[1])],
         "options": {"studyInstanceUID": study}},
        {"id": "store-other-study", "method": "storeInstances", "datasets": [str(other[0])],
         "options": {"studyInstanceUID": study}},
        {"id": "stored-instances", "method": "searchForInstances",
         "options": {"studyInstanceUID": study}},
    ]


def _plan(target: Target) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = [
        {"id": "studies", "method": "searchForStudies"},
        {"id": "studies-rtdose", "method": "searchForStudies",
         "options": {"queryParams": {"ModalitiesInStudy": "RTDOSE"}}},
        {"id": "series", "method": "searchForSeries"},
        {"id": "instances", "method": "searchForInstances"},
    ]
    for n, study in enumerate(target.studies()):
        calls += [{"id": f"series-of-{n}", "method": "searchForSeries",
                   "options": _uids((study,))},
                  {"id": f"study-metadata-{n}", "method": "retrieveStudyMetadata",
                   "options": _uids((study,))}]
    for n, (study, series) in enumerate(target.series()):
        calls += [{"id": f"instances-of-{n}", "method": "searchForInstances",
                   "options": _uids((study, series))},
                  {"id": f"series-metadata-{n}", "method": "retrieveSeriesMetadata",
                   "options": _uids((study, series))}]
    for n, item in enumerate(target.stored):
        uids = _uids((item.study, item.series, item.sop))
        calls.append({"id": f"instance-metadata-{n}", "method": "retrieveInstanceMetadata",
                      "options": uids})
        if item.has_pixels:
            calls.append({"id": f"frames-{n}", "method": "retrieveInstanceFrames", "options": {
                **uids, "frameNumbers": sorted({1, frame_count(item)}),
                "mediaTypes": [{"mediaType": "application/octet-stream",
                                "transferSyntaxUID": "*"}]}})
        if item.name in RENDERED:
            calls += [{"id": f"rendered-{item.name}", "method": "retrieveInstanceRendered",
                       "options": {**uids, "mediaTypes": [{"mediaType": "image/png"}]}},
                      {"id": f"thumbnail-{item.name}", "method": "retrieveInstanceThumbnail",
                       "options": {**uids, "mediaTypes": [{"mediaType": "image/jpeg"}]}}]
    # retrieve with the client's only working Accept (multipart/related;
    # type="application/dicom"): with mediaTypes, 0.11.3 throws "Media type application/ is not
    # supported" before sending anything (README), so transfer-syntax=* cannot be asked for.
    for n, (level, uids_, _expected) in enumerate(levels(target)):
        calls.append({"id": f"retrieve-default-{n}", "method": LEVEL_METHOD[level],
                      "options": _uids(uids_)})
    first = target.stored[0]
    calls.append({"id": "retrieve-any", "method": "retrieveInstance", "options": {
        **_uids((first.study, first.series, first.sop)), "mediaTypes": ANY}})
    return calls


_RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture
def js(target: Target, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The results of the whole read-only plan against ``target`` (run once per server)."""
    if target.kind not in _RESULTS:
        work = tmp_path_factory.mktemp(f"js-{target.kind}")
        _RESULTS[target.kind] = run_plan(target.url, _plan(target), work)
    return _RESULTS[target.kind]


def ok(results: dict[str, Any], key: str) -> Any:
    """The value (JSON) or files (parts) of a call that must have succeeded."""
    result = results[key]
    assert result["ok"], (key, result)
    return result["value"] if result["kind"] == "json" else result.get("files")


def uid_set(entries: list[dict], tag: str) -> set[str]:
    """The values of a UID attribute over DICOM JSON objects."""
    return {str(value(entry, tag)) for entry in entries}


def test_search(target: Target, js: dict[str, Any]) -> None:
    assert uid_set(ok(js, "studies"), "0020000D") == set(target.studies())
    assert target.by_name("rtdose.dcm").study in uid_set(ok(js, "studies-rtdose"), "0020000D")
    assert uid_set(ok(js, "series"), "0020000E") == {s for _, s in target.series()}
    assert uid_set(ok(js, "instances"), "00080018") == {i.sop for i in target.stored}
    for n, study in enumerate(target.studies()):
        found = ok(js, f"series-of-{n}")
        assert uid_set(found, "0020000E") == {i.series for i in target.in_study(study)}
        assert uid_set(found, "0020000D") == {study}  # parent UID in hierarchical results
    for n, (study, series) in enumerate(target.series()):
        found = ok(js, f"instances-of-{n}")
        assert uid_set(found, "00080018") == {i.sop for i in target.in_series(series)}
        assert {(value(e, "0020000D"), value(e, "0020000E")) for e in found} == \
            {(study, series)}


def test_metadata_at_three_levels(target: Target, js: dict[str, Any]) -> None:
    for n, item in enumerate(target.stored):
        assert uid_set(ok(js, f"instance-metadata-{n}"), "00080018") == {item.sop}
    for n, (_study, series) in enumerate(target.series()):
        assert uid_set(ok(js, f"series-metadata-{n}"), "00080018") == \
            {i.sop for i in target.in_series(series)}
    for n, study in enumerate(target.studies()):
        assert uid_set(ok(js, f"study-metadata-{n}"), "00080018") == \
            {i.sop for i in target.in_study(study)}


def _retrieve_problems(target: Target, js: dict[str, Any], mode: str,
                       undecodable: bool | None) -> list[str]:
    problems = []
    chosen = {uids for _, uids, _ in (levels(target) if undecodable is None
                                      else chosen_levels(target, undecodable))}
    for n, (level, uids, expected) in enumerate(levels(target)):
        if uids not in chosen:
            continue
        result = js[f"retrieve-{mode}-{n}"]
        if not result["ok"]:
            if mode == "any" or result["status"] not in CANNOT_TRANSCODE[target.kind]:
                problems.append(f"{level} {uids}: {result}")
            continue
        if result["kind"] != "parts":
            problems.append(f"{level} {uids}: resolved with {result['kind']}")
            continue
        parts = [read_part(Path(f).read_bytes()) for f in result["files"]]
        problems += [f"{level} {p}" for p in check_parts(target, expected, parts, mode == "any")]
    return problems


def test_client_cannot_ask_for_any_syntax(target: Target, js: dict[str, Any]) -> None:
    """A limitation of the client, not of the servers: documented in the README table."""
    assert js["retrieve-any"] == {"ok": False, "status": None, "body": None, "message":
                                  "Media type application/ is not supported for retrieval "
                                  "of instance."}


def test_retrieve_every_file_by_default(target: Target, js: dict[str, Any]) -> None:
    problems = _retrieve_problems(target, js, "default", False)
    assert not problems, "\n".join(problems)


def test_retrieve_undecodable_by_default(target: Target, js: dict[str, Any]) -> None:
    """Files pydicom cannot decode: 406 or sent as stored; the promise never resolves with
    null or a part cut short."""
    problems = _retrieve_problems(target, js, "default", True)
    assert not problems, "\n".join(problems)


def test_frames(target: Target, js: dict[str, Any]) -> None:
    problems = []
    for n, item in enumerate(target.stored):
        if not item.has_pixels:
            continue
        result = js[f"frames-{n}"]
        wanted = len({1, frame_count(item)})
        if not result["ok"]:
            if not frames_refused(target, item, result["status"]):
                problems.append(f"{item.name}: {result}")
        elif len(result["files"]) != wanted or not all(
                Path(f).stat().st_size for f in result["files"]):
            problems.append(f"{item.name}: {len(result['files'])} frames")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", ["rendered", "thumbnail"])
def test_rendered_and_thumbnails(target: Target, js: dict[str, Any], kind: str) -> None:
    for name in RENDERED:
        result = js[f"{kind}-{name}"]
        if kind == "thumbnail" and target.kind == "orthanc":
            assert not result["ok"] and result["status"] in (400, 404), result  # README
            continue
        files = ok(js, f"{kind}-{name}")
        image = Image.open(io.BytesIO(Path(files[0]).read_bytes()))
        ds = original(target.by_name(name))
        if kind == "rendered":
            assert image.size == (ds.Columns, ds.Rows)
        else:
            assert image.format == "JPEG" and max(image.size) <= max(ds.Columns, ds.Rows)


def test_store(scratch: Target, tmp_path: Path) -> None:
    """New: stored; duplicate: already stored (embedded: 409 with reason 0xB00E; Orthanc stores
    it again); another study's instance posted to a study: 409."""
    js = run_plan(scratch.url, _store_plan(tmp_path / "files"), tmp_path)
    target = scratch
    assert js["store-new"]["ok"], js["store-new"]
    duplicate = js["store-duplicate"]
    if target.kind == "orthanc":
        assert duplicate["ok"], duplicate
    else:
        assert duplicate == {**duplicate, "ok": False, "status": 409}
    assert js["store-same-study"]["ok"], js["store-same-study"]
    assert js["store-other-study"] == {**js["store-other-study"], "ok": False, "status": 409}
    assert len(ok(js, "stored-instances")) == 2
