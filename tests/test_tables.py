"""dicomframes.convert.tables: DICOM JSON -> DataFrame (types, options, bad values) and back."""

from __future__ import annotations

import io
import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from support import TUTORIAL_DATA

from dicomframes.convert.rows import row_to_dataset, row_to_filters
from dicomframes.convert.tables import to_dataframe
from dicomframes.errors import DicomFramesError
from dicomframes.standard.attributes import returned_tags
from dicomframes.standard.dicomjson import dataset_to_json, json_to_dataset
from dicomframes.standard.personname import join_person_name
from dicomframes.standard.tags import keyword_of


def tutorial_csv() -> pd.DataFrame:
    """The tutorial's dicom-metadata.csv (vendored in tests/data/tutorial), every cell as text."""
    return pd.read_csv(TUTORIAL_DATA / "dicom-metadata.csv", dtype=str)


def as_csv_text(value) -> str | None:
    """Our typed cell -> the text the tutorial's CSV has for it."""
    if value is None or (not isinstance(value, list | dict) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y%m%d")
    if isinstance(value, pd.Timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    return str(value)


def same(ours, theirs: str | None) -> bool:
    mine = as_csv_text(ours)
    if mine is None or theirs is None:
        return mine is None and theirs is None
    try:
        return float(mine) == float(theirs)
    except ValueError:
        return mine == theirs


def read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def metadata(*names: str) -> list[dict]:
    """WADO-RS-like metadata (pixel data as BulkDataURI) of pydicom's bundled files."""
    return [
        json.loads(json.dumps(dataset_to_json(read(name), bulk_uri=lambda t, e: f"bulk/{t:08X}")))
        for name in names
    ]


# ------------------------------------------------------------------------- the tutorial's CSV

def test_split_multivalued_matches_the_tutorial_csv(tutorial_files):
    objs = [dataset_to_json(pydicom.dcmread(path), bulk_uri=lambda t, e: "bulk")
            for path in tutorial_files]
    df = to_dataframe(objs, split_multivalued=True)
    expected = tutorial_csv()
    shared = [c for c in expected.columns if c in df.columns]
    assert len(shared) >= 40, shared
    assert {"MultiImageType", "ImageType1", "ImageType2", "MultiPixelSpacing",
            "PixelSpacing1"} <= set(shared)
    # the numbered columns come after the others, as in the CSV
    assert list(df.columns[-5:]) == ["MultiImageType", "ImageType1", "ImageType2",
                                     "MultiPixelSpacing", "PixelSpacing1"]
    ours = df.set_index("SOPInstanceUID")
    theirs = expected.set_index("SOPInstanceUID")
    assert sorted(ours.index) == sorted(theirs.index)
    mismatches = [
        (sop, column, ours.at[sop, column], theirs.at[sop, column])
        for sop in theirs.index
        for column in shared if column != "SOPInstanceUID"
        if not same(ours.at[sop, column], None if pd.isna(theirs.at[sop, column])
                    else theirs.at[sop, column])
    ]
    assert mismatches == []


# ------------------------------------------------------------------------- types by VR

def test_types_by_vr():
    df = to_dataframe(metadata("CT_small.dcm", "MR_small.dcm"))
    assert len(df) == 2
    assert str(df["StudyDate"].dtype).startswith("datetime64")
    assert df.loc[0, "StudyDate"] == pd.Timestamp("2004-01-19")
    assert str(df["StudyTime"].dtype).startswith("timedelta64")
    assert df.loc[0, "StudyTime"] == pd.Timedelta(hours=7, minutes=27, seconds=30)
    for column in ("Rows", "InstanceNumber", "SeriesNumber", "BitsAllocated"):
        assert df[column].dtype == "Int64", column
    assert df["SliceThickness"].dtype == np.float64
    assert df.loc[0, "PatientName"] == "CompressedSamples, CT1"
    assert df.loc[0, "Modality"] == "CT" and df.loc[1, "Modality"] == "MR"
    assert pd.api.types.is_string_dtype(df["SOPInstanceUID"])
    assert df.loc[0, "PixelData"] == "bulk/7FE00010"
    assert df.loc[0, "PixelSpacing"] == [0.661468, 0.661468]
    assert df.loc[0, "ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert "00431028" in df.columns  # private tags by their hex tag, in tag order
    tags = [c for c in df.columns if len(c) == 8 and c.isalnum() and c.upper() == c]
    assert tags == sorted(tags)
    # attributes present in one instance only: NA in the others
    only_ct = [c for c in df.columns if df[c].isna().iloc[1] and not df[c].isna().iloc[0]]
    assert "KVP" in only_ct


def test_all_vrs_on_a_synthetic_object():
    obj = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "0008002A": {"vr": "DT", "Value": ["20200922120000.5+0200"]},
        "00081160": {"vr": "IS", "Value": ["7"]},  # IS as a string: some servers send them
        "00180050": {"vr": "DS", "Value": ["2.5"]},
        "00280009": {"vr": "AT", "Value": ["00181063"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John^A"}]},
        "00186011": {"vr": "SQ", "Value": [{"00186012": {"vr": "US", "Value": [1]}}]},
        "00280106": {"vr": "SS", "Value": [-5]},
        "00091002": {"vr": "UV", "Value": [2**63 + 1]},
        "00431028": {"vr": "OB", "InlineBinary": "AAE="},
        "00091001": {"vr": "LO", "Value": ["private"]},
        "00100030": {"vr": "DA"},
    }
    df = to_dataframe([obj, {}])
    assert df.loc[0, "AcquisitionDateTime"] == pd.Timestamp("2020-09-22 12:00:00.5+02:00")
    assert str(df["AcquisitionDateTime"].dtype).endswith("UTC+02:00]")
    assert df.loc[0, "ReferencedFrameNumber"] == 7 and df["ReferencedFrameNumber"].dtype == "Int64"
    assert df.loc[0, "SliceThickness"] == 2.5
    assert df.loc[0, "FrameIncrementPointer"] == "00181063"
    assert df.loc[0, "PatientName"] == "Doe, John A"
    assert df.loc[0, "SequenceOfUltrasoundRegions"] == [{"RegionSpatialFormat": 1}]
    assert df.loc[0, "SmallestImagePixelValue"] == -5
    assert df["00091002"].dtype == "UInt64" and df.loc[0, "00091002"] == 2**63 + 1
    assert df.loc[0, "00431028"] == b"\x00\x01"
    assert df.loc[0, "00091001"] == "private"
    assert str(df["PatientBirthDate"].dtype).startswith("datetime64")
    assert df.isna().iloc[1].all()  # the empty object: NA everywhere
    components = to_dataframe([obj], pn_components=True).loc[0, "PatientName"]
    assert components["family"] == "Doe" and components["middle"] == "A"


def test_datetimes_with_several_offsets_are_utc():
    objs = [{"0008002A": {"vr": "DT", "Value": [v]}}
            for v in ("20200101120000+0100", "20200101120000-0500")]
    column = to_dataframe(objs)["AcquisitionDateTime"]
    assert str(column.dtype) == "datetime64[us, UTC]"
    assert column[0] == pd.Timestamp("2020-01-01 11:00", tz="UTC")
    assert column[1] == pd.Timestamp("2020-01-01 17:00", tz="UTC")
    naive = to_dataframe([{"0008002A": {"vr": "DT", "Value": ["2020"]}}])
    assert naive.loc[0, "AcquisitionDateTime"] == pd.Timestamp("2020-01-01")


# ------------------------------------------------------------------------- bad values

def test_bad_values_become_na_with_a_warning_naming_tag_and_row():
    objs = [
        {"00080020": {"vr": "DA", "Value": ["20200922"]},
         "00200013": {"vr": "IS", "Value": [1]}, "00080030": {"vr": "TM", "Value": ["120000"]}},
        {"00080020": {"vr": "DA", "Value": ["2020-13-45"]},
         "00200013": {"vr": "IS", "Value": ["abc"]}, "00080030": {"vr": "TM", "Value": ["12"]}},
        {"00080020": {"vr": "DA", "Value": ["20201345"]},
         "00200013": {"vr": "IS", "Value": [3]}, "00080030": {"vr": "TM", "Value": ["99"]}},
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = to_dataframe(objs)
    messages = [str(w.message) for w in caught]
    assert any("StudyDate (00080020" in m and "row 1 '2020-13-45'" in m
               and "row 2 '20201345'" in m for m in messages), messages
    assert any("InstanceNumber (00200013" in m and "row 1 'abc'" in m for m in messages)
    assert any("StudyTime (00080030" in m and "row 2 '99'" in m for m in messages)
    assert df["StudyDate"].isna().tolist() == [False, True, True]
    assert df["InstanceNumber"].tolist()[0] == 1 and pd.isna(df["InstanceNumber"][1])
    assert df.loc[1, "StudyTime"] == pd.Timedelta(hours=12)


def test_bad_values_inside_lists_name_their_row():
    objs = [{"00080008": {"vr": "IS", "Value": [1, 2]}},
            {"00080008": {"vr": "IS", "Value": [3, "x"]}}]
    with pytest.warns(UserWarning, match=r"row 1 'x'"):
        df = to_dataframe(objs)
    assert df.loc[0, "ImageType"] == [1, 2]
    assert df.loc[1, "ImageType"][0] == 3 and pd.isna(df.loc[1, "ImageType"][1])


# ------------------------------------------------------------------------- options

def test_multivalued_lists_and_split_columns():
    objs = [{"00080008": {"vr": "CS", "Value": ["A", "B", "C"]}},
            {"00080008": {"vr": "CS", "Value": ["D"]}},
            {}]
    df = to_dataframe(objs)
    assert df["ImageType"].tolist() == [["A", "B", "C"], ["D"], None]
    split = to_dataframe(objs, split_multivalued=True)
    assert list(split.columns) == ["ImageType", "MultiImageType", "ImageType1", "ImageType2"]
    assert split["ImageType"].tolist()[:2] == ["A", "D"]
    assert split["MultiImageType"].tolist()[:2] == [1, 0] and pd.isna(split["MultiImageType"][2])
    assert split.loc[0, "ImageType2"] == "C" and pd.isna(split.loc[1, "ImageType1"])


def test_sequences_nested_and_flattened():
    objs = metadata("rtplan.dcm")
    df = to_dataframe(objs)
    beams = df.loc[0, "BeamSequence"]
    assert isinstance(beams, list) and beams[0]["BeamName"] == "Field 1"
    assert beams[0]["ControlPointSequence"][0]["ControlPointIndex"] == 0
    flat = to_dataframe(objs, flatten_sequences=True)
    assert "BeamSequence" not in flat.columns
    assert flat.loc[0, "BeamSequence.BeamName"] == "Field 1"
    assert flat.loc[0, "BeamSequence.BeamNumber"] == 1
    assert isinstance(flat.loc[0, "BeamSequence.ControlPointSequence"], list)
    # several items: one list per row
    two = {"00081199": {"vr": "SQ", "Value": [
        {"00081155": {"vr": "UI", "Value": ["1.2.1"]}},
        {"00081155": {"vr": "UI", "Value": ["1.2.2"]}}]}}
    one = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}]}}
    flat = to_dataframe([two, one, {}], flatten_sequences=True)
    column = flat["ReferencedSOPSequence.ReferencedSOPInstanceUID"]
    assert column.tolist() == [["1.2.1", "1.2.2"], "1.2.3", None]


def test_raw_keeps_the_json_elements():
    objs = metadata("CT_small.dcm")
    df = to_dataframe(objs, raw=True)
    assert df.loc[0, "PatientName"] == objs[0]["00100010"]
    assert df.loc[0, "PixelData"] == {"vr": "OW", "BulkDataURI": "bulk/7FE00010"}


@pytest.mark.parametrize("level,columns", [
    ("study", ["StudyDate", "PatientName", "StudyInstanceUID", "NumberOfStudyRelatedInstances"]),
    ("series", ["Modality", "SeriesInstanceUID", "StudyInstanceUID", "SeriesNumber"]),
    ("instance", ["SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber", "Rows"]),
])
def test_empty_answers_have_the_level_columns(level, columns):
    df = to_dataframe([], level=level)
    assert len(df) == 0
    assert set(columns) <= set(df.columns)
    if "StudyDate" in columns:
        assert str(df["StudyDate"].dtype).startswith("datetime64")
    if "InstanceNumber" in columns:
        assert df["InstanceNumber"].dtype == "Int64"
    assert to_dataframe([]).shape == (0, 0)
    with pytest.raises(ValueError, match="level"):
        to_dataframe([], level="patient")


def test_client_link_survives_copies_but_not_pickling():
    marker = object()
    df = to_dataframe(metadata("CT_small.dcm"), client=marker)
    assert df.dicom.client is marker
    assert df.copy().dicom.client is marker
    assert df[df["Rows"] > 0].dicom.client is marker
    restored = pickle.loads(pickle.dumps(df))
    with pytest.raises(DicomFramesError, match="no dicomframes client"):
        restored.dicom.client  # noqa: B018
    restored.dicom.client = marker
    assert restored.dicom.client is marker


def test_accessor_errors_are_clear():
    with pytest.raises(DicomFramesError, match="no dicomframes client"):
        pd.DataFrame({"StudyInstanceUID": ["1.2.3"]}).dicom.series()
    df = pd.DataFrame({"Modality": ["CT"]})
    df.dicom.client = object()
    with pytest.raises(DicomFramesError, match="StudyInstanceUID"):
        df.dicom.series()


class _Recorder:
    """A stand-in client that records the accessor's calls and answers with empty tables."""

    def __init__(self):
        self.calls = []

    def search_series(self, study, **filters):
        self.calls.append(("search_series", study, filters))
        return to_dataframe([], level="series")

    def metadata(self, *uids, **options):
        self.calls.append(("metadata", *uids))
        return to_dataframe([], level="instance")


def test_accessor_reads_uids_from_retrieve_urls():
    df = pd.DataFrame({"RetrieveURL": [
        "http://h/dicom-web/studies/1.2/series/1.2.3",
        "http://h/dicom-web/studies/1.2/series/1.2.4/",
        "not a DICOMweb URL",
        "http://h/dicom-web/studies/1.2/series/1.x",  # a malformed UID names nothing
        None,
    ]})
    recorder = _Recorder()
    df.dicom.client = recorder
    series = df.dicom.series(Modality="CT")
    assert recorder.calls == [("search_series", "1.2", {"Modality": "CT"})]
    assert series.dicom.client is recorder and len(series) == 0
    recorder.calls.clear()
    df.dicom.metadata()  # series-level URLs: one metadata call per series
    assert recorder.calls == [("metadata", "1.2", "1.2.3"), ("metadata", "1.2", "1.2.4")]


def test_empty_answers_have_the_standard_returned_attributes():
    for level in ("study", "series", "instance"):
        columns = list(to_dataframe([], level=level).columns)
        assert columns == [keyword_of(tag) for tag in returned_tags(level)]


def test_person_names_in_every_form_go_back_to_dicom():
    assert join_person_name({"family": "Doe", "given": "John", "middle": "", "prefix": "",
                             "suffix": ""}) == "Doe^John"
    assert join_person_name({"family": "Yamada", "given": "Tarou",
                             "ideographic": {"family": "山田", "given": "太郎"}}) == \
        "Yamada^Tarou=山田^太郎"
    assert join_person_name({"Alphabetic": "Doe^John", "Ideographic": ""}) == "Doe^John"
    row = to_dataframe([{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John^A"}]}}],
                       pn_components=True).iloc[0]
    assert row_to_filters(row) == {"PatientName": "Doe^John^A"}


# ------------------------------------------------------------------------- back to DICOM

@pytest.mark.parametrize("names", [("CT_small.dcm",), ("rtplan.dcm",), ("MR_small.dcm",)])
@pytest.mark.parametrize("options", [{}, {"split_multivalued": True},
                                     {"flatten_sequences": True}, {"pn_components": True},
                                     {"raw": True}])
def test_row_to_dataset_round_trip(names, options):
    objs = metadata(*names)
    df = to_dataframe(objs, **options)
    ds = row_to_dataset(df.iloc[0])
    again = to_dataframe([dataset_to_json(ds, bulk_uri=lambda t, e: f"bulk/{t:08X}")], **options)
    original = df.drop(columns=[c for c in df.columns if c not in again.columns])
    # left out: empty values (NA) and binary values, that the table only has as URIs
    for column in set(df.columns) - set(again.columns):
        value = df.loc[0, column]
        assert (value is None or (not isinstance(value, list | dict) and pd.isna(value))
                or str(value).startswith("bulk/")
                or (isinstance(value, dict) and "BulkDataURI" in value)), column
    pd.testing.assert_frame_equal(again[original.columns], original, check_dtype=False)


def test_row_to_dataset_writes_a_valid_file():
    df = to_dataframe(metadata("CT_small.dcm"))
    ds = row_to_dataset(df.iloc[0])
    assert ds.PatientName == "CompressedSamples^CT1"
    assert ds.StudyDate == "20040119" and ds.StudyTime == "072730"
    assert ds.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds[0x00431028].value == json_to_dataset(metadata("CT_small.dcm")[0])[0x00431028].value
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    buf.seek(0)
    assert pydicom.dcmread(buf, force=True).SOPInstanceUID == df.loc[0, "SOPInstanceUID"]


def test_row_to_filters():
    objs = [{
        "00080020": {"vr": "DA", "Value": ["20200922"]},
        "00080030": {"vr": "TM", "Value": ["120000.5"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00201208": {"vr": "IS", "Value": [3]},
        "00200013": {"vr": "IS", "Value": [4]},
        "00280030": {"vr": "DS", "Value": [0.5, 0.5]},
        "00081190": {"vr": "UR", "Value": ["http://127.0.0.1/studies/1.2.3"]},
        "00081199": {"vr": "SQ", "Value": [{}]},
    }]
    row = to_dataframe(objs).iloc[0]
    filters = row_to_filters(row)
    assert filters == {"StudyDate": "20200922", "StudyTime": "120000.500000",
                       "PatientName": "Doe^John", "StudyInstanceUID": "1.2.3",
                       "InstanceNumber": "4"}
    assert row_to_filters(row, keys=["PatientName", "0020000D"]) == {
        "PatientName": "Doe^John", "StudyInstanceUID": "1.2.3"}
    assert row_to_filters(row, keys=["PixelSpacing"]) == {"PixelSpacing": "0.5\\0.5"}
    with pytest.raises(ValueError, match="cannot be a QIDO filter"):
        row_to_filters(row, keys=["ReferencedSOPSequence"])
    with pytest.raises(KeyError, match="PatientID"):  # never a silently wider search
        row_to_filters(row, keys=["PatientName", "PatientID"])
