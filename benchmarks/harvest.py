"""Harvest at archive size: ``client.harvest`` against ``search_instances()`` and against the
floor (a plain loop of per-study QIDO requests with ``json.loads``, no typing, nothing
written), on archives of tiny instances (studies of 4 series x 25 instances) served by the
embedded server in a child process; also ``harvest(pause_gc=True)``, to show what the
garbage collector costs. Each measurement runs in its own child process, which
reports its peak RSS; the server's caches are warmed by one unmeasured run of the floor.

    python benchmarks/harvest.py                  # 10,000 and 100,000 instances, median of 3
    python benchmarks/harvest.py --sizes 2000,10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import embedded_in_child

SERIES, INSTANCES = 4, 25
UID_LENGTH = 60


def uid(n: int, kind: int) -> bytes:
    """A fixed-length UID (so that a template file can be patched in place)."""
    text = f"1.2.826.0.1.3680043.9.7777.{kind}.{n}"
    return (text + "." + "1" * UID_LENGTH)[:UID_LENGTH].rstrip(".").ljust(UID_LENGTH, "1").encode()


def template() -> tuple[bytes, dict[str, bytes]]:
    """A tiny Part-10 instance with placeholder UIDs and date."""
    import io

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    marks = {k: (k * (UID_LENGTH // len(k) + 1))[:UID_LENGTH].encode()
             for k in ("9.8", "9.7", "9.6")}
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = marks["9.6"].decode()
    ds.StudyInstanceUID = marks["9.8"].decode()
    ds.SeriesInstanceUID = marks["9.7"].decode()
    ds.PatientName, ds.PatientID = "Bench^Mark", "BENCH"
    ds.StudyDate, ds.StudyTime = "19990909", "101500"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, 1
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(8)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), marks


def build(root: Path, instances: int) -> None:
    """Load ``instances`` tiny instances into the archive at ``root`` (the server's own
    Archive, batches of 1,000)."""
    import datetime as dt

    from dicomframes.server.storage import Archive

    body, marks = template()
    archive = Archive(root, durable=False)
    batch: list[Path] = []
    n = 0
    try:
        for s in range(instances // (SERIES * INSTANCES)):
            date = (dt.date(2010, 1, 1) + dt.timedelta(days=s)).strftime("%Y%m%d").encode()
            study = body.replace(marks["9.8"], uid(s, 1)).replace(b"19990909", date)
            for k in range(SERIES):
                series = study.replace(marks["9.7"], uid(s * SERIES + k, 2))
                for _ in range(INSTANCES):
                    path = archive.temp_path(".dcm")
                    path.write_bytes(series.replace(marks["9.6"], uid(n, 3)))
                    batch.append(path)
                    n += 1
            if len(batch) >= 1000:
                archive.store_files(batch)
                batch = []
        if batch:
            archive.store_files(batch)
    finally:
        archive.close()


CHILD = r"""
import json, resource, sys, time
import dicomframes
url, what, out = sys.argv[1:4]
client = dicomframes.connect(url, progress=False)
started = time.perf_counter()
if what == "harvest":
    rows = client.harvest(out, progress=False).rows
elif what == "harvest-gc-paused":
    rows = client.harvest(out, progress=False, pause_gc=True).rows
elif what == "search":
    rows = len(client.search_instances())
else:  # the floor: per-study QIDO requests, json.loads, nothing else
    import requests
    session = requests.Session()
    studies = json.loads(session.get(f"{url}/studies", params={"includefield": "0020000D"},
                                     headers={"Accept": "application/dicom+json"}).content)
    rows = 0
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        answer = session.get(f"{url}/studies/{uid}/instances",
                             headers={"Accept": "application/dicom+json"})
        rows += len(json.loads(answer.content))
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak}))
"""


def measure(url: str, what: str, out: Path, repeat: int = 1) -> dict:
    """Run one measurement ``repeat`` times, each in a child process (a harvest into a new
    folder each time); the median run's rows and seconds, and the highest peak RSS (MB)."""
    runs = []
    for n in range(repeat):
        target = out.with_name(f"{out.name}-{n}")
        done = subprocess.run([sys.executable, "-c", CHILD, url, what, str(target)],
                              check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        shutil.rmtree(target, ignore_errors=True)
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**middle, "peak_mb": max(r["peak_mb"] for r in runs)}


def main() -> None:
    """Build each archive, measure, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--skip-search-above", type=int, default=100_000,
                        help="measure search_instances() only up to this size")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the harvest and of the floor (the median is shown)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="harvest-bench-") as temp:
        for size in sizes:
            root = Path(temp) / f"archive-{size}"
            started = time.perf_counter()
            build(root, size)
            print(f"{size:>7} instances: archive built in {time.perf_counter() - started:.1f} s",
                  flush=True)
            with embedded_in_child(root) as (url, _pid):
                measure(url, "floor", Path(temp) / "unused")  # warm the server's caches first
                repeat = args.repeat
                row = {"harvest": measure(url, "harvest", Path(temp) / f"out-{size}", repeat),
                       "paused": measure(url, "harvest-gc-paused", Path(temp) / f"out-{size}",
                                         repeat),
                       "floor": measure(url, "floor", Path(temp) / "unused", repeat)}
                if size <= args.skip_search_above:
                    row["search"] = measure(url, "search", Path(temp) / "unused")
            results[size] = row
            shutil.rmtree(root, ignore_errors=True)
            for name, m in row.items():
                print(f"{size:>7} {name:>8}: {m['rows']:>7} rows in {m['seconds']:7.2f} s "
                      f"({m['rows'] / m['seconds']:8.0f} rows/s), peak RSS {m['peak_mb']:6.0f} MB",
                      flush=True)
            h = row["harvest"]["seconds"]
            print(f"{size:>7} harvest / floor: {h / row['floor']['seconds']:.2f}x (target <= 1.5)")
            print(f"{size:>7} harvest / harvest(pause_gc=True): "
                  f"{h / row['paused']['seconds']:.2f}x (the cost of leaving the collector on)")
            if "search" in row:
                print(f"{size:>7} search_instances / harvest: {row['search']['seconds'] / h:.2f}x")
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        ratio = results[big]["harvest"]["seconds"] / results[small]["harvest"]["seconds"]
        print(f"harvest time({big}) / time({small}): {ratio:.2f} "
              f"(data x{big / small:.0f}; target <= {1.1 * big / small:.0f})")


if __name__ == "__main__":
    main()
