"""The change feed at archive size, on the embedded server (in a child process):

The server runs in a child process.

1. ``harvest(update=True)`` after 1% of the instances changed (0.4% added in new studies,
   0.4% deleted as whole series, 0.2% deleted and stored again) against a full harvest of
   the changed archive: seconds and HTTP requests, and the check that both datasets hold the
   same rows;
2. feed throughput: ``client.changefeed()`` of the whole feed, entries per second;
3. the cost the feed adds to STOW: instances/s of ``client.store`` into an empty archive,
   this tree against ``--baseline`` (the source folder of a dicomframes without the feed,
   e.g. the main checkout before it was merged), alternated, median of ``--repeat`` (4).

    python benchmarks/changefeed.py                       # 10,000 instances
    python benchmarks/changefeed.py --size 100000 --baseline /path/to/dicomframes-without-feed
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harvest import INSTANCES, SERIES, build, template, uid  # noqa: E402

import dicomframes  # noqa: E402

_CHILD = ("import sys\nfrom dicomframes.server import serve\n"
          "with serve(sys.argv[1]) as server:\n"
          "    print(server.url, flush=True)\n"
          "    sys.stdin.read()\n")


class ChildServer:
    """``serve(folder)`` in a child process importing dicomframes from ``source``."""

    def __init__(self, folder: Path, source: Path | None = None) -> None:
        env = dict(os.environ)
        if source is not None:
            env["PYTHONPATH"] = str(source)
        self.process = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server did not start (said {self.url!r})")

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def new_instances(count: int, first: int, per_study: int = 20) -> list[bytes]:
    """``count`` tiny instances in new studies of ``per_study`` (UIDs from ``first`` on)."""
    body, marks = template()
    out = []
    for n in range(count):
        study = first + n // per_study
        out.append(body.replace(marks["9.8"], uid(study, 1))
                   .replace(marks["9.7"], uid(study, 2)).replace(marks["9.6"], uid(n, 4)))
    return out


def change_one_percent(client: dicomframes.Client, size: int, root: Path) -> dict[str, int]:
    """Add 0.4%, delete 0.4% (whole series), delete and store again 0.2% of ``size``."""
    added = max(1, size * 4 // 1000)
    client.store(new_instances(added, 10**6), progress=False, workers=2)
    deleted = 0
    series = client.search_series(limit=size)  # the first studies' series
    pick = 0
    while deleted < size * 4 // 1000 and pick < len(series):
        row = series.iloc[pick]
        client.delete(row["StudyInstanceUID"], row["SeriesInstanceUID"])
        deleted += INSTANCES
        pick += 1
    restored = max(1, size * 2 // 1000)
    instances = client.search_instances(limit=restored, offset=size // 2)  # mid-archive
    files = []
    for _, row in instances.iterrows():
        path = next((root / "files" / row["StudyInstanceUID"] / row["SeriesInstanceUID"])
                    .glob(f"{row['SOPInstanceUID']}.dcm"))
        files.append(path.read_bytes())
        client.delete(row["StudyInstanceUID"], row["SeriesInstanceUID"], row["SOPInstanceUID"])
    client.store(files, progress=False)
    return {"added": added, "deleted": deleted, "stored again": len(files)}


def stow_rate(source: Path | None, items: list[bytes]) -> float:
    """Instances per second of one ``client.store`` of ``items`` into an empty archive."""
    folder = Path(tempfile.mkdtemp(prefix="cf-stow-"))
    server = ChildServer(folder / "archive", source)
    try:
        client = dicomframes.connect(server.url, progress=False)
        started = time.perf_counter()
        client.store(items, progress=False, workers=4, batch_size=100)
        return len(items) / (time.perf_counter() - started)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="instances (default 10,000)")
    parser.add_argument("--stow", type=int, default=2_000,
                        help="instances stored per STOW measurement (default 2,000)")
    parser.add_argument("--repeat", type=int, default=4, help="STOW runs per tree")
    parser.add_argument("--baseline", type=Path,
                        help="source folder of a dicomframes without the change feed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    try:
        root = work / "archive"
        started = time.perf_counter()
        build(root, args.size)
        print(f"archive: {args.size} instances ({SERIES} series x {INSTANCES} per study) "
              f"built in {time.perf_counter() - started:.1f} s")
        server = ChildServer(root)  # its own process: no interpreter lock shared
        try:
            client = dicomframes.connect(server.url, progress=False)
            client.harvest(work / "mirror", progress=False)
            changes = change_one_percent(client, args.size, root)
            print("changes:", ", ".join(f"{n} {what}" for what, n in changes.items()))
            update = client.harvest(work / "mirror", update=True, progress=False)
            fresh = client.harvest(work / "fresh", progress=False)
            import pandas as pd

            same = (sorted(pd.read_parquet(work / "mirror")["SOPInstanceUID"])
                    == sorted(pd.read_parquet(work / "fresh")["SOPInstanceUID"]))
            print(f"full harvest: {fresh.seconds:.2f} s, {fresh.requests} requests, "
                  f"{fresh.rows} rows")
            print(f"update:       {update.seconds:.2f} s, {update.requests} requests "
                  f"({update.changed_studies} studies fetched again); "
                  f"{update.seconds / fresh.seconds:.1%} of the time, "
                  f"{update.requests / fresh.requests:.1%} of the requests; "
                  f"same rows as the full harvest: {same}")
            started = time.perf_counter()
            feed = client.changefeed(progress=False)
            seconds = time.perf_counter() - started
            print(f"feed: {len(feed)} entries read in {seconds:.2f} s "
                  f"({len(feed) / seconds:,.0f} entries/s)")
        finally:
            server.stop()
        items = new_instances(args.stow, 2 * 10**6, per_study=100)
        if args.baseline is None:
            print("STOW cost of the feed: give --baseline (a dicomframes source without it)")
            return 0
        here: list[float] = []
        there: list[float] = []
        for run in range(args.repeat):  # alternated, each tree first every other run
            order = [(here, HERE.parent), (there, args.baseline)]
            for rates, source in order if run % 2 == 0 else order[::-1]:
                rates.append(stow_rate(source, items))
        a, b = statistics.median(here), statistics.median(there)
        print(f"STOW of {args.stow} instances: {a:,.0f}/s with the feed, {b:,.0f}/s without "
              f"(median of {args.repeat}); the feed costs {1 - a / b:+.1%} of the throughput")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
