"""``client.image`` against ``client.volume`` and against SimpleITK reading local files.

    python benchmarks/image.py                      # 300 slices of 512x512, both servers
    python benchmarks/image.py --slices 100 --repeat 2 --server child

A CT series (int16 stored, RescaleSlope 1, RescaleIntercept -1024, PixelSpacing 0.7 mm, 1.25 mm
between slices) is written to a temporary folder and stored on the embedded server, started in
this process (what ``dicomframes.connect()`` does by default: ``--server inprocess``) or in a
child process (``--server child``, as a real server would run). For each:

* **volume**: ``client.volume(study, series)``, the stored int16 values;
* **image**: ``client.image(study, series)``, float32 HU with order, geometry and coordinates;
* **SimpleITK**: ``ImageSeriesReader`` on the same files from the local disk (its own file
  listing and sort included), float32 after its rescale; no HTTP at all.

The metadata cache is cleared before every run (the metadata request is part of the time).
Time is the best of ``--repeat`` runs, the methods taking turns; the median CPU time of this
process is printed too (with ``--server child`` that is the client's work alone, a steadier
figure than wall time on a loaded machine). Peak memory: tracemalloc's
peak during one more run of ``image`` (numpy and bytes allocations are traced), divided by the
size of its float32 output. Targets (issue 19): image at most 15% slower than volume, peak
memory at most 1.3x the float32 output; the ratio to SimpleITK is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from _servers import embedded_in_child
from pydicom.uid import generate_uid

import dicomframes
from dicomframes.client.frames import clear_cache
from dicomframes.samples import ct_slice


def write_series(folder: Path, slices: int, size: int) -> tuple[str, str]:
    """A CT series of ``slices`` slices of ``size`` x ``size``: a disc that grows and shrinks."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size] - size / 2
    for i in range(slices):
        radius = size * (0.2 + 0.2 * np.sin(np.pi * i / max(slices - 1, 1)))
        hu = np.where(xx**2 + yy**2 <= radius**2, 60, -1000) + (xx.astype(int) % 7)
        ds = ct_slice((hu + 1024).astype(np.int16), study=study, series=series,
                      number=i + 1, z=1.25 * i, patient=("Bench^Image", "BENCH2"),
                      PixelSpacing=[0.7, 0.7], RescaleSlope=1, RescaleIntercept=-1024,
                      SliceThickness=1.25)
        ds.save_as(folder / f"slice{i:04d}.dcm", enforce_file_format=True)
    return study, series


@contextlib.contextmanager
def server(kind: str, folder: Path) -> Iterator[str]:
    if kind == "child":
        with embedded_in_child(folder) as (url, _):
            yield url
    else:
        with dicomframes.serve(folder) as running:
            yield running.url


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one run."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_ratio(run: Callable[[], np.ndarray]) -> tuple[float, int]:
    gc.collect()
    tracemalloc.start()
    out = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / out.nbytes, out.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", choices=["inprocess", "child", "both"], default="both")
    args = parser.parse_args()
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "files"
        study, series = write_series(files, args.slices, args.size)
        mb = args.slices * args.size * args.size * 2 / 1e6
        print(f"{args.slices} slices of {args.size}x{args.size} int16 ({mb:.0f} MB stored, "
              f"{2 * mb:.0f} MB as float32); best of {args.repeat}")

        def simpleitk() -> np.ndarray:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(files), series))
            reader.SetOutputPixelType(sitk.sitkFloat32)
            return sitk.GetArrayViewFromImage(reader.Execute())

        itk_time = best(simpleitk, args.repeat)
        kinds = ["inprocess", "child"] if args.server == "both" else [args.server]
        for kind in kinds:
            with server(kind, Path(tmp) / f"archive-{kind}") as url:
                client = dicomframes.connect(url, progress=False)
                client.store(files, progress=False)

                def volume(client: dicomframes.Client = client) -> np.ndarray:
                    clear_cache(client)
                    return client.volume(study, series)

                def image(client: dicomframes.Client = client) -> np.ndarray:
                    clear_cache(client)
                    return client.image(study, series).values

                times: dict[str, list[tuple[float, float]]] = {"volume": [], "image": []}
                for _ in range(args.repeat):  # taking turns
                    times["volume"].append(timed(volume))
                    times["image"].append(timed(image))
                v, i = (min(t[0] for t in times[k]) for k in ("volume", "image"))
                v_cpu, i_cpu = (statistics.median(t[1] for t in times[k])
                                for k in ("volume", "image"))
                ratio, nbytes = peak_ratio(image)
                check = image()
                assert check.dtype == np.float32 and check.shape[0] == args.slices
                print(f"\nembedded server {kind}:")
                print(f"  volume     {v:6.2f} s  {mb / v:6.0f} MB/s stored")
                print(f"  image      {i:6.2f} s  {mb / i:6.0f} MB/s stored   "
                      f"overhead {100 * (i / v - 1):+.1f}% (target <= 15%)")
                print(f"  client CPU (median): volume {v_cpu:.2f} s, image {i_cpu:.2f} s, "
                      f"overhead {100 * (i_cpu / v_cpu - 1):+.1f}%"
                      + ("" if kind == "child" else " (server threads included)"))
                print(f"  SimpleITK  {itk_time:6.2f} s  (local files)    "
                      f"image / SimpleITK = {i / itk_time:.2f}")
                print(f"  image peak memory {ratio:.2f}x its float32 output "
                      f"({nbytes / 1e6:.0f} MB; target <= 1.3x)")
                client.close()


if __name__ == "__main__":
    main()
