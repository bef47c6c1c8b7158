"""``client.harvest``: a whole archive as a Parquet dataset, against the embedded server, two
loopback proxies with real servers' paging quirks (``limit`` capped at 200, ``offset``
ignored), a harvest killed halfway and resumed, and Orthanc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pandas as pd
import pytest
import requests
from archive_builder import build_archive

import dicomframes
from dicomframes.client.harvest import JOURNAL, fetch_partition
from dicomframes.client.partitions import plan_partitions
from dicomframes.convert.arrow import empty_frame
from dicomframes.convert.tables import to_dataframe
from dicomframes.server import serve

pytest.importorskip("pyarrow")

STUDIES, SERIES, INSTANCES = 150, 2, 10  # 3,000 instances; every 10th study has no StudyDate


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """An embedded server on a generated archive: (URL, {study UID: instances})."""
    root = tmp_path_factory.mktemp("harvest") / "archive"
    made = build_archive(root, STUDIES, SERIES, INSTANCES, undated_every=10)
    with serve(root) as server:
        yield server.url, made


class Proxy:
    """A loopback HTTP proxy in front of a DICOMweb server that behaves like some real ones:
    ``cap`` caps ``limit`` (and gives at most that many rows without one); ``ignore_offset``
    drops ``offset``; ``delay`` seconds before each answer; ``html`` answers every search of
    series with a 200 HTML page (a login page of a misconfigured gateway)."""

    def __init__(self, backend: str, cap: int | None = None, ignore_offset: bool = False,
                 delay: float = 0.0, html: bool = False) -> None:
        self.requests = 0
        self.delay = delay
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.requests += 1
                parts = urlsplit(self.path)
                query = parse_qsl(parts.query, keep_blank_values=True)
                if ignore_offset:
                    query = [(k, v) for k, v in query if k != "offset"]
                if cap is not None:
                    limits = [int(v) for k, v in query if k == "limit"]
                    query = [(k, v) for k, v in query if k != "limit"]
                    query.append(("limit", str(min([cap, *limits]))))
                if proxy.delay:
                    time.sleep(proxy.delay)
                if html and parts.path.endswith("/series"):
                    page = b"<html><body>Please log in</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                answer = requests.get(f"{backend}{parts.path}?{urlencode(query, safe='*,-')}",
                                      headers={"Accept": self.headers.get("Accept", "*/*")},
                                      timeout=60)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_dataset(folder: Path, made: dict[str, int]) -> pd.DataFrame:
    """Every instance of the archive exactly once, typed like to_dataframe."""
    df = pd.read_parquet(folder)
    assert df["SOPInstanceUID"].is_unique
    assert len(df) == sum(made.values())
    assert df.groupby("StudyInstanceUID").size().to_dict() == made
    return df


def test_harvest_every_instance_once_typed_like_to_dataframe(archive, tmp_path):
    url, made = archive
    client = dicomframes.connect(url, progress=False)
    # a small page makes the planner halve StudyDate ranges many times
    summary = client.harvest(tmp_path / "out", progress=False, page_size=40,
                             rows_per_partition=500)
    df = check_dataset(tmp_path / "out", made)
    assert summary.rows == len(df) and summary.parts == len(list(tmp_path.glob("out/*.parquet")))
    assert summary.fetched == summary.parts and summary.requests > 0
    undated = df[df["StudyDate"].isna()]["StudyInstanceUID"].nunique()
    assert undated == STUDIES // 10
    # dtypes: those of to_dataframe on the server's own answer
    one = client.search_instances(study=next(iter(made)))
    for column in one.columns:
        assert df[column].dtype == one[column].dtype, column
    meta = empty_frame("instances")
    assert set(meta.columns) <= set(df.columns)
    assert all(df[c].dtype == meta[c].dtype for c in meta.columns)
    assert (tmp_path / "out" / JOURNAL).exists()
    # a second run finds everything done
    again = client.harvest(tmp_path / "out", progress=False, page_size=40,
                           rows_per_partition=500)
    assert again.fetched == 0 and again.rows == summary.rows
    check_dataset(tmp_path / "out", made)


def test_harvest_levels_and_filters(archive, tmp_path):
    url, made = archive
    client = dicomframes.connect(url, progress=False)
    client.harvest(tmp_path / "studies", level="studies", progress=False)
    studies = pd.read_parquet(tmp_path / "studies")
    assert sorted(studies["StudyInstanceUID"]) == sorted(made)
    assert studies["NumberOfStudyRelatedInstances"].dtype == "Int64"
    client.harvest(tmp_path / "series", level="series", progress=False)
    series = pd.read_parquet(tmp_path / "series")
    assert len(series) == STUDIES * SERIES and series["SeriesInstanceUID"].is_unique
    client.harvest(tmp_path / "mr", progress=False, Modality="MR",
                   StudyDate=("2015-01-01", "2015-12-31"))
    mr = pd.read_parquet(tmp_path / "mr")
    assert len(mr) and set(mr["Modality"]) == {"MR"}
    assert mr["StudyDate"].dt.year.eq(2015).all()
    expected = client.search_instances(Modality="MR", StudyDate=("2015-01-01", "2015-12-31"))
    assert sorted(mr["SOPInstanceUID"]) == sorted(expected["SOPInstanceUID"])


def test_harvest_through_a_server_that_caps_limit_at_200(archive, tmp_path):
    url, made = archive
    with Proxy(url, cap=200) as proxy:
        client = dicomframes.connect(proxy.url, progress=False)
        client.harvest(tmp_path / "out", progress=False, page_size=1000)
    check_dataset(tmp_path / "out", made)


def test_harvest_and_search_read_an_html_answer_the_same_way(archive, tmp_path):
    # one DICOM JSON reader: harvest (and Dask) raise what client.search_* raises
    url, _ = archive
    with Proxy(url, html=True) as proxy:
        client = dicomframes.connect(proxy.url, progress=False, retries=0)
        with pytest.raises(dicomframes.InvalidResponse, match="not valid JSON"):
            client.search_series()
        with pytest.raises(dicomframes.InvalidResponse, match="not valid JSON"):
            client.harvest(tmp_path / "out", level="series", progress=False)


def test_harvest_through_a_server_that_ignores_offset(archive, tmp_path):
    url, made = archive
    with Proxy(url, ignore_offset=True) as proxy:
        client = dicomframes.connect(proxy.url, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # nothing may be missing
            client.harvest(tmp_path / "out", progress=False, page_size=1000,
                           rows_per_partition=300)
        check_dataset(tmp_path / "out", made)
        # pages smaller than the list of studies: dated studies are still all found (by
        # StudyDate ranges), but those without StudyDate can only be listed by paging, which
        # this server cannot do: the harvest says so
        with pytest.warns(RuntimeWarning, match="without a StudyDate"):
            client.harvest(tmp_path / "small", progress=False, page_size=100,
                           rows_per_partition=300)
    df = pd.read_parquet(tmp_path / "small")
    assert df["SOPInstanceUID"].is_unique
    dated = df[df["StudyDate"].notna()].groupby("StudyInstanceUID").size().to_dict()
    assert len(dated) == STUDIES - STUDIES // 10
    assert all(made[study] == n for study, n in dated.items())


def test_harvest_through_a_server_that_caps_limit_and_ignores_offset(archive, tmp_path):
    url, made = archive
    with Proxy(url, cap=200, ignore_offset=True) as proxy:
        client = dicomframes.connect(proxy.url, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            client.harvest(tmp_path / "out", progress=False, page_size=1000)
    check_dataset(tmp_path / "out", made)


HARVEST_SCRIPT = """
import sys
import dicomframes
client = dicomframes.connect(sys.argv[1], progress=False)
client.harvest(sys.argv[2], progress=False, workers=1, rows_per_partition=100)
"""


def _journal_lines(folder: Path) -> int:
    try:
        return len((folder / JOURNAL).read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_harvest_resumes_after_the_process_is_killed(archive, tmp_path):
    url, made = archive
    out = tmp_path / "out"
    with Proxy(url, delay=0.02) as proxy:  # slow enough to be caught halfway
        child = subprocess.Popen([sys.executable, "-c", HARVEST_SCRIPT, proxy.url, str(out)],
                                 env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        try:
            # the journal's lines, not the part files: a part is renamed into place a moment
            # before its line is written
            while child.poll() is None and _journal_lines(out) < 6:
                time.sleep(0.01)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        journal = (out / JOURNAL).read_text().splitlines()
        written = len(journal) - 1
        plan = plan_partitions(dicomframes.connect(url, progress=False), rows_per_partition=100)
        assert 5 <= written < len(plan), "the harvest was not interrupted halfway"
        proxy.delay = 0.0
        client = dicomframes.connect(proxy.url, progress=False)
        summary = client.harvest(out, progress=False, workers=1, rows_per_partition=100)
    assert summary.fetched <= len(plan) - written + 1  # at most the part being written redone
    assert summary.parts == len(plan)
    df = check_dataset(out, made)
    clean = dicomframes.connect(url, progress=False).harvest(
        tmp_path / "clean", progress=False, rows_per_partition=100)
    reference = pd.read_parquet(tmp_path / "clean")
    assert clean.rows == len(df)
    key = ["StudyInstanceUID", "SOPInstanceUID"]
    left = df.sort_values(key).reset_index(drop=True)
    right = reference.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right)
    assert not list(out.glob(".*.tmp"))


def test_harvest_fetches_again_parts_a_power_cut_left_broken(archive, tmp_path):
    url, made = archive
    client = dicomframes.connect(url, progress=False)
    out = tmp_path / "out"
    first = client.harvest(out, progress=False, rows_per_partition=300)
    parts = sorted(out.glob("part-*.parquet"))
    assert first.parts == len(parts) >= 3
    # as after a power cut: the journal lists parts that are gone, empty or cut short
    parts[0].unlink()
    parts[1].write_bytes(b"")
    parts[2].write_bytes(parts[2].read_bytes()[:100])
    again = client.harvest(out, progress=False, rows_per_partition=300)
    assert again.fetched == 3 and again.rows == first.rows
    check_dataset(out, made)


def test_harvest_metadata_keeps_every_attribute(archive, tmp_path):
    url, made = archive
    client = dicomframes.connect(url, progress=False)
    some = dict(list(made.items())[:12])
    summary = client.harvest(tmp_path / "md", metadata=True, progress=False,
                             rows_per_partition=40,
                             StudyInstanceUID=list(some))
    df = pd.read_parquet(tmp_path / "md")
    assert summary.rows == len(df) == sum(some.values())
    assert df["SOPInstanceUID"].is_unique
    assert list(df["ImageType"].iloc[0]) == ["ORIGINAL", "PRIMARY"]
    assert list(df["PixelSpacing"].iloc[0]) == [0.5, 0.5]
    assert df["PixelData"].str.contains("/studies/").all()  # the BulkDataURI
    reference = client.metadata(next(iter(some)))
    for column in reference.columns:
        assert column in df.columns
        if reference[column].dtype != object:
            assert df[column].dtype == reference[column].dtype, column


def test_partitions_api_for_dask(archive):
    url, made = archive
    client = dicomframes.connect(url, progress=False)
    plan = plan_partitions(client, "instances", rows_per_partition=400)
    assert len({p.key for p in plan}) == len(plan)
    assert [p.key for p in plan_partitions(client, "instances", rows_per_partition=400)] == [
        p.key for p in plan]
    import pickle

    assert pickle.loads(pickle.dumps(plan[0])) == plan[0]
    from dicomframes.convert.arrow import schema_for

    schema = schema_for("instances")
    meta = empty_frame("instances")
    frame = fetch_partition(client, plan[0], "instances", schema=schema)
    assert list(frame.columns) == list(meta.columns)
    assert list(frame.dtypes) == list(meta.dtypes)
    assert len(frame) == sum(made[s] for s in plan[0].study_uids)
    assert sum(len(p.study_uids) for p in plan) == len(made)


def test_harvest_orthanc(orthanc, tmp_path):
    from support import make_instances

    url = orthanc.dicomweb_url
    client = dicomframes.connect(url, progress=False)
    for k in range(6):
        client.store(make_instances(7, study_date=f"2019010{k + 1}"), progress=False)
    client.store(make_instances(3, study_date=""), progress=False)
    expected = client.search_instances()
    summary = client.harvest(tmp_path / "out", progress=False, page_size=4,
                             rows_per_partition=10)
    df = pd.read_parquet(tmp_path / "out")
    assert df["SOPInstanceUID"].is_unique
    assert sorted(df["SOPInstanceUID"]) == sorted(expected["SOPInstanceUID"])
    assert summary.rows == len(expected)
    typed = to_dataframe([], level="instance")
    for column in ("InstanceNumber", "SOPInstanceUID", "Rows"):
        assert df[column].dtype == typed[column].dtype
    for column in expected.columns:  # Orthanc's own answer, typed by to_dataframe
        # (attributes that may hold several values, e.g. SpecificCharacterSet, are lists)
        if expected[column].dtype != object and df[column].dtype != object:
            assert df[column].dtype == expected[column].dtype, column


def test_harvest_refuses_a_folder_of_another_harvest(archive, tmp_path):
    url, _ = archive
    client = dicomframes.connect(url, progress=False)
    client.harvest(tmp_path / "out", level="studies", progress=False)
    with pytest.raises(ValueError, match="another folder"):
        client.harvest(tmp_path / "out", level="series", progress=False)
    header = json.loads((tmp_path / "out" / JOURNAL).read_text().splitlines()[0])
    assert header["level"] == "study"


def test_harvest_pauses_the_garbage_collector_only_when_asked(archive, tmp_path):
    """The collector is a switch of the whole process: harvest leaves it alone unless given
    pause_gc=True, and turns it back on afterwards."""
    import gc

    url, _ = archive
    client = dicomframes.connect(url, progress=False)
    runs: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        client.harvest(tmp_path / "default", level="series", progress=False)
        left_alone = len(runs)
        assert gc.isenabled()
        runs.clear()
        client.harvest(tmp_path / "paused", level="series", progress=False, pause_gc=True)
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(count)
    assert left_alone > 0 and runs == []
