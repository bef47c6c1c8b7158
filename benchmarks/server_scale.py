"""The embedded server at archive size: STOW load rate against Orthanc, `dicomframes import`
in files/s, and QIDO page time at offset 0 against a deep offset.

    python benchmarks/server_scale.py                 # 2,000 STOW instances, 100,000 for QIDO
    python benchmarks/server_scale.py --quick         # 500 and 10,000 (about a minute)
    python benchmarks/server_scale.py --only qido --archive 100000

Every figure is compared with a baseline measured in the same run (ratios, never absolute
targets): STOW instances/s of the embedded server (durable: fsync of every stored file and its
folder, grouped per request) over Orthanc's (which this harness runs with fsync off) on the
same files in requests of ``--batch``; the QIDO page at offset 90% of the archive over the page
at offset 0 (both ``limit=--page``, median of ``--repeat`` requests). The embedded server runs
as ``dicomframes serve`` does, with its parser processes (one per CPU, at most 4), started
before the clock starts, as Orthanc is. The archive for QIDO is built with
:func:`dicomframes.server.import_folder`; ``dicomframes import`` is timed end to end as a user
runs it (a child process, copying and in place), next to the in-process call and the command's
fixed start-up cost (an import of an empty folder). ``--only import`` times just that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import requests
from pydicom.uid import generate_uid

from dicomframes.samples import ct_slice
from dicomframes.standard import multipart
from dicomframes.standard.mediatypes import DICOM_JSON

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import embedded_in_child


def write_files(folder: Path, count: int, per_series: int = 25, series_per_study: int = 4
                ) -> list[Path]:
    """``count`` small CT instances (16x16) as files: studies of ``series_per_study`` series of
    ``per_series`` instances, one patient per study."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    paths: list[Path] = []
    study = series = ""
    for index in range(count):
        if index % (per_series * series_per_study) == 0:
            study = generate_uid()
        if index % per_series == 0:
            series = generate_uid()
        number = index // (per_series * series_per_study)
        ds = ct_slice(pixels, study=study, series=series, number=index % per_series + 1,
                      z=float(index % per_series), patient=(f"Scale^{number}", f"P{number:06d}"),
                      StudyDate=f"{2000 + number % 25}0{1 + number % 9}15", SeriesNumber=1)
        path = folder / f"{index:07d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stow_rate(base: str, files: Sequence[bytes], batch: int,
              auth: tuple[str, str] | None = None) -> float:
    """STOW ``files`` in requests of ``batch`` parts, one after another; instances/s. Checks
    that every part was stored."""
    session = requests.Session()
    session.auth = auth
    start = time.perf_counter()
    for first in range(0, len(files), batch):
        chunk = files[first:first + batch]
        boundary = multipart.new_boundary()
        body = b"".join(multipart.encode(
            [({"Content-Type": "application/dicom"}, data) for data in chunk], boundary))
        response = session.post(
            base + "/studies", data=body, timeout=600,
            headers={"Content-Type": multipart.related_content_type(boundary,
                                                                    "application/dicom"),
                     "Accept": DICOM_JSON})
        if response.status_code != 200:
            raise RuntimeError(f"{base}: STOW answered {response.status_code}: "
                               f"{response.text[:300]}")
        stored = response.json().get("00081199", {}).get("Value", [])
        if len(stored) != len(chunk):
            raise RuntimeError(f"{base}: STOW stored {len(stored)} of {len(chunk)}")
    return len(files) / (time.perf_counter() - start)


def bench_stow(work: Path, count: int, batch: int) -> None:
    """STOW the same files into the embedded server (child process) and into Orthanc."""
    from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

    files = [p.read_bytes() for p in write_files(work / "stow-files", count)]
    with embedded_in_child(work / "stow-archive") as (url, _pid):
        embedded = stow_rate(url, files, batch)
    print(f"STOW {count} instances, {batch} per request")
    print(f"  embedded (durable, group commit)  {embedded:8.0f} inst/s")
    if not orthanc_installed():
        print("  orthanc: not installed, no ratio")
        return
    with start_orthanc() as orthanc:
        theirs = stow_rate(orthanc.dicomweb_url, files, batch, orthanc.auth)
    print(f"  orthanc (fsync off)               {theirs:8.0f} inst/s")
    print(f"  ratio embedded / orthanc          {embedded / theirs:8.2f}  (target >= 1)")


def page_time(session: requests.Session, url: str, offset: int, page: int,
              repeat: int) -> float:
    """Median seconds of ``GET url?limit=page&offset=offset``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = session.get(url, params={"limit": page, "offset": offset},
                               headers={"Accept": DICOM_JSON}, timeout=600)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        if len(response.json()) != page:
            raise RuntimeError(f"offset {offset}: {len(response.json())} rows, not {page}")
    return statistics.median(times)


def _command(*args: str) -> float:
    """Wall time of ``python -m dicomframes ARGS`` in a child process, as a user runs it."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dicomframes", *args], capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"dicomframes {args[0]} failed: {done.stderr[-500:]}")
    return seconds


def import_rates(files: Path, work: Path, count: int) -> None:
    """Files/s of ``dicomframes import`` timed end to end as a user runs it (a child process:
    interpreter, imports, parser processes, progress line, report), next to the in-process
    :func:`import_folder` the benchmark used to time, and the fixed cost of the command (an
    import of an empty folder) that separates the two."""
    from dicomframes.server import import_folder

    workers = os.cpu_count() or 1  # as `dicomframes import` runs by default
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    fixed = min(_command("import", str(empty), "--data", str(work / f"fixed{n}"))
                for n in range(3))
    print(f"dicomframes import of an empty folder (start-up, exit): {fixed:.2f} s")
    for in_place in (False, True):
        how = ["--in-place"] if in_place else []
        name = "--in-place" if in_place else "(copy)    "
        target = work / "import-command"
        shutil.rmtree(target, ignore_errors=True)
        wall = _command("import", str(files), "--data", str(target), *how)
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        outcome = import_folder(files, target, in_place=in_place, workers=workers)
        inside = time.perf_counter() - start
        shutil.rmtree(target, ignore_errors=True)
        if int((outcome["status"] == "stored").sum()) != count:
            raise RuntimeError("the import did not store every file")
        print(f"dicomframes import {name} command {count / wall:7.0f} files/s "
              f"(in-process {count / inside:7.0f}; command without its start-up "
              f"{count / max(wall - fixed, 1e-6):7.0f})")


def bench_qido(work: Path, count: int, page: int, repeat: int) -> None:
    """Import ``count`` generated files, then time QIDO pages at offset 0 and 90%."""
    from dicomframes.server import import_folder

    start = time.perf_counter()
    write_files(work / "qido-files", count)
    print(f"wrote {count} files in {time.perf_counter() - start:.1f} s")
    archive = work / "qido-archive"
    import_rates(work / "qido-files", work, count)
    shutil.rmtree(archive, ignore_errors=True)
    import_folder(work / "qido-files", archive, workers=os.cpu_count() or 1)
    deep = count * 9 // 10
    with embedded_in_child(archive) as (url, _pid):
        session = requests.Session()
        page_time(session, url + "/instances", 0, page, 1)  # warm the page cache
        print(f"QIDO /instances on {count} instances, limit={page} (median of {repeat})")
        results = {}
        for name, path in (("instances", "/instances"), ("studies", "/studies")):
            total = count if name == "instances" else count // 100
            offsets = (0, total * 9 // 10 if name == "studies" else deep)
            first = page_time(session, url + path, offsets[0], min(page, total // 10), repeat)
            last = page_time(session, url + path, offsets[1], min(page, total // 10), repeat)
            results[name] = last / first
            print(f"  /{name:10s} offset 0 {first * 1000:7.1f} ms   offset {offsets[1]:>6} "
                  f"{last * 1000:7.1f} ms   ratio {last / first:5.2f}  (target <= 1.5)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks the options ask for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 STOW, 10,000 for QIDO")
    parser.add_argument("--only", choices=("stow", "qido", "import"))
    parser.add_argument("--files", type=int, default=20_000, help="files for --only import")
    parser.add_argument("--stow", type=int, default=2000, help="instances to STOW")
    parser.add_argument("--batch", type=int, default=100, help="instances per STOW request")
    parser.add_argument("--archive", type=int, default=100_000, help="instances for QIDO")
    parser.add_argument("--page", type=int, default=1000, help="QIDO limit")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.quick:
        args.stow, args.archive = 500, 10_000
    work = Path(tempfile.mkdtemp(prefix="dicomframes-scale-"))
    try:
        if args.only in (None, "stow"):
            bench_stow(work, args.stow, args.batch)
        if args.only in (None, "qido"):
            bench_qido(work, args.archive, args.page, args.repeat)
        if args.only == "import":
            write_files(work / "import-files", args.files)
            import_rates(work / "import-files", work, args.files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
