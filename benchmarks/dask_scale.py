"""``dicomframes.dask`` on a ``LocalCluster`` against one process, on the embedded server.

Two computations, each timed once in one process (Dask's synchronous scheduler: the same
partitions fetched one after another by this process) and once on a
``distributed.LocalCluster`` of ``--workers`` worker processes (one thread each) that fetch the
partitions themselves:

- a table: ``read_dicomweb(url)`` over an archive of ``--instances`` tiny instances (studies of
  4 series x 25 instances), reduced to instances per StudyDate year and Modality;
- an array: ``series_array`` of one series of ``--slices`` uint16 slices of ``--size`` x
  ``--size`` (512: a CT slice), reduced to the mean and maximum of every slice.

The cluster is started and warmed (the workers import dicomframes) before the clock starts;
the ratio is one-process seconds over cluster seconds (above 1: the cluster is faster). The
server is one process on the same machine, so on a 2-core machine it competes with the
workers for the cores: the ratio says what a cluster gains when the server is not the limit
only on bigger machines.

    python benchmarks/dask_scale.py                    # 10,000 instances, 200 slices of 512
    python benchmarks/dask_scale.py --instances 100000 --workers 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import embedded_in_child
from harvest import build


def add_volume(root: Path, slices: int, size: int) -> tuple[str, str]:
    """Store one CT series of ``slices`` slices of ``size`` x ``size`` in the archive; its
    UIDs."""
    from pydicom.uid import generate_uid

    from dicomframes.samples import ct_slice
    from dicomframes.server.storage import Archive

    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    archive = Archive(root, durable=False)
    try:
        temps = []
        for n in range(slices):
            pixels = rng.integers(0, 4000, size=(size, size), dtype=np.uint16)
            ds = ct_slice(pixels, study=study, series=series, number=n + 1, z=float(n),
                          patient=("Volume^Bench", "VOL1"), StudyDate="20200101")
            temp = archive.temp_path(".dcm")
            ds.save_as(temp, enforce_file_format=True)
            temps.append(temp)
        archive.store_files(temps)
    finally:
        archive.close()
    return study, series


def table_job(url: str) -> object:
    """Instances per StudyDate year and Modality (a Dask DataFrame computation)."""
    from dicomframes.dask import read_dicomweb

    ddf = read_dicomweb(url, rows_per_partition=2000)
    year = ddf["StudyDate"].dt.year
    return ddf.assign(year=year).groupby(["year", "Modality"]).size()


def array_job(url: str, study: str, series: str) -> object:
    """Mean and maximum of every slice of the series (a Dask array computation)."""
    import dask.array as da

    from dicomframes.dask import series_array

    volume = series_array(url, study, series)
    return da.stack([volume.mean(axis=(1, 2)), volume.max(axis=(1, 2)).astype("float64")])


def timed(compute: object) -> tuple[float, object]:
    """Seconds to compute a Dask collection with the scheduler in effect, and its value."""
    started = time.perf_counter()
    value = compute.compute()  # type: ignore[attr-defined]
    return time.perf_counter() - started, value


def main() -> None:
    """Build the archive, time both computations in one process and on the cluster."""
    import dask
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of a slice")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dask-bench-") as temp:
        root = Path(temp) / "archive"
        started = time.perf_counter()
        build(root, args.instances)
        study, series = add_volume(root, args.slices, args.size)
        print(f"archive of {args.instances} + {args.slices} instances built in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        with embedded_in_child(root) as (url, _pid):
            jobs = {"table": lambda: table_job(url),
                    "array": lambda: array_job(url, study, series)}
            one: dict[str, tuple[float, object]] = {}
            with dask.config.set(scheduler="sync"):
                for name, job in jobs.items():
                    job().compute()  # warm: the server's caches, this process's imports
                    one[name] = timed(job())
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              host="127.0.0.1", dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                for job in jobs.values():
                    job().compute()  # warm the workers (imports, connections)
                on_cluster = {name: timed(job()) for name, job in jobs.items()}
                client.close()
    rows = args.instances + args.slices
    for name in jobs:
        (alone, value), (clustered, other) = one[name], on_cluster[name]
        same = bool(np.allclose(np.asarray(value), np.asarray(other))) if name == "array" \
            else value.sort_index().equals(other.sort_index())  # type: ignore[attr-defined]
        what = f"{rows} rows" if name == "table" else \
            f"{args.slices} slices of {args.size} x {args.size}"
        print(f"{name:6s} ({what}): one process {alone:6.2f} s, LocalCluster of "
              f"{args.workers} workers {clustered:6.2f} s, ratio {alone / clustered:5.2f}x "
              f"(same result: {same})")


if __name__ == "__main__":
    main()
