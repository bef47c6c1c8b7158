"""Mixed load on the embedded server: N client processes of STOW / QIDO / WADO / DELETE.

    python benchmarks/load.py                       # 4 processes x 15 s (+ a 1 x 5 s baseline)
    python benchmarks/load.py --processes 8 --duration 60
    python benchmarks/load.py --quick               # 2 x 5 s

The embedded server runs in its own process on 127.0.0.1 (``dicomframes.serve`` on a temporary
folder, see ``_servers.py``); nothing leaves the loopback interface. Each client process loops
for a fixed time, picking an operation at random (fixed seeds):

- ``stow``: 5 new small instances (one request) into one of the process's studies;
- ``qido``: a search at a random level (patient name wildcard, a study's series, a series'
  instances, ``limit``/``offset``);
- ``wado``: one of its instances (bytes compared with those sent) or a series' metadata;
- ``delete``: one of its studies (then forgotten).

Printed: requests/s, p50 and p99 per operation, errors (an unexpected status, a connection
error, different bytes), for a one-process baseline measured first and for the N-process run,
with the ratios between them. Then the consistency check: after the server stops, the index
and the files agree (every row's file exists with its indexed size, no file without a row) and
the instances in the index are exactly those acknowledged and not deleted.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import embedded_in_child

from dicomframes.standard.multipart import encode, new_boundary, related_content_type

OPERATIONS = {"stow": 0.30, "qido": 0.35, "wado": 0.25, "delete": 0.10}
DICOM_JSON = "application/dicom+json"
ROOT = "1.2.826.0.1.3680043.8.498."  # 26 characters + 36 digits = a 62-character UID


def uid() -> str:
    """A new random 62-character UID."""
    return ROOT + str(10**35 + secrets.randbelow(9 * 10**35))


def template() -> tuple[bytes, list[bytes]]:
    """One small instance written by pydicom with placeholder UIDs (study, series, SOP)."""
    marks = [ROOT + str(d) * 36 for d in (1, 2, 3)]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = marks
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = "Load^Test", "LOAD", "20240101", "OT"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(32 * 32, dtype="<u2").tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), [m.encode() for m in marks]


def client(url: str, seed: int, duration: float, out: Any) -> None:
    """One client process: random operations until ``duration`` has passed."""
    rng = random.Random(seed)
    data, marks = template()
    session = requests.Session()
    studies: dict[str, dict[str, dict[str, bytes]]] = {}  # study -> series -> sop -> bytes
    latencies: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    errors: dict[str, int] = {op: 0 for op in OPERATIONS}
    samples: list[str] = []
    kept: dict[str, str] = {}  # sop -> study, acknowledged and not deleted
    ops, weights = list(OPERATIONS), list(OPERATIONS.values())
    end = time.monotonic() + duration

    def failed(op: str, what: str) -> None:
        errors[op] += 1
        if len(samples) < 5:
            samples.append(f"{op}: {what}"[:200])

    while time.monotonic() < end:
        op = rng.choices(ops, weights)[0]
        if op in ("wado", "delete") and not studies:
            op = "stow"
        start = time.perf_counter()
        try:
            if op == "stow":
                if not studies or rng.random() < 0.2:
                    studies[uid()] = {}
                study = rng.choice(list(studies))
                if not studies[study] or rng.random() < 0.3:
                    studies[study][uid()] = {}
                series = rng.choice(list(studies[study]))
                items = {}
                for _ in range(5):
                    sop = uid()
                    items[sop] = data.replace(marks[0], study.encode()).replace(
                        marks[1], series.encode()).replace(marks[2], sop.encode())
                boundary = new_boundary()
                body = b"".join(encode([({"Content-Type": "application/dicom"}, b)
                                        for b in items.values()], boundary))
                answer = session.post(f"{url}/studies", data=body, timeout=60, headers={
                    "Content-Type": related_content_type(boundary, "application/dicom"),
                    "Accept": DICOM_JSON})
                if answer.status_code == 200:
                    studies[study][series].update(items)
                    kept.update(dict.fromkeys(items, study))
                else:
                    failed(op, f"{answer.status_code} {answer.text[:100]}")
            elif op == "qido":
                study = rng.choice(list(studies)) if studies else None
                choice = rng.randrange(4)
                if choice == 0 or study is None:
                    answer = session.get(f"{url}/studies", params={"PatientName": "Load*",
                                         "limit": "20", "offset": str(rng.randrange(50))},
                                         headers={"Accept": DICOM_JSON}, timeout=60)
                elif choice == 1:
                    answer = session.get(f"{url}/studies/{study}/series",
                                         headers={"Accept": DICOM_JSON}, timeout=60)
                elif choice == 2:
                    answer = session.get(f"{url}/studies/{study}/instances",
                                         headers={"Accept": DICOM_JSON}, timeout=60)
                else:
                    answer = session.get(f"{url}/instances", params={"StudyInstanceUID": study},
                                         headers={"Accept": DICOM_JSON}, timeout=60)
                if answer.status_code not in (200, 204):
                    failed(op, f"{answer.status_code} {answer.text[:100]}")
            elif op == "wado":
                study = rng.choice(list(studies))
                filled = [s for s, sops in studies[study].items() if sops]
                if not filled:
                    continue
                series = rng.choice(filled)
                if rng.random() < 0.7:
                    sop = rng.choice(list(studies[study][series]))
                    answer = session.get(
                        f"{url}/studies/{study}/series/{series}/instances/{sop}",
                        headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=60)
                    if answer.status_code != 200:
                        failed(op, f"{answer.status_code} {answer.text[:100]}")
                    elif answer.content != studies[study][series][sop]:
                        failed(op, "different bytes")
                else:
                    answer = session.get(f"{url}/studies/{study}/series/{series}/metadata",
                                         headers={"Accept": DICOM_JSON}, timeout=60)
                    if answer.status_code != 200 or \
                            len(answer.json()) != len(studies[study][series]):
                        failed(op, f"{answer.status_code} metadata")
            else:
                study = rng.choice(list(studies))
                answer = session.delete(f"{url}/studies/{study}", timeout=60)
                if answer.status_code == 204 or (answer.status_code == 404 and not any(
                        studies[study].values())):
                    for sops in studies.pop(study).values():
                        for sop in sops:
                            kept.pop(sop, None)
                else:
                    failed(op, f"{answer.status_code} {answer.text[:100]}")
        except (requests.RequestException, ValueError) as exc:
            failed(op, repr(exc))
        latencies[op].append(time.perf_counter() - start)
    out.put({"latencies": latencies, "errors": errors, "samples": samples, "kept": kept})


def run(url: str, processes: int, duration: float, seed: int) -> dict[str, Any]:
    """``processes`` clients for ``duration`` seconds; merged figures."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=client, args=(url, seed + n, duration, queue))
               for n in range(processes)]
    started = time.monotonic()
    for w in workers:
        w.start()
    results = [queue.get(timeout=duration + 300) for _ in workers]
    elapsed = time.monotonic() - started
    for w in workers:
        w.join(timeout=60)
    merged: dict[str, Any] = {"latencies": {op: [] for op in OPERATIONS},
                              "errors": dict.fromkeys(OPERATIONS, 0), "samples": [], "kept": {},
                              "elapsed": min(elapsed, duration + 5), "duration": duration}
    for r in results:
        for op in OPERATIONS:
            merged["latencies"][op] += r["latencies"][op]
            merged["errors"][op] += r["errors"][op]
        merged["samples"] += r["samples"]
        merged["kept"].update(r["kept"])
    return merged


def table(name: str, result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    """Print one run's figures (and ratios against the baseline)."""
    def rate_of(run: dict[str, Any]) -> float:
        return sum(len(v) for v in run["latencies"].values()) / run["duration"]

    total = sum(len(v) for v in result["latencies"].values())
    rate = rate_of(result)
    ratio = f" (x{rate / rate_of(baseline):.2f} the baseline's rate)" if baseline else ""
    print(f"\n{name}: {total} requests in {result['duration']:.0f} s = {rate:.0f} requests/s, "
          f"errors {sum(result['errors'].values())}{ratio}")
    print(f"  {'operation':<10}{'count':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          + ("   p50/p99 vs baseline" if baseline else ""))
    for op in OPERATIONS:
        values = np.array(result["latencies"][op]) * 1000
        if not len(values):
            continue
        p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
        line = (f"  {op:<10}{len(values):>8}{len(values) / result['duration']:>9.0f}"
                f"{p50:>9.1f}{p99:>9.1f}{result['errors'][op]:>8}")
        if baseline and baseline["latencies"][op]:
            base = np.array(baseline["latencies"][op]) * 1000
            line += (f"   x{p50 / np.percentile(base, 50):.2f} / "
                     f"x{p99 / np.percentile(base, 99):.2f}")
        print(line)
    for sample in result["samples"][:5]:
        print(f"  e.g. {sample}")


def consistency(folder: Path, expected: set[str]) -> list[str]:
    """Index against files, and the index against what was acknowledged and not deleted."""
    db = sqlite3.connect(f"file:{folder / 'index.sqlite3'}?mode=ro", uri=True)
    rows = db.execute("SELECT SOPInstanceUID, path, size FROM instances").fetchall()
    db.close()
    problems = []
    for _sop, path, size in rows:
        full = folder / path
        if not full.is_file() or full.stat().st_size != size:
            problems.append(f"file missing or of another size: {path}")
    on_disk = {(Path(d) / n).relative_to(folder).as_posix()
               for d, _, names in os.walk(folder / "files") for n in names}
    problems += [f"file without a row: {p}" for p in on_disk - {p for _, p, _ in rows}]
    indexed = {sop for sop, _, _ in rows}
    problems += [f"acknowledged and not deleted, but not indexed: {s}" for s in expected - indexed]
    problems += [f"indexed but deleted or never acknowledged: {s}" for s in indexed - expected]
    return problems


def main() -> int:
    """Run the baseline, then the load; print the figures and the consistency check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--duration", type=float, default=15, help="seconds (default 15)")
    parser.add_argument("--baseline", type=float, default=5,
                        help="seconds of the one-process baseline (default 5; 0: none)")
    parser.add_argument("--quick", action="store_true", help="2 processes x 5 s, baseline 3 s")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    if args.quick:
        args.processes, args.duration, args.baseline = 2, 5, 3
    with tempfile.TemporaryDirectory(prefix="dicomframes-load-") as tmp:
        folder = Path(tmp) / "archive"
        with embedded_in_child(folder) as (url, _pid):
            assert url.startswith("http://127.0.0.1:"), url
            baseline = run(url, 1, args.baseline, args.seed + 1000) if args.baseline else None
            result = run(url, args.processes, args.duration, args.seed)
        if baseline:
            table("baseline: 1 process", baseline, None)
        table(f"load: {args.processes} processes", result, baseline)
        expected = set(result["kept"]) | set(baseline["kept"] if baseline else ())
        problems = consistency(folder, expected)
        print(f"\nconsistency after the server stopped: {len(expected)} instances expected, "
              + ("index and files agree, nothing lost, nothing deleted came back" if not problems
                 else f"{len(problems)} PROBLEMS, e.g. {problems[:5]}"))
        errors = sum(result["errors"].values()) + (sum(baseline["errors"].values())
                                                   if baseline else 0)
        return 1 if problems or errors else 0


if __name__ == "__main__":
    sys.exit(main())
