"""dicomframes.dask on a real Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes started with their own command lines on 127.0.0.1 run ``read_dicomweb``,
``read_metadata``, ``series_array`` and ``series_image`` against a remote-like archive (round
trip, page cap 200) whose bearer tokens rotate and expire during the reads.

The token travels to the workers as a picklable token function (TokenFile): each worker asks
it for fresh tokens. Everything is bounded (timeouts) and the processes are stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from support import make_instances  # noqa: E402
from volumes import ct_series  # noqa: E402

from dicomframes.client import TokenFile, connect  # noqa: E402
from dicomframes.dask import (  # noqa: E402
    RowsMissing,
    read_dicomweb,
    read_metadata,
    series_array,
    series_image,
)
from dicomframes.server import serve  # noqa: E402
from dicomframes.standard.uids import new_uid  # noqa: E402
from dicomframes.testing.remote import RemoteLike  # noqa: E402

STUDIES = 5
PER_STUDY = 40


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """5 studies of 40 instances, one study of 30 in one series (for the array), a 12-slice
    CT series with geometry (for the image)."""
    with serve(tmp_path_factory.mktemp("cluster-archive")) as server:
        items: list[bytes] = []
        for i in range(STUDIES):
            items += make_instances(PER_STUDY, study_date=f"2022010{i + 1}")
        study, series = new_uid(), new_uid()
        items += make_instances(30, study=study, series=series, study_date="20220201",
                                rows=8, columns=8)
        ct = ct_series(tmp_path_factory.mktemp("cluster-ct"), count=12)
        with connect(server.url, progress=False) as client:
            assert set(client.store(items, progress=False)["status"]) == {"stored"}
            assert set(client.store(ct.paths, progress=False)["status"]) == {"stored"}
        server.series = (study, series)  # type: ignore[attr-defined]
        server.ct = (ct.study, ct.series)  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def remote(archive: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteLike]:
    folder = tmp_path_factory.mktemp("cluster-token")
    with RemoteLike(archive.url, round_trip=0.02, bandwidth=50e6, token_file=folder / "token",
                    token_lifetime=1.0, rotate_every=0.25) as proxy:
        yield proxy


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process, below
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"})
    process.log_handle = handle  # type: ignore[attr-defined]
    return process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (no dashboards)."""
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    processes = [_start([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                         "--scheduler-file", str(scheduler_file), "--idle-timeout", "600"],
                        folder / "scheduler.log")]
    try:
        for _ in range(600):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            if processes[0].poll() is not None:
                pytest.fail(f"dask scheduler exited: {(folder / 'scheduler.log').read_text()}")
            time.sleep(0.1)
        for name in ("w1", "w2"):
            processes.append(_start(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                 str(scheduler_file), "--host", "127.0.0.1", "--nthreads", "2", "--no-nanny",
                 "--no-dashboard", "--name", name, "--death-timeout", "60",
                 "--local-directory", str(folder / name)], folder / f"{name}.log"))
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            yield client
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            process.log_handle.close()  # type: ignore[attr-defined]


def test_cluster_reads_with_rotating_tokens(archive: Any, remote: RemoteLike,
                                            cluster: Any) -> None:
    token = TokenFile(remote.token_file)  # type: ignore[arg-type]
    direct = connect(archive.url, progress=False)
    expected = direct.search_instances()
    refused_before = remote.refused
    with distributed.get_task_stream(cluster) as stream:
        frame = read_dicomweb(remote.url, token=token, rows_per_partition=50).compute()
        meta = read_metadata(remote.url, token=token, rows_per_partition=50).compute()
        study, series = archive.series
        total = series_array(remote.url, study, series, token=token).sum().compute()
        image = series_image(remote.url, *archive.ct, token=token, slices_per_chunk=4).compute()
    assert len(frame) == len(expected) and frame["SOPInstanceUID"].is_unique
    assert set(frame["SOPInstanceUID"]) == set(expected["SOPInstanceUID"])
    assert len(meta) == len(expected) and set(meta["SOPInstanceUID"]) == set(
        expected["SOPInstanceUID"])
    assert int(total) == int(direct.volume(study, series).sum())
    eager = direct.image(*archive.ct)
    np.testing.assert_array_equal(image.values, eager.values)
    assert image.attrs == eager.attrs
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2  # both worker processes fetched
    assert remote.refused > refused_before  # tokens expired during the reads, and were renewed
    current = remote.token_file.read_text().strip()  # type: ignore[union-attr]
    names = str([task["key"] for task in stream.data])
    logs = str(cluster.get_worker_logs()) + str(cluster.get_scheduler_logs())
    assert current not in names and current not in logs


def test_unpicklable_credential_fails_at_graph_build(remote: RemoteLike) -> None:
    class Held:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def get_token(self, *scopes: str) -> Any:
            raise AssertionError("never asked: the graph is not built")

    with pytest.raises(TypeError, match="cannot be pickled"):
        read_dicomweb(remote.url, token=Held())


def test_rows_deleted_after_planning_warn_with_counts(archive: Any, remote: RemoteLike,
                                                      cluster: Any) -> None:
    token = TokenFile(remote.token_file)  # type: ignore[arg-type]
    study, _ = archive.series
    doomed = new_uid()
    with connect(archive.url, progress=False) as direct:
        direct.store(make_instances(12, study=doomed, study_date="20220301"), progress=False)
    ddf = read_dicomweb(remote.url, token=token, rows_per_partition=1000,
                        StudyDate="20220201-20220331")
    with connect(archive.url, progress=False) as direct:
        direct.delete(doomed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = ddf.compute()
        for _ in range(200):  # the worker's warning reaches this client as an event
            if any(issubclass(w.category, RowsMissing) for w in caught):
                break
            time.sleep(0.05)
    assert len(frame) == 30 and set(frame["StudyInstanceUID"]) == {study}
    missing = [str(w.message) for w in caught if issubclass(w.category, RowsMissing)]
    assert missing and "30 of 42 rows" in missing[0] and "1 of 2 studies" in missing[0]
    assert np.all(frame["StudyInstanceUID"] == study)
