"""The client against a remote-like archive: what a round trip, a bandwidth cap and throttling
cost, and how much of it concurrency hides.

The embedded server runs in a child process, and ``dicomframes remote --upstream`` (the
remote-like proxy: ``--round-trip`` ms before each answer, ``--bandwidth`` MB/s each way, QIDO
pages capped at 200) in another, so that neither competes with the measuring client for this
process's interpreter lock. Sections (``--only`` picks some):

- ``harvest``: ``client.harvest`` of ``--instances`` tiny instances (studies of 4 series x 25)
  across the link, against a sequential per-study QIDO loop over the same link (target: 0.2x
  or less) and against the same harvest on loopback;
- ``volume``: ``client.volume`` of a ``--slices``-slice CT series of ``--size`` x ``--size``
  against a sequential per-instance fetch (``client.frames`` one instance after another;
  target 0.15x or less);
- ``transfer``: upload of ``--transfer`` CT instances (``client.store`` of their files) and
  download of the same selection (``df.dicom.download``): MB/s against the cap (target 70%);
- ``dask``: ``read_dicomweb(...).compute()`` on a LocalCluster of 1, 2 and 4 single-threaded
  workers across the link (target: 4 workers 2.5x one worker);
- ``throttled``: the harvest again with ``--throttle`` (5%) of the requests answered 429 with
  ``Retry-After: --retry-after`` seconds: every row once, time against the unthrottled harvest
  (target: 1.5x or less).

The defaults run in a few minutes on a loaded 2-core machine; the issue's sizes:

    python benchmarks/remote.py                                  # small
    python benchmarks/remote.py --instances 100000 --slices 300 --size 512 --transfer 500
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import embedded_in_child
from dask_scale import add_volume
from harvest import build

SECTIONS = ("harvest", "volume", "transfer", "dask", "throttled")


@contextmanager
def remote_like(upstream: str, args: argparse.Namespace, throttle: float = 0.0
                ) -> Iterator[str]:
    """``dicomframes remote --upstream`` in a child process; yields its URL."""
    command = [sys.executable, "-m", "dicomframes", "remote", "--upstream", upstream,
               "--port", "0", "--round-trip", str(args.round_trip), "--bandwidth",
               str(args.bandwidth), "--throttle", str(throttle), "--retry-after",
               str(args.retry_after)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if " at http://127.0.0.1:" not in line:
            raise RuntimeError(f"the remote-like proxy did not start (said {line!r})")
        yield line.split(" at ", 1)[1].split(": ", 1)[0]
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``work()`` and its value."""
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def line(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:44s} {seconds:8.2f} s  {note}", flush=True)


def per_study_loop(url: str) -> int:
    """The naive reading: list the studies, then their instances one study at a time."""
    import dicomframes

    with dicomframes.connect(url, progress=False) as client:
        rows = 0
        for study in client.search_studies()["StudyInstanceUID"]:
            rows += len(client.search_instances(study=study))
        return rows


def harvest_once(url: str, folder: Path) -> Any:
    import dicomframes

    shutil.rmtree(folder, ignore_errors=True)
    with dicomframes.connect(url, progress=False, retries=20) as client:
        return client.harvest(folder, progress=False)


def unique_rows(folder: Path) -> tuple[int, bool]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["SOPInstanceUID"]).to_pandas()
    return len(table), bool(table["SOPInstanceUID"].is_unique)


def section_harvest(direct: str, url: str, work: Path, args: argparse.Namespace) -> float:
    print(f"harvest of {args.instances} instances ({args.round_trip:g} ms round trip):")
    loop, rows = timed(lambda: per_study_loop(url))
    line("sequential per-study QIDO loop, remote", loop, f"{rows} rows")
    remote, summary = timed(lambda: harvest_once(url, work / "remote"))
    line("client.harvest, remote", remote,
         f"{summary.rows} rows, {summary.requests} requests, {summary.workers} in flight")
    local, local_summary = timed(lambda: harvest_once(direct, work / "local"))
    line("client.harvest, loopback", local, f"{local_summary.rows} rows, "
         f"{local_summary.workers} in flight")
    print(f"  ratio harvest/loop {remote / loop:.2f}x (target <= 0.2x), remote/loopback "
          f"{remote / local:.2f}x", flush=True)
    return remote


def section_volume(url: str, study: str, series: str, args: argparse.Namespace) -> None:
    import numpy as np

    import dicomframes
    from dicomframes.client.concurrency import workers_for

    print(f"volume of {args.slices} slices of {args.size} x {args.size}:")
    with dicomframes.connect(url, progress=False) as client:
        client.volume(study, series)  # the series metadata, cached by both ways below
        sops = client.search_instances(study=study, series=series)["SOPInstanceUID"]
        one, slices = timed(lambda: [client.frames(study, series, sop) for sop in sops])
        line("sequential per-instance frames", one)
        many, volume = timed(lambda: client.volume(study, series))
        workers = workers_for(client, 4, 16)
        line("client.volume", many, f"{workers} in flight")
    stacked = np.concatenate(slices)  # one (1, rows, columns) array per instance
    same = bool(np.array_equal(np.sort(stacked.sum(axis=(1, 2))),
                               np.sort(volume.sum(axis=(1, 2)))))
    print(f"  ratio volume/sequential {many / one:.2f}x (target <= 0.15x), same pixels: "
          f"{same}", flush=True)


def write_ct_files(folder: Path, count: int, size: int, patient: str) -> int:
    """``count`` CT slices of ``size`` x ``size`` as files; their total bytes."""
    import numpy as np
    from pydicom.uid import generate_uid

    from dicomframes.samples import ct_slice

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    study, series = generate_uid(), generate_uid()
    total = 0
    for n in range(count):
        pixels = rng.integers(0, 4000, size=(size, size), dtype=np.uint16)
        ds = ct_slice(pixels, study=study, series=series, number=n + 1, z=float(n),
                      patient=("Transfer^Bench", patient), StudyDate="20240101")
        path = folder / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def transfer_once(url: str, files: Path, target: Path, patient: str) -> tuple[float, float]:
    """Seconds to upload the files of ``files`` and to download them again into ``target``."""
    import dicomframes

    with dicomframes.connect(url, progress=False) as client:
        client.search_studies(limit=1)  # the round trip measured, as by any earlier call
        up, outcome = timed(lambda: client.store(files, progress=False))
        assert outcome.attrs["summary"]["stored"] == len(outcome), outcome.attrs
        series = client.search_series(PatientID=patient)
        down, table = timed(lambda: series.dicom.download(target, progress=False))
        assert bool(table["complete"].all()), table
    return up, down


def section_transfer(direct: str, url: str, work: Path, args: argparse.Namespace) -> None:
    size = write_ct_files(work / "up-remote", args.transfer, args.transfer_size, "XFER1")
    write_ct_files(work / "up-local", args.transfer, args.transfer_size, "XFER2")
    cap = args.bandwidth
    print(f"transfer of {args.transfer} instances of {args.transfer_size} x "
          f"{args.transfer_size} ({size / 1e6:.0f} MB, cap {cap:g} MB/s):")
    local_up, local_down = transfer_once(direct, work / "up-local", work / "down-local", "XFER2")
    up, down = transfer_once(url, work / "up-remote", work / "down-remote", "XFER1")
    for name, remote, local in (("upload (client.store)", up, local_up),
                                ("download (df.dicom.download)", down, local_down)):
        line(name + ", remote", remote, f"{size / 1e6 / remote:6.1f} MB/s = "
             f"{size / 1e6 / remote / cap:4.0%} of the cap (loopback, no cap: "
             f"{size / 1e6 / local:.1f} MB/s)")
    print("  target: >= 70% of the cap both ways", flush=True)


def warm_worker() -> None:
    import dicomframes.dask  # noqa: F401


def section_dask(url: str, args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    from dicomframes.dask import read_dicomweb

    print(f"read_dicomweb of {args.instances} instances on a LocalCluster across the link:")
    seconds = {}
    rows = max(100, args.instances // 16)  # enough partitions for every worker
    for workers in (1, 2, 4):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(warm_worker)  # imports done before the clock starts
            collection = read_dicomweb(url, rows_per_partition=rows)  # planned here
            seconds[workers], frame = timed(collection.compute)
        line(f"{workers} worker(s)", seconds[workers],
             f"{len(frame)} rows, {collection.npartitions} partitions (plan not timed)")
    print(f"  ratio 4 workers / 1 worker: {seconds[1] / seconds[4]:.2f}x faster (target >= "
          "2.5x)", flush=True)


def section_throttled(direct: str, work: Path, args: argparse.Namespace,
                      unthrottled: float | None) -> None:
    print(f"harvest with {args.throttle:.0%} of requests throttled (Retry-After "
          f"{args.retry_after:g} s):")
    if unthrottled is None:
        with remote_like(direct, args) as url:
            unthrottled, _ = timed(lambda: harvest_once(url, work / "plain"))
        line("client.harvest, no throttling", unthrottled)
    with remote_like(direct, args, throttle=args.throttle) as url:
        seconds, summary = timed(lambda: harvest_once(url, work / "throttled"))
    rows, unique = unique_rows(work / "throttled")
    line("client.harvest, throttled", seconds, f"{rows} rows, each once: {unique}, "
         f"{summary.throttled} requests throttled")
    print(f"  ratio throttled/unthrottled {seconds / unthrottled:.2f}x (target <= 1.5x)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of a slice")
    parser.add_argument("--transfer", type=int, default=100, help="instances up and down")
    parser.add_argument("--transfer-size", type=int, default=512,
                        help="rows and columns of the instances up and down")
    parser.add_argument("--round-trip", type=float, default=50.0, help="milliseconds")
    parser.add_argument("--bandwidth", type=float, default=50.0, help="MB/s")
    parser.add_argument("--throttle", type=float, default=0.05)
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="remote-bench-") as temp:
        root, work = Path(temp) / "archive", Path(temp) / "work"
        started = time.perf_counter()
        build(root, args.instances)
        study, series = add_volume(root, args.slices, args.size)
        print(f"archive of {args.instances} + {args.slices} instances built in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        with embedded_in_child(root) as (direct, _pid):
            per_study_loop(direct)  # warm the server's caches
            harvested = None
            with remote_like(direct, args) as url:
                if "harvest" in only:
                    harvested = section_harvest(direct, url, work, args)
                if "volume" in only:
                    section_volume(url, study, series, args)
                if "transfer" in only:
                    section_transfer(direct, url, work, args)
                if "dask" in only:
                    section_dask(url, args)
            if "throttled" in only:
                section_throttled(direct, work, args, harvested)


if __name__ == "__main__":
    main()
