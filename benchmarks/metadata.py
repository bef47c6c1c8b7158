"""Benchmark: WADO-RS metadata of many instances -> pandas DataFrame.

One JSON body holds the metadata of N instances (default 20,000) of realistic content:
pydicom's CT_small.dcm (258 attributes, 179 of them private) converted with
``dicomframes.standard.dicomjson.dataset_to_json``, each instance with its own SOP Instance UID,
series UID and instance number, and PixelData as a BulkDataURI. Measured in one run:

1. ``json.loads`` of the body alone;
2. dicomframes: ``json.loads`` + ``dicomframes.convert.tables.to_dataframe`` (of that same parse);
3. the pydicom path: ``json.loads`` + ``pydicom.Dataset.from_json`` per instance + a dict
   {keyword: value} per instance + ``pandas.DataFrame``. It costs about 14 ms per instance,
   so by default it runs on a sample (``--pydicom-sample``, 2,000 instances) and its time is
   scaled to N per instance (it is linear in N); ``--pydicom-sample 0`` runs it on all N.

Targets (issue 3): dicomframes >= 5x faster than the pydicom path, and at most 2x the time
of ``json.loads`` alone. ``json.loads`` of a body this size spends most of its time in the
cyclic garbage collector; the figures with the collector paused are printed too (dicomframes
leaves the collector alone: pausing it is a switch of the whole process).

    python benchmarks/metadata.py [--instances 20000] [--pydicom-sample 2000]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import pandas as pd
import pydicom
from pydicom.data import get_testdata_file

from dicomframes.convert.tables import to_dataframe
from dicomframes.standard import dicomjson
from dicomframes.standard.dicomjson import dataset_to_json

BASE = "http://127.0.0.1:8042"
STUDY = "1.2.826.0.1.3680043.8.498.1"


def make_body(count: int) -> bytes:
    """The JSON body of a study-level metadata answer for ``count`` instances."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    template = json.dumps(dataset_to_json(ds, bulk_uri=lambda tag, elem: "BULK"))
    parts = []
    for i in range(count):
        obj = json.loads(template)
        series = f"1.2.826.0.1.3680043.8.498.2.{i // 200 + 1}"
        sop = f"1.2.826.0.1.3680043.8.498.3.{i + 1}"
        obj["0020000D"]["Value"] = [STUDY]
        obj["0020000E"]["Value"] = [series]
        obj["00080018"]["Value"] = [sop]
        obj["00200013"]["Value"] = [i % 200 + 1]
        obj["7FE00010"]["BulkDataURI"] = (
            f"{BASE}/studies/{STUDY}/series/{series}/instances/{sop}/bulk/7FE00010"
        )
        parts.append(json.dumps(obj))
    return ("[" + ",".join(parts) + "]").encode()


def pydicom_path(body: bytes) -> pd.DataFrame:
    """What one writes without dicomframes: pydicom Datasets, then a DataFrame."""
    rows = []
    for obj in json.loads(body):
        ds = pydicom.Dataset.from_json(obj, bulk_data_uri_handler=lambda tag, vr, uri: None)
        rows.append({(elem.keyword or f"{elem.tag:08X}"): elem.value for elem in ds})
    return pd.DataFrame(rows)


def timed(func, *args):
    gc.collect()
    start = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - start, result


def loads_without_gc(body: bytes):
    gc.disable()
    try:
        return json.loads(body)
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--pydicom-sample", type=int, default=2_000,
                        help="instances for the pydicom path (0: all), scaled to --instances")
    args = parser.parse_args()
    n = args.instances

    body = make_body(n)
    print(f"{n} instances of CT_small.dcm metadata, one JSON body of {len(body) / 1e6:.1f} MB")

    # the baseline: plain json.loads
    t_loads, objs = timed(json.loads, body)
    del objs
    # dicomframes' path, as the client runs it: dicomjson.loads (orjson when installed) then
    # to_dataframe, the garbage collector on
    t_ours_loads, objs = timed(dicomjson.loads, body)
    t_table, df = timed(to_dataframe, objs)
    t_ours = t_ours_loads + t_table
    shape = df.shape
    del objs, df
    # for context: much of json.loads' time is the garbage collector re-scanning the objects
    t_loads_nogc, objs = timed(loads_without_gc, body)
    del objs

    sample = n if args.pydicom_sample <= 0 else min(n, args.pydicom_sample)
    sample_body = body if sample == n else make_body(sample)
    t_sample, ref = timed(pydicom_path, sample_body)
    t_pydicom = t_sample * n / sample
    scaled = "" if sample == n else f" (measured on {sample}, scaled x{n / sample:g})"

    print(f"json.loads alone:                {t_loads:8.2f} s")
    print(f"  (garbage collector paused:     {t_loads_nogc:8.2f} s)")
    print(f"to_dataframe alone:              {t_table:8.2f} s   -> DataFrame {shape}")
    print(f"dicomframes (loads + table):     {t_ours:8.2f} s")
    print(f"pydicom path:                    {t_pydicom:8.2f} s{scaled} -> {ref.shape[1]} columns")
    print(f"dicomframes / json.loads:        {t_ours / t_loads:8.2f} x   (target <= 2)")
    print(f"  (vs json.loads without gc:     {(t_loads_nogc + t_table) / t_loads_nogc:8.2f} x)")
    print(f"pydicom path / dicomframes:      {t_pydicom / t_ours:8.2f} x   (target >= 5)")


if __name__ == "__main__":
    main()
