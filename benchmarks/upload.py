"""Bulk upload (STOW-RS): dicomframes against dicomweb-client and one request per file.

    python benchmarks/upload.py                  # 500 instances + the 1 GB memory run
    python benchmarks/upload.py --quick          # 100 instances, no memory run
    python benchmarks/upload.py --memory-gb 0    # skip the memory run

500 instances of 512x512 uint16 (about 260 MB) are written to a temporary folder and stored,
from those files, on the embedded server (run as ``dicomframes serve`` in its own process) and
on Orthanc (:mod:`dicomframes.testing.orthanc`), each method starting from an empty server:

- ``dicomframes``: ``client.store(folder)`` (4 parallel requests, streamed from disk);
- ``dicomweb-client 1 request``: read every file with pydicom, then ``store_instances`` with
  all of them (what its documentation shows);
- ``dicomweb-client batches of 50``: the same in requests of 50 instances;
- ``requests per file``: one plain ``requests.post`` per file (a one-part multipart body).

Each method runs in a child process, so that its peak memory (RSS sampled every 5 ms, minus the
RSS after imports) is its own. Reading the files is part of every timing: it is part of the job.
Methods run in interleaved rounds (``--repeat``, default 3) and the fastest run of each counts,
which damps the noise of a shared machine.

The memory run writes about 1 GB (2,000 instances of 512x512 uint16) and records the peak RSS
increase of ``client.store`` while it uploads them to the embedded server (target: < 300 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from _servers import embedded_in_child

METHODS = ["dicomframes", "dicomweb-client 1 request", "dicomweb-client batches of 50",
           "requests per file"]


# --------------------------------------------------------------------------- data


def write_instances(folder: Path, count: int, rows: int = 512, cols: int = 512) -> int:
    """Write ``count`` uint16 instances (one study, one series) and return their total size."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16)
    total = 0
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = "Bench^Upload", "BENCH-UP"
        ds.StudyDate, ds.Modality = "20240101", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        path = folder / f"{i:05d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        total += path.stat().st_size
    return total


# --------------------------------------------------------------------------- servers


@contextmanager
def embedded_server(data: Path) -> Iterator[str]:
    """The embedded server on ``data`` in a child process; yields its URL."""
    with embedded_in_child(data) as (url, _):
        yield url


# --------------------------------------------------------------------------- one method


class PeakRSS:
    """Samples this process's RSS every few milliseconds in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def run_method(method: str, url: str, folder: Path, user: str | None,
               password: str | None, workers: int) -> dict[str, Any]:
    """Upload every file of ``folder`` with ``method``; time, peak RSS increase, count."""
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient

    # Import what each method uses before the clock starts (pandas alone takes ~0.5 s).
    from dicomframes import connect
    from dicomframes.standard import multipart

    auth = (user, password or "") if user else None
    files = sorted(folder.glob("*.dcm"))
    stored = 0
    with PeakRSS() as rss:
        started = time.perf_counter()
        if method == "dicomframes":
            client = connect(url, auth=auth)
            df = client.store(folder, workers=workers, progress=False)
            stored = int((df["status"] == "stored").sum())
        elif method.startswith("dicomweb-client"):
            session = requests.Session()
            session.auth = auth
            dwc = DICOMwebClient(url, session=session)
            size = len(files) if method.endswith("1 request") else 50
            for start in range(0, len(files), size):
                datasets = [pydicom.dcmread(p) for p in files[start:start + size]]
                answer = dwc.store_instances(datasets)
                stored += len(answer.get("ReferencedSOPSequence", []))
        elif method == "requests per file":
            session = requests.Session()
            session.auth = auth
            for path in files:
                boundary = multipart.new_boundary()
                body = b"".join(multipart.encode(
                    [({"Content-Type": "application/dicom"}, path.read_bytes())], boundary))
                response = session.post(
                    url + "/studies", data=body,
                    headers={"Content-Type": multipart.related_content_type(
                        boundary, "application/dicom"), "Accept": "application/dicom+json"})
                response.raise_for_status()
                stored += len(response.json().get("00081199", {}).get("Value", []))
        else:
            raise ValueError(f"unknown method {method!r}")
        seconds = time.perf_counter() - started
    return {"method": method, "seconds": seconds, "count": len(files), "stored": stored,
            "peak_rss_delta": rss.peak - rss.baseline, "peak_rss": rss.peak}


def measure(method: str, url: str, folder: Path, auth: tuple[str, str] | None,
            workers: int) -> dict[str, Any]:
    """Run :func:`run_method` in a child process and return its figures."""
    command = [sys.executable, __file__, "--child", method, "--url", url, "--folder",
               str(folder), "--workers", str(workers)]
    env = dict(os.environ)
    if auth:
        env["BENCH_USER"], env["BENCH_PASSWORD"] = auth
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def _row(target: str, result: dict[str, Any], ratio: float | None) -> str:
    rate = result["count"] / result["seconds"]
    shown = f"{ratio:6.2f}x" if ratio else "      -"
    return (f"{target:<9} {result['method']:<31} {rate:8.1f} {result['seconds']:8.2f} "
            f"{result['peak_rss_delta'] / 2**20:9.0f} {shown:>8}   "
            f"{result['stored']}/{result['count']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="instances (default 500)")
    parser.add_argument("--memory-gb", type=float, default=1.0,
                        help="size of the memory run in GB (0 skips it)")
    parser.add_argument("--workers", type=int, default=4, help="dicomframes parallel requests")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each method, the fastest is reported (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="100 instances, one run, no memory run")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_method(args.child, args.url, Path(args.folder),
                            os.environ.get("BENCH_USER"), os.environ.get("BENCH_PASSWORD"),
                            args.workers)
        print(json.dumps(result))
        return 0

    from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

    count = 100 if args.quick else args.count
    memory_gb = 0.0 if args.quick else args.memory_gb
    results: dict[str, dict[str, dict[str, Any]]] = {}
    repeat = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory(prefix="dicomframes-bench-upload-") as tmp:
        root = Path(tmp)
        print(f"writing {count} instances of 512x512 uint16 ...", flush=True)
        size = write_instances(root / "files", count)
        print(f"{count} files, {size / 1e6:.0f} MB; {args.workers} dicomframes workers; "
              f"{os.cpu_count()} CPUs", flush=True)
        header = (f"{'server':<9} {'method':<31} {'inst/s':>8} {'seconds':>8} "
                  f"{'peak MB':>9} {'ratio':>8}   stored")
        print("\n" + header + "\n" + "-" * len(header))
        targets = ["embedded"] + (["orthanc"] if orthanc_installed() else [])
        runs = 0
        for _ in range(repeat):  # interleaved, so that a busy moment hits every method
            for target in targets:
                for method in METHODS:
                    runs += 1
                    work = root / f"server-{runs}"
                    if target == "embedded":
                        with embedded_server(work) as url:
                            result = measure(method, url, root / "files", None, args.workers)
                    else:
                        with start_orthanc(work) as orthanc:
                            result = measure(method, orthanc.dicomweb_url, root / "files",
                                             orthanc.auth, args.workers)
                    shutil.rmtree(work, ignore_errors=True)
                    best = results.setdefault(target, {}).get(method)
                    result["runs"] = [round(result["seconds"], 3)]
                    if best is not None:
                        result["runs"] = best["runs"] + result["runs"]
                        result["peak_rss_delta"] = max(result["peak_rss_delta"],
                                                       best["peak_rss_delta"])
                        if best["seconds"] < result["seconds"]:
                            result["seconds"] = best["seconds"]
                    results[target][method] = result
        for target in targets:
            rows = results[target]
            ours = rows["dicomframes"]["count"] / rows["dicomframes"]["seconds"]
            for method, result in rows.items():
                rate = result["count"] / result["seconds"]
                print(_row(target, result, None if method == "dicomframes" else ours / rate),
                      flush=True)
        if "orthanc" not in targets:
            print("orthanc   (not installed: apt-get install orthanc orthanc-dicomweb)")
        print(f"\nbest of {repeat} interleaved runs; ratio: dicomframes' instances/s divided by "
              "that method's (above 1: dicomframes is faster); peak MB: the largest increase of "
              "the client process's RSS while uploading")

        if memory_gb > 0:
            n = max(1, int(memory_gb * 1e9 / (512 * 512 * 2 + 1000)))
            print(f"\nmemory run: writing {n} instances (about {memory_gb:.1f} GB) ...",
                  flush=True)
            shutil.rmtree(root / "files", ignore_errors=True)
            big = write_instances(root / "big", n)
            with embedded_server(root / "archive-big") as url:
                result = measure("dicomframes", url, root / "big", None, args.workers)
            results["memory"] = {"dicomframes": result}
            print(f"dicomframes store of {n} files, {big / 1e9:.2f} GB to the embedded server: "
                  f"{result['count'] / result['seconds']:.0f} inst/s, "
                  f"{big / 1e6 / result['seconds']:.0f} MB/s, peak RSS increase "
                  f"{result['peak_rss_delta'] / 2**20:.0f} MB (peak RSS "
                  f"{result['peak_rss'] / 2**20:.0f} MB), {result['stored']}/{n} stored")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
