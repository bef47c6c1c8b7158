"""Embedded DICOMweb server against Orthanc: the same data, the same client, one run.

    python benchmarks/server.py                # full run (10,000 instances for QIDO)
    python benchmarks/server.py --quick        # a smaller corpus, fewer repetitions

Both servers are loaded with the same DICOM files over STOW-RS, then driven by one plain
``requests.Session`` each (keep-alive, no compression), with identical URLs and headers:

(a) QIDO-RS over a corpus of 10,000 tiny instances (100 studies x 10 series x 10 instances of
    16x16 pixels) with varied patient names, dates and modalities: representative searches, each
    repeated, median latency;
(b) frames: one multi-frame instance of 200 frames of 512x512 uint16 (100 MB): 20 of its frames
    fetched one per request (Orthanc re-reads the whole instance for each frame, about 0.7 s),
    and all 200 frames in one request, with ``Accept:
    multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1``,
    decoded with :mod:`dicomframes.standard.multipart` into a numpy array and checked;
(c) whole-series retrieval (``multipart/related; type="application/dicom"; transfer-syntax=*``)
    of a 100-slice 512x512 int16 series (about 52 MB) and of a 10-instance tiny series.

The ratio column is embedded speed / Orthanc speed (Orthanc time / embedded time): above 1 the
embedded server is faster. By default the embedded server runs in its own process, like
Orthanc, so that it does not share this client's interpreter (``--in-process`` measures the
notebook set-up, where it runs in a thread of the client's process). Orthanc is configured by
:mod:`dicomframes.testing.orthanc` (no HTTP compression, no fsync, 512 MB storage cache) with
``StorageAccessOnFind: Answers``; the embedded server runs as ``serve()`` does by default
(durable: fsync of every stored file, which is why its STOW load rate is lower).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from _servers import embedded_in_child
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomframes.samples import multiframe_pixels, write_multiframe_study
from dicomframes.standard import multipart
from dicomframes.testing.orthanc import orthanc_installed, start_orthanc

DICOM_JSON = "application/dicom+json"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
FRAMES_ACCEPT = (f'multipart/related; type="application/octet-stream"; '
                 f"transfer-syntax={EXPLICIT_LE}")
SERIES_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# Orthanc's documented speed setting for finds: read files only to build answers, not to filter
# (every attribute the queries below filter on is in Orthanc's database, so results are equal).
ORTHANC_TUNING = {"StorageAccessOnFind": "Answers"}

FAMILIES = ["Smith", "Smithers", "Jones", "Brown", "Garcia", "Miller", "Davis", "Rodriguez",
            "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
            "Jackson", "Martin", "Lee", "Perez"]
GIVEN = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth"]
MODALITIES = ["CT", "MR", "CR", "OT", "US", "PT"]
SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


# --------------------------------------------------------------------------- data


def _to_bytes(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Corpus:
    """The QIDO corpus: Part-10 bytes plus what the queries need to know about it."""

    files: list[bytes] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    series_study: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)


def make_corpus(studies: int, series: int, instances: int, seed: int = 0) -> Corpus:
    """Tiny 16x16 uint16 instances with varied names, dates, modalities (deterministic)."""
    rng = np.random.default_rng(seed)
    corpus = Corpus()
    pixels = np.arange(256, dtype="<u2").reshape(16, 16).tobytes()
    count = 0

    def uid() -> str:
        nonlocal count
        count += 1
        return generate_uid(entropy_srcs=["dicomframes-bench", str(seed), str(count)])

    for s in range(studies):
        patient = s // 2  # two studies per patient
        name = f"{FAMILIES[patient % len(FAMILIES)]}^{GIVEN[(patient // 3) % len(GIVEN)]}"
        patient_id = f"P{patient:04d}"
        date = f"{2010 + int(rng.integers(0, 15))}{int(rng.integers(1, 13)):02d}" \
               f"{int(rng.integers(1, 29)):02d}"
        study_uid = uid()
        corpus.studies.append(study_uid)
        corpus.patient_ids.append(patient_id)
        for r in range(series):
            modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
            series_uid = uid()
            corpus.series.append(series_uid)
            corpus.series_study.append(study_uid)
            for i in range(instances):
                ds = Dataset()
                ds.SpecificCharacterSet = "ISO_IR 192"
                ds.SOPClassUID = SOP_CLASS.get(modality, SecondaryCaptureImageStorage)
                ds.SOPInstanceUID = uid()
                ds.StudyDate = ds.SeriesDate = date
                ds.StudyTime = f"{8 + s % 10:02d}{(s * 7) % 60:02d}00"
                ds.AccessionNumber = f"A{s:06d}"
                ds.Modality = modality
                ds.ReferringPhysicianName = "Doc^Referring"
                ds.StudyDescription = f"{modality} study {s}"
                ds.SeriesDescription = f"series {r + 1}"
                ds.PatientName = name
                ds.PatientID = patient_id
                ds.PatientBirthDate = f"{1940 + patient % 60}0101"
                ds.PatientSex = "F" if patient % 2 else "M"
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.StudyID = str(s + 1)
                ds.SeriesNumber = r + 1
                ds.InstanceNumber = i + 1
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows = ds.Columns = 16
                ds.BitsAllocated = ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 0
                ds.add_new(0x7FE00010, "OW", pixels)
                corpus.instances.append(ds.SOPInstanceUID)
                corpus.files.append(_to_bytes(ds))
    return corpus


def make_big_series(slices: int, size: int) -> tuple[str, str, list[bytes]]:
    """A CT series of ``slices`` int16 slices of ``size`` x ``size`` (deterministic)."""
    rng = np.random.default_rng(1)
    key = f"dicomframes-bench-series-{slices}-{size}"
    study, series = (generate_uid(entropy_srcs=[key, "study"]),
                     generate_uid(entropy_srcs=[key, "series"]))
    files = []
    for index in range(slices):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[key, str(index)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate = "20240101"
        ds.Modality = "CT"
        ds.PatientName = "Volume^Big"
        ds.PatientID = "BIG1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
        data = rng.integers(-1024, 3000, size=(size, size), dtype=np.int16)
        ds.add_new(0x7FE00010, "OW", data.astype("<i2").tobytes())
        files.append(_to_bytes(ds))
    return study, series, files


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    """One server under test: its DICOMweb base URL and a session (the same client for both)."""

    name: str
    base: str
    session: requests.Session
    pid: int | None = None


def stow(target: Target, files: Sequence[bytes], batch: int) -> float:
    """STOW ``files`` in requests of ``batch`` parts; returns seconds; checks every part stored."""
    start = time.perf_counter()
    for first in range(0, len(files), batch):
        chunk = files[first:first + batch]
        boundary = multipart.new_boundary()
        body = b"".join(multipart.encode(
            [({"Content-Type": "application/dicom"}, data) for data in chunk], boundary))
        response = target.session.post(
            target.base + "/studies", data=body, timeout=600,
            headers={"Content-Type": multipart.related_content_type(boundary, "application/dicom"),
                     "Accept": DICOM_JSON})
        if response.status_code != 200:
            raise RuntimeError(f"{target.name}: STOW answered {response.status_code}: "
                               f"{response.text[:500]}")
        stored = response.json().get("00081199", {}).get("Value", [])
        if len(stored) != len(chunk):
            raise RuntimeError(f"{target.name}: STOW stored {len(stored)} of {len(chunk)}")
    return time.perf_counter() - start


@contextmanager
def embedded_server(folder: Path, in_process: bool) -> Iterator[tuple[str, int | None]]:
    """The embedded server on ``folder``: (url, pid); a child process unless ``in_process``."""
    if in_process:
        from dicomframes.server import serve

        with serve(folder) as server:
            yield server.url, None
        return
    with embedded_in_child(folder) as (url, pid):
        yield url, pid


# --------------------------------------------------------------------------- measurements


@dataclass
class Row:
    """One line of the result table."""

    section: str
    label: str
    unit: str  # "ms" (lower is better) or "MB/s" / "inst/s" (higher is better)
    values: dict[str, float]
    note: str = ""

    def ratio(self) -> float:
        """Embedded speed divided by Orthanc speed."""
        embedded, orthanc = self.values["embedded"], self.values["orthanc"]
        if self.unit == "ms":
            return orthanc / embedded if embedded else float("inf")
        return embedded / orthanc if orthanc else float("inf")


def interleaved(targets: Sequence[Target], action: Callable[[Target], Any],
                repeat: int) -> dict[str, list[float]]:
    """Time ``action`` ``repeat`` times per target, alternating targets (fair under load)."""
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    for round_ in range(repeat):
        order = targets if round_ % 2 == 0 else list(reversed(targets))
        for target in order:
            start = time.perf_counter()
            action(target)
            times[target.name].append(time.perf_counter() - start)
    return times


def qido_queries(corpus: Corpus) -> list[tuple[str, str]]:
    """(label, path?query) of the representative searches; values sent unencoded (Orthanc)."""
    study = corpus.studies[len(corpus.studies) // 3]
    series = corpus.series[len(corpus.series) // 2]
    series_study = corpus.series_study[len(corpus.series) // 2]
    sop = corpus.instances[len(corpus.instances) * 2 // 3]
    patient_id = corpus.patient_ids[len(corpus.patient_ids) // 2]
    deep = len(corpus.instances) // 2
    page = len(corpus.studies) // 4
    return [
        ("studies PatientName=Smi*", "/studies?PatientName=Smi*"),
        ("studies StudyDate range 2 y", "/studies?StudyDate=20150101-20161231"),
        ("studies PatientID exact", f"/studies?PatientID={patient_id}"),
        ("studies includefield=all lim 25", f"/studies?includefield=all&limit=25&offset={page}"),
        ("series Modality=MR", "/series?Modality=MR"),
        ("series of a study", f"/studies/{study}/series"),
        ("instances of a study", f"/studies/{study}/instances"),
        ("instances of a series", f"/studies/{series_study}/series/{series}/instances"),
        ("instances SOPInstanceUID=", f"/instances?SOPInstanceUID={sop}"),
        ("instances limit 100 offset n/2", f"/instances?limit=100&offset={deep}"),
    ]


def run_qido(targets: Sequence[Target], corpus: Corpus, repeat: int) -> list[Row]:
    rows = []
    for label, query in qido_queries(corpus):
        counts: dict[str, int] = {}
        statuses: dict[str, int] = {}

        def search(target: Target, query: str = query, counts: dict[str, int] = counts,
                   statuses: dict[str, int] = statuses) -> None:
            response = target.session.get(target.base + query, headers={"Accept": DICOM_JSON},
                                          timeout=120)
            statuses[target.name] = response.status_code
            counts[target.name] = len(response.json()) if response.content else 0

        interleaved(targets, search, 1)  # warm-up, and the counts
        times = interleaved(targets, search, repeat)
        note = " ".join(f"{name}:{counts[name]}" for name in counts)
        if len(set(counts.values())) > 1 or any(s not in (200, 204) for s in statuses.values()):
            note += " MISMATCH " + str(statuses)
        rows.append(Row("QIDO", label, "ms",
                        {n: statistics.median(t) * 1000 for n, t in times.items()}, note))
    return rows


def _frames_from(response: requests.Response, into: np.ndarray, first: int) -> int:
    response.raise_for_status()
    parts = multipart.decode(response.content, response.headers["Content-Type"])
    flat = into.reshape(into.shape[0], -1)
    for offset, part in enumerate(parts):
        flat[first + offset] = np.frombuffer(part.content, dtype="<u2")
    return len(parts)


def run_frames(targets: Sequence[Target], study: str, series: str, sop: str,
               expected: np.ndarray, repeat: int, single_requests: int) -> list[Row]:
    """Frames one per request (``single_requests`` frames spread over the instance; Orthanc
    needs about 0.7 s for each frame of a 100 MB instance), then all frames in one request."""
    count = expected.shape[0]
    url = f"/studies/{study}/series/{series}/instances/{sop}/frames/"
    out = np.empty_like(expected)
    picks = sorted({int(k) for k in np.linspace(0, count - 1, min(single_requests, count))})

    def one_by_one(target: Target) -> None:
        for k in picks:
            response = target.session.get(target.base + url + str(k + 1), timeout=120,
                                          headers={"Accept": FRAMES_ACCEPT})
            _frames_from(response, out, k)

    def all_at_once(target: Target) -> None:
        response = target.session.get(
            target.base + url + ",".join(str(k + 1) for k in range(count)), timeout=600,
            headers={"Accept": FRAMES_ACCEPT})
        if _frames_from(response, out, 0) != count:
            raise RuntimeError(f"{target.name}: wrong number of frames")

    rows = []
    frame_mb = expected[0].nbytes / 1e6
    for label, action, fetched in (
            (f"{len(picks)} requests, 1 frame each", one_by_one, picks),
            (f"1 request, {count} frames", all_at_once, list(range(count)))):
        for target in targets:  # warm-up and check
            out[...] = 0
            action(target)
            if not np.array_equal(out[fetched], expected[fetched]):
                raise RuntimeError(f"{target.name}: frames differ from what was stored")
        times = interleaved(targets, action, repeat)
        megabytes = frame_mb * len(fetched)
        rows.append(Row("frames", label, "MB/s",
                        {n: megabytes / statistics.median(t) for n, t in times.items()},
                        f"{megabytes:.0f} MB of a {count}-frame instance"))
    return rows


def run_series(targets: Sequence[Target], label: str, study: str, series: str,
               files: Sequence[bytes], repeat: int) -> Row:
    url = f"/studies/{study}/series/{series}"
    megabytes = sum(map(len, files)) / 1e6
    expected = {pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
                for data in files}

    def retrieve(target: Target, check: bool = False) -> None:
        response = target.session.get(target.base + url, headers={"Accept": SERIES_ACCEPT},
                                      timeout=600)
        response.raise_for_status()
        parts = multipart.decode(response.content, response.headers["Content-Type"])
        if len(parts) != len(files):
            raise RuntimeError(f"{target.name}: {len(parts)} parts for {len(files)} instances")
        if check:
            got = {pydicom.dcmread(io.BytesIO(bytes(p.content)), stop_before_pixels=True)
                   .SOPInstanceUID for p in parts}
            if got != expected:
                raise RuntimeError(f"{target.name}: retrieved instances differ")

    for target in targets:
        retrieve(target, check=True)
    times = interleaved(targets, retrieve, repeat)
    if megabytes > 5:
        return Row("series", label, "MB/s",
                   {n: megabytes / statistics.median(t) for n, t in times.items()},
                   f"{megabytes:.0f} MB")
    return Row("series", label, "ms", {n: statistics.median(t) * 1000 for n, t in times.items()},
               f"{len(files)} instances")


# --------------------------------------------------------------------------- report


def print_table(rows: Sequence[Row]) -> None:
    header = f"{'':7} {'operation':34} {'embedded':>10} {'Orthanc':>10} {'unit':>6} " \
             f"{'ratio':>6}  note"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row.ratio()
        flag = ""
        if row.section != "load" and ratio < 1.0:
            flag = "  <-- slower" if ratio < 0.95 else "  (slower, within 5% noise)"
        print(f"{row.section:7} {row.label:34} {row.values['embedded']:10.1f} "
              f"{row.values['orthanc']:10.1f} {row.unit:>6} {ratio:6.2f}  {row.note}{flag}")
    print("ratio = embedded speed / Orthanc speed (above 1: embedded faster); QIDO and small "
          "series: median latency; 'load' is informational (not a target)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 studies x 5 series x 10 instances, 50 frames, 20 slices")
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--frame-size", type=int, default=512)
    parser.add_argument("--single-frames", type=int, default=20,
                        help="frames fetched one per request (spread over the instance)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15, help="repetitions of each query")
    parser.add_argument("--bulk-repeat", type=int, default=3,
                        help="repetitions of each frames / series retrieval")
    parser.add_argument("--batch", type=int, default=100, help="instances per STOW request")
    parser.add_argument("--in-process", action="store_true",
                        help="run the embedded server in a thread of this process")
    parser.add_argument("--only", choices=("qido", "frames", "series"), action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.series, args.instances = 20, 5, 10
        args.frames, args.slices, args.repeat, args.bulk_repeat = 50, 20, 5, 2
        args.single_frames = 10
    parts = set(args.only or ("qido", "frames", "series"))
    if not orthanc_installed():
        print("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)",
              file=sys.stderr)
        return 2

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, embedded server "
          f"{'in-process' if args.in_process else 'in a child process'}", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dicomframes-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        corpus = make_corpus(args.studies, args.series, args.instances) if "qido" in parts \
            else Corpus()
        (mf_path,) = write_multiframe_study(tmp / "mf", args.frames, args.frame_size,
                                            args.frame_size) if "frames" in parts else (None,)
        big = make_big_series(args.slices, args.frame_size) if "series" in parts else None
        print(f"data: {len(corpus.files)} QIDO instances, {args.frames} frames, "
              f"{args.slices} slices ({time.perf_counter() - started:.1f} s)", flush=True)

        with embedded_server(tmp / "embedded", args.in_process) as (url, pid), \
                start_orthanc(tmp / "orthanc", extra_config=ORTHANC_TUNING) as orthanc:
            targets = [Target("embedded", url, requests.Session(), pid),
                       Target("orthanc", orthanc.dicomweb_url, requests.Session(), orthanc.pid)]
            for target in targets:
                target.session.headers["Accept-Encoding"] = "identity"

            load: dict[str, float] = {t.name: 0.0 for t in targets}
            count = 0
            batches: list[tuple[list[bytes], int]] = []
            if corpus.files:
                batches.append((corpus.files, args.batch))
            if mf_path is not None:
                batches.append(([mf_path.read_bytes()], 1))
            if big is not None:
                batches.append((big[2], 20))
            for files, batch in batches:
                count += len(files)
                for target in targets:
                    load[target.name] += stow(target, files, batch)
            rows.append(Row("load", f"STOW {count} instances", "inst/s",
                            {n: count / s for n, s in load.items()}, f"batches of {args.batch}"))
            print(f"loaded: embedded {load['embedded']:.1f} s, Orthanc {load['orthanc']:.1f} s",
                  flush=True)

            if "qido" in parts:
                rows += run_qido(targets, corpus, args.repeat)
            if mf_path is not None:
                ds = pydicom.dcmread(mf_path, stop_before_pixels=True)
                rows += run_frames(targets, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                   ds.SOPInstanceUID,
                                   multiframe_pixels(args.frames, args.frame_size,
                                                     args.frame_size), args.bulk_repeat,
                                   args.single_frames)
            if big is not None:
                rows.append(run_series(targets, f"series {args.slices} x {args.frame_size}^2",
                                       big[0], big[1], big[2], args.bulk_repeat))
            if corpus.files:
                per_series = args.instances
                first = [corpus.files[i] for i in range(per_series)]
                rows.append(run_series(targets, f"series of {per_series} tiny instances",
                                       corpus.studies[0], corpus.series[0], first, args.repeat))
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ | {"ratio": row.ratio()} for row in rows],
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
