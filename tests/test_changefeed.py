"""The change feed (the Azure DICOM service model): the embedded server's ``/changefeed`` and
``/changefeed/latest`` against the documented paging and states, the client's typed reads,
and ``harvest(update=True)`` against a fresh harvest (embedded server, and Orthanc, which has
no feed: the study counts are compared)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from archive_builder import build_archive, tiny
from support import make_instances

import dicomframes
from dicomframes.client.parts import MIRROR, read_state
from dicomframes.server import import_folder, serve
from dicomframes.standard.uids import new_uid

pytest.importorskip("pyarrow")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dicomframes.Server]:
    with serve(tmp_path / "archive") as running:
        yield running


def feed(url: str, **params: object) -> list[dict]:
    """A raw ``GET changefeed`` answer (plain requests, no dicomframes client)."""
    answer = requests.get(f"{url}/changefeed", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def status(url: str, **params: object) -> int:
    return requests.get(f"{url}/changefeed", params=params, timeout=30).status_code


def sorted_frame(folder: Path, key: str = "SOPInstanceUID") -> pd.DataFrame:
    frame = pd.read_parquet(folder)
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def assert_same_dataset(updated: Path, fresh: Path, key: str = "SOPInstanceUID") -> None:
    """Same rows, same columns in the same order, same dtypes, same Arrow schema."""
    import pyarrow.parquet as pq

    a, b = sorted_frame(updated, key), sorted_frame(fresh, key)
    assert list(a.columns) == list(b.columns)
    assert list(a.dtypes) == list(b.dtypes)
    pd.testing.assert_frame_equal(a, b)
    schema_a = pq.read_schema(next(updated.glob("part-*.parquet"))).remove_metadata()
    schema_b = pq.read_schema(next(fresh.glob("part-*.parquet"))).remove_metadata()
    assert schema_a.equals(schema_b)


# ------------------------------------------------------------------------ the server's feed

def test_creates_deletes_and_states_follow_the_documented_model(server) -> None:
    client = dicomframes.connect(server.url, progress=False)
    assert requests.get(f"{server.url}/changefeed/latest", timeout=30).status_code == 204
    assert client.changefeed_latest() is None
    empty = client.changefeed()
    assert len(empty) == 0 and str(empty["Sequence"].dtype) == "Int64"
    study, series = new_uid(), new_uid()
    items = make_instances(4, study=study, series=series)
    client.store(items, progress=False)
    entries = feed(server.url, includeMetadata="false")
    assert [e["Sequence"] for e in entries] == [1, 2, 3, 4]
    assert {e["Action"] for e in entries} == {"create"}
    assert {e["State"] for e in entries} == {"current"}
    assert all("Metadata" not in e for e in entries)
    stamps = [dt.datetime.fromisoformat(e["Timestamp"].replace("Z", "+00:00"))
              for e in entries]
    assert stamps == sorted(stamps) and all(s.tzinfo is not None for s in stamps)
    victim = entries[1]["SopInstanceUid"]
    client.delete(study, series, victim)
    again = next(i for i in items if victim.encode() in i)
    client.store([again], progress=False)  # the same instance stored again: a new version
    entries = feed(server.url, includeMetadata="false")
    by_seq = {e["Sequence"]: e for e in entries}
    assert (by_seq[5]["Action"], by_seq[5]["SopInstanceUid"]) == ("delete", victim)
    assert (by_seq[6]["Action"], by_seq[6]["State"]) == ("create", "current")
    assert by_seq[2]["State"] == by_seq[5]["State"] == "replaced"  # a newer version exists
    client.delete(study, series)
    entries = feed(server.url, includeMetadata="false")
    assert [e["Action"] for e in entries[6:]] == ["delete"] * 4
    assert {e["State"] for e in entries} == {"deleted"}  # the instances are gone
    latest = requests.get(f"{server.url}/changefeed/latest", timeout=30).json()
    assert latest["Sequence"] == 10 and latest["Action"] == "delete"


def test_metadata_of_current_entries_is_what_wado_gives(server) -> None:
    client = dicomframes.connect(server.url, progress=False)
    study, series = new_uid(), new_uid()
    client.store(make_instances(3, study=study, series=series), progress=False)
    first = feed(server.url)[0]["SopInstanceUid"]
    client.delete(study, series, first)
    entries = feed(server.url)  # includeMetadata defaults to true, as documented
    for entry in entries:
        if entry["State"] == "current":
            wado = requests.get(f"{server.url}/studies/{study}/series/{series}/instances/"
                                f"{entry['SopInstanceUid']}/metadata", timeout=30).json()[0]
            assert entry["Metadata"] == wado  # absolute BulkDataURIs included
        else:
            assert "Metadata" not in entry
    typed = client.changefeed(include_metadata=True)
    meta = client.metadata(study, series)
    for column in meta.columns:
        assert column in typed.columns
        assert typed[column].dtype == meta[column].dtype, column
    current = typed[typed["State"] == "current"].sort_values("SOPInstanceUID")
    assert list(current["SOPInstanceUID"]) == sorted(meta["SOPInstanceUID"])
    assert typed.loc[typed["State"] != "current", "SOPInstanceUID"].isna().all()


def test_v1_pages_by_sequence_and_v2_by_count_and_time(server) -> None:
    client = dicomframes.connect(server.url, progress=False)
    for _ in range(3):
        client.store(make_instances(50), progress=False)
    v1, v2 = f"{server.url}/v1", f"{server.url}/v2"
    # v1: offset is the Sequence to start after, limit a span of Sequences (default 10)
    assert [e["Sequence"] for e in feed(v1, includeMetadata="false")] == list(range(1, 11))
    assert [e["Sequence"] for e in feed(v1, offset=10, limit=5)] == list(range(11, 16))
    assert len(feed(v1, offset=0, limit=100)) == 100
    assert feed(v1, offset=150, limit=10) == []
    assert status(v1, limit=101) == status(v1, limit=0) == status(v1, offset=-1) == 400
    assert status(v1, startTime="2020-01-01T00:00:00Z") == 400
    # v2 (and the root): offset counts entries skipped, limit default 100, at most 200
    for url in (v2, server.url):
        assert [e["Sequence"] for e in feed(url, includeMetadata="false")] == \
            list(range(1, 101))
        assert [e["Sequence"] for e in feed(url, offset=140, limit=200)] == \
            list(range(141, 151))
        assert status(url, limit=201) == status(url, limit="ten") == 400
    every = feed(v2, limit=200, includeMetadata="false")
    stamps = [e["Timestamp"] for e in every]
    middle = stamps[60]
    inside = feed(v2, startTime=middle, limit=200, includeMetadata="false")
    assert inside[0]["Timestamp"] == middle  # startTime is inclusive
    assert [e["Sequence"] for e in inside] == [e["Sequence"] for e in every
                                               if e["Timestamp"] >= middle]
    before = feed(v2, endTime=middle, limit=200, includeMetadata="false")
    assert [e["Sequence"] for e in before] == [e["Sequence"] for e in every
                                               if e["Timestamp"] < middle]  # exclusive
    assert status(v2, startTime="yesterday") == 400
    assert status(v2, startTime=stamps[-1], endTime=stamps[0]) == 400 or \
        stamps[-1] == stamps[0]


def test_client_reads_windows_and_pins_the_end(server) -> None:
    client = dicomframes.connect(server.url, progress=False)
    for _ in range(3):
        client.store(make_instances(90), progress=False)
    every = client.changefeed()
    assert list(every["Sequence"]) == list(range(1, 271))
    assert str(every["Sequence"].dtype) == "Int64"
    assert isinstance(every["Action"].dtype, pd.CategoricalDtype)
    assert isinstance(every["State"].dtype, pd.CategoricalDtype)
    assert str(every["Timestamp"].dtype).startswith("datetime64") and \
        str(every["Timestamp"].dt.tz) == "UTC"
    assert str(every["SopInstanceUid"].dtype) == "string"
    assert list(client.changefeed(start=100, end=230)["Sequence"]) == list(range(101, 231))
    v1 = dicomframes.connect(f"{server.url}/v1", progress=False)
    assert list(v1.changefeed(start=100, end=230)["Sequence"]) == list(range(101, 231))
    assert list(v1.changefeed(start=265)["Sequence"]) == list(range(266, 271))
    with pytest.raises(ValueError, match="v2"):
        v1.changefeed(start=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    moment = every["Timestamp"].iloc[150].to_pydatetime()
    windowed = client.changefeed(start=moment)
    assert list(windowed["Sequence"]) == list(
        every.loc[every["Timestamp"] >= every["Timestamp"].iloc[150], "Sequence"])
    ending = client.changefeed(end=moment.isoformat())
    assert list(ending["Sequence"]) == list(
        every.loc[every["Timestamp"] < every["Timestamp"].iloc[150], "Sequence"])
    assert client.changefeed_latest()["Sequence"] == 270


def test_client_finds_a_start_sequence_in_a_feed_with_gaps(tmp_path: Path) -> None:
    """v2 has no "after this Sequence" parameter: the client bisects by entries; a feed with
    gaps in its Sequences (as a server's may have) still gives exactly the entries after."""
    root = tmp_path / "archive"
    with serve(root) as running:
        dicomframes.connect(running.url, progress=False).store(make_instances(60),
                                                               progress=False)
    with sqlite3.connect(root / "index.sqlite3") as db:  # the feed rows of 11-20, 31, 40-44
        db.execute("DELETE FROM changefeed WHERE seq BETWEEN 11 AND 20 OR seq = 31 "
                   "OR seq BETWEEN 40 AND 44")
    with serve(root) as running:
        client = dicomframes.connect(running.url, progress=False)
        left = [s for s in range(1, 61) if not (11 <= s <= 20 or s == 31 or 40 <= s <= 44)]
        for start in (0, 5, 10, 15, 25, 31, 39, 45, 59, 60):
            got = list(client.changefeed(start=start)["Sequence"])
            assert got == [s for s in left if s > start], start


def test_an_archive_from_before_the_feed_gets_one_create_per_instance(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    made = build_archive(root, 4, 2, 3)
    with sqlite3.connect(root / "index.sqlite3") as db:
        db.execute("DROP TABLE changefeed")  # as an archive indexed by an older version
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'changefeed'")
    with serve(root) as running:
        frame = dicomframes.connect(running.url, progress=False).changefeed()
    assert len(frame) == sum(made.values())
    assert set(frame["Action"]) == {"create"} and set(frame["State"]) == {"current"}
    assert set(frame["StudyInstanceUid"]) == set(made)


def test_import_records_creates(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for number, data in enumerate(make_instances(5)):
        (incoming / f"{number}.dcm").write_bytes(data)
    import_folder(incoming, tmp_path / "archive")
    with serve(tmp_path / "archive") as running:
        entries = feed(running.url, includeMetadata="false")
    assert [e["Action"] for e in entries] == ["create"] * 5


def test_a_server_without_a_feed_raises_a_typed_error(orthanc) -> None:
    client = dicomframes.connect(orthanc.dicomweb_url, progress=False)
    with pytest.raises(dicomframes.ChangeFeedUnavailable, match="no change feed"):
        client.changefeed()
    with pytest.raises(dicomframes.ChangeFeedUnavailable):
        client.changefeed_latest()


# ------------------------------------------------------------------ harvest(update=True)

def store_study(client: dicomframes.Client, instances: int = 4, date: str = "20200202",
                series: int = 1) -> str:
    study = new_uid()
    items = [tiny(study, uid, i + 1, date, "CT", 7) for uid in [new_uid()] * series
             for i in range(instances)]
    client.store(items, progress=False)
    return study


@pytest.mark.parametrize("level,metadata", [("instances", False), ("series", False),
                                            ("studies", False), ("instances", True)])
def test_update_equals_a_fresh_harvest(tmp_path: Path, level: str, metadata: bool) -> None:
    root = tmp_path / "archive"
    made = sorted(build_archive(root, 12, 2, 3, undated_every=5))
    key = {"instances": "SOPInstanceUID", "series": "SeriesInstanceUID",
           "studies": "StudyInstanceUID"}["instances" if metadata else level]
    with serve(root) as running:
        client = dicomframes.connect(running.url, progress=False)
        options = {"level": level, "metadata": metadata, "progress": False}
        first = client.harvest(tmp_path / "mirror", **options)
        assert read_state(tmp_path / "mirror")["pin"] == {"method": "changefeed",
                                                          "sequence": 72}
        client.delete(made[0])
        series = client.search_series(made[1])["SeriesInstanceUID"].iloc[0]
        client.delete(made[1], series)
        store_study(client)
        summary = client.harvest(tmp_path / "mirror", update=True, **options)
        assert summary.method == "changefeed" and summary.changed_studies == 3
        assert summary.requests < first.requests + 10
        client.harvest(tmp_path / "fresh", **options)
        assert_same_dataset(tmp_path / "mirror", tmp_path / "fresh", key)
        unchanged = client.harvest(tmp_path / "mirror", update=True, **options)
        assert (unchanged.changed_studies, unchanged.requests) == (0, 1)


def test_requests_of_an_update_grow_with_the_changes_not_the_archive(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    build_archive(root, 200, 2, 5)  # 2,000 instances
    with serve(root) as running:
        client = dicomframes.connect(running.url, progress=False)
        full = client.harvest(tmp_path / "mirror", progress=False, page_size=100)
        store_study(client)
        one = client.harvest(tmp_path / "mirror", update=True, progress=False, page_size=100)
        for _ in range(5):
            store_study(client)
        five = client.harvest(tmp_path / "mirror", update=True, progress=False,
                              page_size=100)
        client.harvest(tmp_path / "fresh", progress=False)
    assert_same_dataset(tmp_path / "mirror", tmp_path / "fresh")
    assert one.changed_studies == 1 and five.changed_studies == 5
    assert one.requests * 4 < full.requests  # the full harvest reads 2,000 rows in pages
    assert five.requests <= one.requests + 5  # a few more per study group, not per row


def test_an_interrupted_update_is_finished_by_the_next(tmp_path: Path) -> None:
    """A crash after the old rows were removed and before the new part and the state were
    written: the next update redoes it."""
    root = tmp_path / "archive"
    made = sorted(build_archive(root, 10, 1, 4))
    mirror = tmp_path / "mirror"
    with serve(root) as running:
        client = dicomframes.connect(running.url, progress=False)
        client.harvest(mirror, progress=False)
        before = (mirror / MIRROR).read_text()
        client.delete(made[3])
        added = store_study(client)
        client.harvest(mirror, update=True, progress=False)
        new_parts = [p for p in mirror.glob("part-u*.parquet")
                     if added in set(pd.read_parquet(p)["StudyInstanceUID"])]
        assert new_parts
        for part in new_parts:
            part.unlink()  # never written
        (mirror / MIRROR).write_text(before)  # the state never advanced
        assert added not in set(pd.read_parquet(mirror)["StudyInstanceUID"])
        again = client.harvest(mirror, update=True, progress=False)
        assert again.changed_studies == 2
        client.harvest(tmp_path / "fresh", progress=False)
    assert_same_dataset(mirror, tmp_path / "fresh")


def test_update_of_an_unfinished_harvest_finishes_it(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    build_archive(root, 6, 1, 3)
    with serve(root) as running:
        client = dicomframes.connect(running.url, progress=False)
        client.harvest(tmp_path / "mirror", progress=False, rows_per_partition=3)
        state = read_state(tmp_path / "mirror")
        (tmp_path / "mirror" / MIRROR).write_text(json.dumps({**state, "complete": False}))
        next(iter((tmp_path / "mirror").glob("part-*.parquet"))).unlink()
        store_study(client)
        summary = client.harvest(tmp_path / "mirror", update=True, progress=False,
                                 rows_per_partition=3)
        assert summary.method == "harvest" and summary.fetched >= 1
        client.harvest(tmp_path / "fresh", progress=False, rows_per_partition=3)
        # the resumed harvest pinned its start before the new study: the next update adds it
        client.harvest(tmp_path / "mirror", update=True, progress=False, rows_per_partition=3)
    assert_same_dataset(tmp_path / "mirror", tmp_path / "fresh")


def test_a_plain_rerun_after_an_update_harvests_anew(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    made = sorted(build_archive(root, 6, 1, 3))
    with serve(root) as running:
        client = dicomframes.connect(running.url, progress=False)
        client.harvest(tmp_path / "mirror", progress=False)
        client.delete(made[0])
        client.harvest(tmp_path / "mirror", update=True, progress=False)
        summary = client.harvest(tmp_path / "mirror", progress=False)
        assert summary.fetched == summary.parts
        client.harvest(tmp_path / "fresh", progress=False)
    assert_same_dataset(tmp_path / "mirror", tmp_path / "fresh")


def _orthanc_delete_study(orthanc: object, study: str) -> None:
    found = orthanc.rest("POST", "/tools/lookup", data=study).json()  # type: ignore[attr-defined]
    for item in found:
        if item["Type"] == "Study":
            orthanc.rest("DELETE", f"/studies/{item['ID']}")  # type: ignore[attr-defined]


def test_update_without_a_feed_compares_study_counts(orthanc, tmp_path: Path) -> None:
    client = dicomframes.connect(orthanc.dicomweb_url, progress=False)
    patient = f"CF{new_uid()[-8:]}"
    studies = []
    for k in range(4):
        study = new_uid()
        client.store(make_instances(3, study=study, patient_id=patient,
                                    study_date=f"2018030{k + 1}"), progress=False)
        studies.append(study)
    options = {"progress": False, "PatientID": patient}
    client.harvest(tmp_path / "mirror", **options)
    assert read_state(tmp_path / "mirror")["pin"]["method"] == "counts"
    _orthanc_delete_study(orthanc, studies[0])
    client.store(make_instances(2, study=studies[1], patient_id=patient,
                                study_date="20180302"), progress=False)  # 3 -> 5 instances
    client.store(make_instances(2, patient_id=patient, study_date="20180309"), progress=False)
    summary = client.harvest(tmp_path / "mirror", update=True, **options)
    assert summary.method == "counts" and summary.changed_studies == 3
    assert "updated by counts" in str(summary)
    client.harvest(tmp_path / "fresh", **options)
    assert_same_dataset(tmp_path / "mirror", tmp_path / "fresh")
    unchanged = client.harvest(tmp_path / "mirror", update=True, **options)
    assert unchanged.changed_studies == 0


def test_harvest_command_updates_a_dataset(tmp_path: Path, capsys) -> None:
    from dicomframes.cli import main

    root = tmp_path / "archive"
    build_archive(root, 5, 2, 2)
    with serve(root) as running:
        command = ["harvest", running.url, str(tmp_path / "mirror"), "--level", "series",
                   "--filter", "Modality=CT", "--quiet"]
        assert main(command) == 0
        assert "rows in" in capsys.readouterr().out
        client = dicomframes.connect(running.url, progress=False)
        store_study(client, series=2)
        assert main([*command, "--update"]) == 0
        assert "updated by changefeed: 1 studies" in capsys.readouterr().out
        client.harvest(tmp_path / "fresh", level="series", Modality="CT", progress=False)
    assert_same_dataset(tmp_path / "mirror", tmp_path / "fresh", "SeriesInstanceUID")
    assert set(pd.read_parquet(tmp_path / "mirror")["Modality"]) == {"CT"}


def test_dask_read_pinned_to_a_sequence_reports_partitions_that_changed(
        tmp_path: Path) -> None:
    import warnings

    from dicomframes.dask import read_dicomweb
    from dicomframes.errors import ArchiveChanged

    root = tmp_path / "archive"
    made = sorted(build_archive(root, 8, 1, 3))
    with serve(root) as running:
        frame = read_dicomweb(running.url, pin=True, rows_per_partition=6)
        assert frame.npartitions == 4
        client = dicomframes.connect(running.url, progress=False)
        client.delete(made[2])  # one study's 3 instances go
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = frame.compute(scheduler="sync")
        changed = [w for w in caught if issubclass(w.category, ArchiveChanged)]
        assert len(changed) == 1
        assert "3 changes after Sequence 24 (3 delete)" in str(changed[0].message)
        assert len(rows) == 21
        quiet = read_dicomweb(running.url, pin=True, rows_per_partition=6)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ArchiveChanged)
            assert len(quiet.compute(scheduler="sync")) == 21
