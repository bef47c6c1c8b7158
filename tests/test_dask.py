"""dicomframes.dask on a real LocalCluster (two worker processes) against the embedded server.

The server runs in this process on 127.0.0.1; the workers reach it over loopback with clients
they build themselves from the collections' Connection. One cluster serves the whole module.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from support import make_instances  # noqa: E402

import dicomframes  # noqa: E402
from dicomframes.client import connect  # noqa: E402
from dicomframes.dask import (  # noqa: E402
    Connection,
    read_dicomweb,
    read_metadata,
    series_array,
)
from dicomframes.samples import write_archive, write_multiframe_study  # noqa: E402
from dicomframes.server import serve  # noqa: E402
from dicomframes.standard.uids import new_uid  # noqa: E402

SECRET = "s3cr3t-TOKEN-do-not-print-7f9c"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An embedded server holding the sample archive (4 patients) and a 10-frame instance."""
    files_dir = tmp_path_factory.mktemp("dask-files")
    files = write_archive(files_dir / "archive", patients=4)
    files += write_multiframe_study(files_dir / "cine")
    with serve(tmp_path_factory.mktemp("dask-archive")) as server:
        with connect(server.url, progress=False) as client:
            outcome = client.store(files, progress=False)
            assert len(outcome) == len(files)
        yield server
    shutil.rmtree(files_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes, one thread each, on 127.0.0.1 (the dashboard on a free loopback
    port)."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as local, \
            distributed.Client(local) as client:
        yield client


@pytest.fixture
def client(archive: Any) -> Iterator[Any]:
    with connect(archive.url, progress=False) as c:
        yield c


def by_uid(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("SOPInstanceUID").reset_index(drop=True)


def assert_same_columns(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every column of ``expected`` is in ``got`` with its values and dtype; attributes whose
    dictionary VM allows several values are list columns in the unified schema (a single
    value is a one-item list), where a plain search gives a scalar column."""
    for column in expected.columns:
        assert column in got.columns, column
        mine, theirs = got[column], expected[column]
        if (any(isinstance(v, list) for v in mine)
                and not any(isinstance(v, list) for v in theirs)):
            theirs = theirs.map(lambda v: None if pd.isna(v) else [v])
            mine = mine.map(lambda v: None if v is None else list(v))
            assert mine.tolist() == theirs.tolist(), column
            continue
        assert mine.dtype == theirs.dtype, (column, mine.dtype, theirs.dtype)
        pd.testing.assert_series_equal(mine, theirs, check_names=False)


def worker_addresses(cluster: Any) -> set[str]:
    return set(cluster.scheduler_info()["workers"])


# ---- the settings object -------------------------------------------------------------------


def test_connection_hides_its_secret_and_survives_pickling() -> None:
    import pickle

    from dask.base import tokenize

    for conn in (Connection("http://127.0.0.1:1/dicom-web", token=SECRET),
                 Connection("http://127.0.0.1:1", auth=("user", SECRET)),
                 Connection(f"http://user:{SECRET}@127.0.0.1:1/")):
        assert SECRET not in repr(conn) and SECRET not in str(conn)
        assert SECRET not in conn.url
        copy = pickle.loads(pickle.dumps(conn))
        assert copy.identity() == conn.identity()
        assert repr(copy) == repr(conn)
    # The secret takes no part in the Dask token, but tells clients apart in a process.
    one = Connection("http://127.0.0.1:1", token=SECRET)
    two = Connection("http://127.0.0.1:1", token="another-token")
    assert tokenize(one) == tokenize(two)
    assert one.identity() != two.identity()
    assert repr(one) == "Connection('http://127.0.0.1:1', bearer token)"


# ---- DataFrames ----------------------------------------------------------------------------


def test_read_dicomweb_equals_search_instances(archive: Any, cluster: Any, client: Any) -> None:
    ddf = read_dicomweb(archive.url, rows_per_partition=40)
    assert ddf.npartitions >= 3
    assert all(str(key[0]).startswith("dicomweb-instances-")
               for key in ddf.__dask_keys__())
    with distributed.get_task_stream(cluster) as stream:
        got = by_uid(ddf.compute())
    expected = by_uid(client.search_instances())
    assert len(got) == len(expected) == got.SOPInstanceUID.nunique()
    assert_same_columns(got, expected)
    assert dict(ddf.dtypes) == dict(got.dtypes)
    # The partitions were fetched by the worker processes.
    ran = [t for t in stream.data if "dicomweb-instances" in str(t["key"])]
    assert len(ran) == ddf.npartitions
    assert {t["worker"] for t in ran} <= worker_addresses(cluster)


def test_read_dicomweb_filters_and_levels(archive: Any, cluster: Any, client: Any) -> None:
    ct = read_dicomweb(archive.url, Modality="CT").compute()
    assert set(ct.Modality) == {"CT"}
    assert len(ct) == len(client.search_instances(Modality="CT"))
    studies = read_dicomweb(archive.url, "studies").compute()
    assert sorted(studies.StudyInstanceUID) == sorted(client.search_studies().StudyInstanceUID)
    series = read_dicomweb(archive.url, "series").compute()
    assert len(series) == len(client.search_series())
    # A filter that some planned studies do not match is no sign of deleted studies
    import warnings

    from dicomframes.dask import RowsMissing

    with warnings.catch_warnings():
        warnings.simplefilter("error", RowsMissing)
        ct_series = read_dicomweb(archive.url, "series", Modality="CT").compute(scheduler="sync")
    assert len(ct_series) == len(client.search_series(Modality="CT"))
    assert ct_series.StudyInstanceUID.nunique() < len(client.search_studies())
    # A question answered on the cluster: instances per modality.
    counts = read_dicomweb(archive.url).groupby("Modality").size().compute()
    assert counts.sort_index().to_dict() == \
        client.search_instances().groupby("Modality").size().sort_index().to_dict()


def test_read_metadata_equals_client_metadata(archive: Any, cluster: Any, client: Any) -> None:
    ddf = read_metadata(archive.url, Modality="MR", rows_per_partition=20)
    assert ddf.npartitions >= 2
    got = by_uid(ddf.compute())
    studies = client.search_studies(ModalitiesInStudy="MR").StudyInstanceUID
    expected = by_uid(pd.concat([client.metadata(s) for s in studies], ignore_index=True))
    expected = expected[expected.Modality == "MR"].reset_index(drop=True)
    assert list(got.SOPInstanceUID) == list(expected.SOPInstanceUID)
    for column in ("Rows", "Columns", "SliceThickness", "StudyDate", "PatientName",
                   "ImagePositionPatient", "EchoTime"):
        if column in expected:
            assert column in got, column
            assert got[column].dtype == expected[column].dtype, column
            assert got[column].astype(str).tolist() == expected[column].astype(str).tolist()
    assert dict(ddf.dtypes) == dict(got.dtypes)


# ---- arrays --------------------------------------------------------------------------------


def test_series_array_reduces_like_numpy(archive: Any, cluster: Any, client: Any) -> None:
    row = client.search_series(Modality="CT").iloc[0]
    study, series = row.StudyInstanceUID, row.SeriesInstanceUID
    volume = client.volume(study, series)
    arr = series_array(archive.url, study, series)
    assert arr.shape == volume.shape and arr.dtype == volume.dtype
    assert arr.numblocks[0] == len(client.search_instances(study, series))
    assert float(arr.mean().compute()) == pytest.approx(float(volume.mean()), rel=1e-12)
    assert int(arr.max().compute()) == int(volume.max())
    np.testing.assert_array_equal(arr[2:9:3, 10:20, ::7].compute(), volume[2:9:3, 10:20, ::7])
    np.testing.assert_array_equal(arr[-1].compute(), volume[-1])


def test_series_array_multiframe_chunks(archive: Any, cluster: Any, client: Any) -> None:
    cine = client.search_instances(NumberOfFrames="10").iloc[0]
    study, series = cine.StudyInstanceUID, cine.SeriesInstanceUID
    arr = series_array(archive.url, study, series)
    assert arr.chunks[0] == (10,)
    volume = client.volume(study, series)
    np.testing.assert_array_equal(arr[3:8].compute(), volume[3:8])
    assert arr.sum(axis=(1, 2)).compute().tolist() == volume.sum(axis=(1, 2)).tolist()


# ---- credentials ---------------------------------------------------------------------------


def token_server_available() -> bool:
    return "token" in inspect.signature(serve).parameters


def test_credentials_reach_the_workers_unprinted(archive: Any, cluster: Any,
                                                 tmp_path: Path) -> None:
    if token_server_available():
        guarded = serve(tmp_path / "guarded", token=SECRET)  # type: ignore[call-arg]
        url = guarded.url
    else:  # the embedded server takes any token: what is checked is that none is printed
        guarded, url = None, archive.url
    try:
        study, series = new_uid(), new_uid()
        with connect(url, token=SECRET, progress=False) as c:
            c.store(make_instances(3, study=study, series=series), progress=False)
        with distributed.get_task_stream(cluster) as stream:
            ddf = read_dicomweb(url, token=SECRET, StudyInstanceUID=study)
            frame = ddf.compute()
            meta = read_metadata(url, token=SECRET, StudyInstanceUID=study)
            meta_frame = meta.compute()
            arr = series_array(url, study, series, token=SECRET)
            total = int(arr.sum().compute())
        assert len(frame) == len(meta_frame) == 3
        assert total == sum(int(np.sum(np.arange(16) + 100 * i)) for i in range(3))
        if guarded is not None:
            with pytest.raises(dicomframes.DICOMwebError):
                read_dicomweb(url, token="wrong-token").compute()
        # A task that fails on a worker (its series is gone) is logged there with its task.
        with connect(url, token=SECRET, progress=False) as c:
            c.delete(study)
        with pytest.raises(dicomframes.NotFound) as failure:
            arr.compute()
        assert SECRET not in str(failure.value)
        texts = [repr(ddf), str(ddf), repr(meta), repr(arr), str(ddf.expr),
                 str(ddf.dask), str(dict(ddf.dask)), str(list(ddf.dask.keys())),
                 str(meta.dask), str(dict(meta.dask)), str(dict(arr.dask)),
                 str(list(arr.dask.keys())), str([t["key"] for t in stream.data]),
                 str(cluster.get_worker_logs()), str(cluster.get_scheduler_logs()),
                 str(cluster.run_on_scheduler(
                     lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks]))]
        for text in texts:
            assert SECRET not in text
        logs = str(cluster.get_worker_logs())
        assert "Compute Failed" in logs or "NotFound" in logs
    finally:
        if guarded is not None:
            guarded.stop()
