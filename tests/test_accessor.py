"""df.dicom: follow-up calls from the DataFrames a real Client returns (embedded server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest

import dicomframes
from dicomframes.convert.rows import row_to_filters
from dicomframes.samples import write_multiframe_study
from dicomframes.standard.uids import new_uid

STUDY = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
SERIES_1 = "1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
SERIES_2 = "1.2.826.0.1.3680043.8.498.77033797676425927098669402985243398207"


@pytest.fixture(scope="module")
def client(embedded, tutorial_files):
    client = dicomframes.connect(embedded.url)
    client.store([str(p) for p in tutorial_files])
    return client


def test_studies_series_instances_chain(client):
    studies = client.search_studies(StudyInstanceUID=STUDY)
    assert studies["StudyInstanceUID"].tolist() == [STUDY]
    series = studies.dicom.series()
    assert sorted(series["SeriesInstanceUID"]) == sorted([SERIES_1, SERIES_2])
    instances = series.dicom.instances()
    assert len(instances) == 3
    assert set(instances["SeriesInstanceUID"]) == {SERIES_1, SERIES_2}
    # back up: the studies of these instances, one row per study
    again = instances.dicom.studies()
    assert again["StudyInstanceUID"].tolist() == [STUDY]
    assert again.dicom.client is client


def test_metadata_keeps_the_row_order_and_types(client):
    instances = client.search_instances(study=STUDY).sort_values("SOPInstanceUID")
    meta = instances.dicom.metadata()
    assert meta["SOPInstanceUID"].tolist() == instances["SOPInstanceUID"].tolist()
    assert meta["Rows"].dtype == "Int64" and set(meta["Rows"]) == {979}
    assert (meta["PatientName"] == "Anony Mous").all()
    # a subset of rows: only those instances
    one = instances.iloc[[1]].dicom.metadata(split_multivalued=True)
    assert one["SOPInstanceUID"].tolist() == [instances["SOPInstanceUID"].iloc[1]]
    assert one.loc[0, "ImageType1"] == "SECONDARY"
    # series rows: every instance of those series
    series = client.search_series(study=STUDY)
    assert len(series.dicom.metadata()) == 3


def test_frames_and_retrieve_per_row(client):
    instances = client.search_instances(study=STUDY, series=SERIES_1)
    stacked = instances.dicom.frames()
    assert isinstance(stacked, np.ndarray) and stacked.shape == (2, 979, 985, 3)
    arrays = instances.dicom.frames(stack=False)
    assert len(arrays) == 2
    assert all(isinstance(a, np.ndarray) and a.shape == (1, 979, 985, 3) for a in arrays)
    datasets = instances.dicom.retrieve()
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(instances["SOPInstanceUID"])
    assert all(isinstance(ds, pydicom.Dataset) for ds in datasets)
    # no positions in these files: the stack follows InstanceNumber
    by_number = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))
    for got, ds in zip(stacked, by_number, strict=True):
        np.testing.assert_array_equal(got, ds.pixel_array)


def test_filters_from_a_row_find_it_again(client):
    row = client.search_studies(StudyInstanceUID=STUDY).iloc[0]
    filters = row_to_filters(row, keys=["PatientName", "StudyDate", "PatientID"])
    assert filters == {"PatientName": "Anony Mous", "StudyDate": "20200922", "PatientID": "ID1"}
    found = client.search_studies(**filters)
    assert STUDY in set(found["StudyInstanceUID"])


def test_delete_rows(client, tmp_path):
    study = new_uid()
    paths = write_multiframe_study(tmp_path, frames=2, rows=8, cols=8)
    for path in paths:  # a study of its own, so the other tests keep theirs
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.save_as(path)
    client.store([str(p) for p in paths])
    instances = client.search_instances(study=study)
    assert len(instances) == len(paths)
    instances.dicom.delete()
    assert len(client.search_instances(study=study)) == 0
    # the empty answer still has the instance-level columns, and its client
    empty = client.search_instances(study=study)
    assert {"SOPInstanceUID", "SeriesInstanceUID"} <= set(empty.columns)
    assert empty.dicom.instances().empty


def test_empty_selection_gives_an_empty_frame(client):
    studies = client.search_studies(StudyInstanceUID=STUDY)
    nothing = studies[studies["StudyInstanceUID"] == "1.2.3"]
    series = nothing.dicom.series()
    assert isinstance(series, pd.DataFrame) and series.empty
    assert "SeriesInstanceUID" in series.columns
