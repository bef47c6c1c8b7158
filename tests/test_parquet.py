"""Every DataFrame dicomframes returns round-trips through Parquet and Feather with its dtypes,
keeps no credential in the file, and ``df.dicom`` works on what comes back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import TUTORIAL_DATA, TUTORIAL_NAMES

import dicomframes
from dicomframes.server import serve

TOKEN = "s3cret-harvest-token-0042"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    """A client with a bearer token on an embedded server holding the tutorial's files."""
    with serve(tmp_path_factory.mktemp("parquet")) as server:
        c = dicomframes.connect(server.url, token=TOKEN, progress=False)
        c.outcomes = c.store([TUTORIAL_DATA / n for n in TUTORIAL_NAMES], progress=False)
        yield c


def frames(client, tmp_path: Path) -> dict[str, pd.DataFrame]:
    studies = client.search_studies()
    client.harvest(tmp_path / "harvest", progress=False)
    return {
        "studies": studies,
        "series": client.search_series(),
        "instances": client.search_instances(),
        "metadata": studies.dicom.metadata(),
        "harvest": pd.read_parquet(tmp_path / "harvest"),
    }


def same_values(a: pd.Series, b: pd.Series) -> bool:
    def norm(v):
        if isinstance(v, np.ndarray | list):
            return [norm(x) for x in v]
        return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
    return [norm(v) for v in a] == [norm(v) for v in b]


@pytest.mark.parametrize("fmt", ["parquet", "feather"])
def test_every_dataframe_round_trips_with_its_dtypes(client, tmp_path, fmt):
    for name, df in frames(client, tmp_path).items():
        target = tmp_path / f"{name}.{fmt}"
        getattr(df, f"to_{fmt}")(target)
        back = getattr(pd, f"read_{fmt}")(target)
        assert list(back.columns) == list(df.columns), name
        for column in df.columns:
            assert back[column].dtype == df[column].dtype, (name, column)
            assert same_values(back[column], df[column]), (name, column)


def test_store_outcomes_round_trip(client, tmp_path):
    df = client.outcomes
    df.to_parquet(tmp_path / "s.parquet")
    back = pd.read_parquet(tmp_path / "s.parquet")
    assert back.attrs["summary"] == df.attrs["summary"]
    assert list(back.dtypes) == list(df.dtypes)


def test_store_outcomes_can_be_written(client, tmp_path):
    df = client.outcomes
    df.to_parquet(tmp_path / "s.parquet")
    back = pd.read_parquet(tmp_path / "s.parquet")
    assert back.attrs["summary"] == df.attrs["summary"]
    assert list(back["SOPInstanceUID"]) == list(df["SOPInstanceUID"])


def test_no_credential_in_files_and_the_accessor_works_after_reading(client, tmp_path):
    studies = client.search_studies()
    studies.to_parquet(tmp_path / "s.parquet")
    studies.to_feather(tmp_path / "s.feather")
    for path in (tmp_path / "s.parquet", tmp_path / "s.feather"):
        assert TOKEN.encode() not in path.read_bytes()
    metadata = pq.read_schema(tmp_path / "s.parquet").metadata
    assert json.loads(metadata[b"PANDAS_ATTRS"])["dicomframes"]["url"] == client.url
    back = pd.read_parquet(tmp_path / "s.parquet")
    # a new client of that URL, without the token of the live one (never borrowed)
    assert back.dicom.client is not client and "no auth" in repr(back.dicom.client)
    series = back.dicom.use(client).dicom.series()
    assert sorted(series["SeriesInstanceUID"]) == sorted(client.search_series()[
        "SeriesInstanceUID"])
    # a harvest's folder keeps no credential either
    client.harvest(tmp_path / "h", progress=False)
    for part in (tmp_path / "h").iterdir():
        assert TOKEN.encode() not in part.read_bytes()


def test_accessor_uses_the_client_given(client, tmp_path):
    studies = client.search_studies()
    studies.to_parquet(tmp_path / "s.parquet")
    back = pd.read_parquet(tmp_path / "s.parquet")
    other = dicomframes.connect(client.url, progress=False)
    assert back.dicom.use(other) is back and back.dicom.client is other
    assert len(back.dicom.series()) == len(client.search_series())


def test_copies_and_pickles_keep_only_facts():
    import pickle

    from dicomframes.convert.link import TableLink

    link = TableLink(None, {"00091001": "LO"}, "http://127.0.0.1:1")
    assert json.loads(json.dumps(link)) == {"url": "http://127.0.0.1:1",
                                            "vrs": {"00091001": "LO"}}
    again = pickle.loads(pickle.dumps(link))
    assert again == link and again.client is None
