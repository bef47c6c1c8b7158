"""dicomtrolley (PyPI) against the loaded embedded server and Orthanc: hierarchical and
relational QIDO-RS searches, WADO-RS downloads of every stored file at the instance, series and
study levels, metadata, and ``Trolley.download`` (which searches for the series of a study and
then downloads series by series). dicomtrolley has no store, delete, frames or rendered calls.

dicomtrolley sends WADO-RS requests without an Accept header (requests' ``*/*``): PS3.18 then
asks for Explicit VR Little Endian (lossy data may come as stored)."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from support import IN_CI

from .conftest import (
    CANNOT_TRANSCODE,
    Target,
    check_parts,
    chosen_levels,
    read_part,
    servers,
)

if importlib.util.find_spec("dicomtrolley") is None:  # skip on a user's machine, fail in CI
    if IN_CI:
        raise RuntimeError("dicomtrolley is missing in CI: it belongs to the test extra")
    pytest.skip("dicomtrolley is not installed (pip install dicomtrolley)",
                allow_module_level=True)

from dicomtrolley.core import (
    InstanceReference,
    QueryLevels,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.qido_rs import HierarchicalQuery, QidoRS, RelationalQuery
from dicomtrolley.storage import StorageDir
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS, WadoRSMetaData


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A plain requests session, as dicomtrolley expects."""
    with requests.Session() as opened:
        yield opened


def trolley_of(target: Target, session: requests.Session, folder: Path) -> Trolley:
    """A Trolley with dicomtrolley's QIDO-RS searcher and WADO-RS downloader."""
    return Trolley(searcher=QidoRS(session, target.url), downloader=WadoRS(session, target.url),
                   storage=StorageDir(str(folder)))


@pytest.mark.parametrize("target", servers(), indirect=True)
def test_hierarchical_searches(target: Target, session: requests.Session) -> None:
    searcher = QidoRS(session, target.url)
    studies = searcher.find_studies(HierarchicalQuery(query_level=QueryLevels.STUDY))
    assert {s.uid for s in studies} == set(target.studies())
    for study in target.studies():
        found = searcher.find_studies(HierarchicalQuery(StudyInstanceUID=study,
                                                        query_level=QueryLevels.SERIES))
        assert [s.uid for s in found] == [study]  # the results carry their study's UID
        assert {s.uid for s in found[0].series} == {i.series for i in target.in_study(study)}
    for study, series in target.series():
        found = searcher.find_studies(HierarchicalQuery(
            StudyInstanceUID=study, SeriesInstanceUID=series, query_level=QueryLevels.INSTANCE))
        assert [s.uid for s in found] == [study]
        assert {i.uid for i in found[0][series].instances} == \
            {i.sop for i in target.in_series(series)}


def test_relational_searches(target: Target, session: requests.Session) -> None:
    searcher = QidoRS(session, target.url)
    studies = searcher.find_studies(RelationalQuery(query_level=QueryLevels.SERIES))
    assert {se.uid for st in studies for se in st.series} == {s for _, s in target.series()}
    rtdose = target.by_name("rtdose.dcm")
    found = searcher.find_studies(RelationalQuery(StudyInstanceUID=rtdose.study,
                                                  query_level=QueryLevels.INSTANCE))
    assert {i.uid for st in found for se in st.series for i in se.instances} == \
        {i.sop for i in target.in_study(rtdose.study)}
    by_id = searcher.find_study_by_id(rtdose.study, query_level=QueryLevels.INSTANCE)
    assert {i.uid for se in by_id.series for i in se.instances} == \
        {i.sop for i in target.in_study(rtdose.study)}


def _reference(level: str, uids: tuple[str, ...]) -> object:
    if level == "instance":
        return InstanceReference(study_uid=uids[0], series_uid=uids[1], instance_uid=uids[2])
    if level == "series":
        return SeriesReference(study_uid=uids[0], series_uid=uids[1])
    return StudyReference(study_uid=uids[0])


def _download_problems(target: Target, session: requests.Session,
                       undecodable: bool) -> list[str]:
    downloader = WadoRS(session, target.url, request_per_series=False)
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for level, uids, expected in chosen_levels(target, undecodable):
            try:
                parts = list(downloader.datasets([_reference(level, uids)]))
            except DICOMTrolleyError as error:
                status = str(error).split("failed (")[-1][:3]
                if not status.isdigit() or int(status) not in CANNOT_TRANSCODE[target.kind]:
                    problems.append(f"{level} {uids}: {str(error)[:300]}")
                continue
            except Exception as error:  # a body cut short, for instance
                problems.append(f"{level} {uids}: {type(error).__name__}: {error}")
                continue
            problems += [f"{level} {p}" for p in check_parts(target, expected, parts, False)]
    return problems


def test_download_every_file(target: Target, session: requests.Session) -> None:
    """WADO-RS with dicomtrolley's Accept (none: */*) at every level."""
    problems = _download_problems(target, session, False)
    assert not problems, "\n".join(problems)


def test_download_undecodable_files(target: Target, session: requests.Session) -> None:
    """Files pydicom cannot decode: 406 (or, lossy, as stored), never a 200 cut short."""
    problems = _download_problems(target, session, True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", servers(), indirect=True)
def test_metadata(target: Target, session: requests.Session) -> None:
    """dicomtrolley's metadata downloader at the series and instance levels."""
    reader = WadoRSMetaData(session, target.url)
    tutorial = target.by_name("red-triangle.dcm")
    series = list(reader.datasets([SeriesReference(study_uid=tutorial.study,
                                                   series_uid=tutorial.series)]))
    assert {str(ds.SOPInstanceUID) for ds in series} == \
        {i.sop for i in target.in_series(tutorial.series)}
    for item in target.stored:
        found = list(reader.datasets([InstanceReference(
            study_uid=item.study, series_uid=item.series, instance_uid=item.sop)]))
        assert [str(ds.SOPInstanceUID) for ds in found] == [item.sop]


@pytest.mark.parametrize("name", ["green-square.dcm", "rtdose.dcm", "CT_small.dcm"])
def test_trolley_download(target: Target, session: requests.Session, tmp_path: Path,
                          name: str) -> None:
    """Trolley.find_study then Trolley.download: every instance of the study on disk."""
    item = target.by_name(name)
    trolley = trolley_of(target, session, tmp_path)
    study = trolley.find_study(HierarchicalQuery(StudyInstanceUID=item.study,
                                                 query_level=QueryLevels.STUDY))
    trolley.download(study, output_dir=str(tmp_path))
    files = sorted(tmp_path.rglob("*"))
    datasets = [read_part(p.read_bytes()) for p in files if p.is_file()]
    expected = target.in_study(item.study)
    assert check_parts(target, expected, datasets, False) == []
    if name == "green-square.dcm":
        original = pydicom.dcmread(item.path)
        got = next(ds for ds in datasets if str(ds.SOPInstanceUID) == item.sop)
        assert (got.pixel_array == original.pixel_array).all()
