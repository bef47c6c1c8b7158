"""The server driven by a third-party client, dicomweb-client: store, search, retrieve,
metadata, frames, bulk data, rendered and delete."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from .server_helpers import native_bytes, uids_of

dicomweb_client = pytest.importorskip("dicomweb_client")
from dicomweb_client.api import DICOMwebClient  # noqa: E402


@pytest.fixture
def client(server) -> DICOMwebClient:
    return DICOMwebClient(url=server.url + "/v1")


def test_store_search_retrieve_and_delete(client, tutorial_files, pydicom_files) -> None:
    datasets = [pydicom.dcmread(p) for p in tutorial_files]
    answer = client.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in answer
    study, series, sop = uids_of(tutorial_files[0])

    studies = client.search_for_studies(search_filters={"PatientName": "Anony*"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    assert studies[0]["00201208"]["Value"] == [3]
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "mous"})
    assert len(fuzzy) == 1
    series_found = client.search_for_series(study, search_filters={"Modality": "OT"})
    assert len(series_found) == 2
    instances = client.search_for_instances(study, series, fields=["PatientAge"])
    assert len(instances) == 2 and instances[0]["00101010"]["Value"] == ["024Y"]
    paged = client.search_for_instances(limit=1, offset=2)
    assert len(paged) == 1

    retrieved = client.retrieve_study(study)
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == \
        sorted(ds.SOPInstanceUID for ds in datasets)
    instance = client.retrieve_instance(study, series, sop)
    assert np.array_equal(instance.pixel_array, datasets[0].pixel_array)

    metadata = client.retrieve_instance_metadata(study, series, sop)
    assert metadata["00280010"]["Value"] == [979]
    series_metadata = client.retrieve_series_metadata(study, series)
    assert len(series_metadata) == 2
    study_metadata = client.retrieve_study_metadata(study)
    assert len(study_metadata) == 3
    bulk = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])
    assert bulk == [datasets[0].PixelData]

    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    size = 979 * 985 * 3  # the frame, without the pixel data's padding byte
    assert frames == [datasets[0].PixelData[:size]]
    native = client.retrieve_instance_frames(
        study, series, sop, frame_numbers=[1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert native == [native_bytes(datasets[0].pixel_array)]
    rendered = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    assert Image.open(io.BytesIO(rendered)).size == (985, 979)

    client.delete_instance(study, series, sop)
    assert len(client.search_for_instances(study)) == 2
    client.delete_series(study, series)
    assert len(client.search_for_instances(study)) == 1
    client.delete_study(study)
    assert client.search_for_studies() == []


def test_compressed_multiframe_frames(client, pydicom_files) -> None:
    path = pydicom_files["jpeg_baseline_multiframe"]
    ds = pydicom.dcmread(path)
    client.store_instances([ds])
    study, series, sop = uids_of(path)
    stored = list(generate_frames(ds.PixelData, number_of_frames=30))
    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[2, 30])
    assert frames == [stored[1], stored[29]]
    jpeg = client.retrieve_instance_frames(study, series, sop, frame_numbers=[5],
                                           media_types=("image/jpeg",))
    assert jpeg == [stored[4]]
    streamed = list(client.iter_instance_frames(study, series, sop, frame_numbers=[1, 2, 3]))
    assert streamed == stored[:3]
    native = client.retrieve_instance_frames(
        study, series, sop, frame_numbers=[7],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert native == [native_bytes(ds.pixel_array[6])]
