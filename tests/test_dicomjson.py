"""dicomframes.standard.dicomjson: the DICOM JSON model (PS3.18 F.2) on real DICOM files."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import warnings

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence

from dicomframes.standard import dicomjson
from dicomframes.standard.dicomjson import (
    dataset_to_json,
    element_to_json,
    json_to_dataset,
    python_value,
)
from dicomframes.standard.personname import parse_person_name, person_name
from dicomframes.standard.tags import UnknownAttribute, keyword_of, tag_hex, tag_of, vr_of

# pydicom's bundled files on which our converter and pydicom's to_json_dict agree exactly
# (explicit/implicit VR, big endian, sequences, private sequences, SR, RT, waveforms).
SAME_AS_PYDICOM = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
    "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "priv_SQ.dcm", "nested_priv_SQ.dcm",
    "reportsi.dcm", "test-SR.dcm", "waveform_ecg.dcm", "ExplVR_BigEnd.dcm",
    "SC_rgb_small_odd.dcm", "liver_1frame.dcm",
]


def read(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. badVR.dcm's invalid values
        return pydicom.dcmread(get_testdata_file(name), force=True)


def pydicom_json(ds: pydicom.Dataset) -> dict:
    """pydicom's to_json_dict, less what the JSON model leaves out: group lengths, and
    "Value": [] of empty sequences (F.2: an element without value has no "Value")."""

    def clean(obj: dict) -> dict:
        out = {}
        for key, elem in obj.items():
            if int(key, 16) & 0xFFFF == 0:
                continue
            elem = dict(elem)
            if elem["vr"] == "SQ" and "Value" in elem:
                elem["Value"] = [clean(item) for item in elem["Value"]]
            if elem.get("Value") == []:
                del elem["Value"]
            out[key] = elem
        return out

    return clean(ds.to_json_dict())


# ------------------------------------------------------------------------- names and tags

def test_tag_of_accepts_every_usual_form():
    for name in ("PatientName", "00100010", "0x00100010", "(0010,0010)", "(0010, 0010)",
                 0x00100010, (0x10, 0x10), " PatientName "):
        assert tag_of(name) == 0x00100010
    assert tag_of("7fe00010") == 0x7FE00010


@pytest.mark.parametrize("bad", ["PatientNam", "0010001", "(0010,00G0)", "", -1, (1, 2, 3)])
def test_tag_of_unknown_names_raise_a_keyerror_naming_them(bad):
    with pytest.raises(UnknownAttribute) as info:
        tag_of(bad)
    assert isinstance(info.value, KeyError)
    assert info.value.name == bad
    assert repr(bad) in str(info.value)


def test_keyword_vr_and_hex():
    assert tag_hex(0x00100010) == "00100010"
    assert tag_hex(0x7FE00010) == "7FE00010"
    assert keyword_of(0x00100010) == "PatientName"
    assert keyword_of(0x00291010) == "00291010"  # private
    # repeating groups (overlays): pydicom has no tag for "OverlayRows", so the hex form
    assert keyword_of(0x60020010) == "60020010"
    assert tag_of(keyword_of(0x60020010)) == 0x60020010
    assert vr_of(0x00100010) == "PN"
    assert vr_of(0x00280106) == "US"  # "US or SS"
    assert vr_of(0x7FE00010) == "OB"  # "OB or OW"
    assert vr_of(0x00290010) == "LO"  # private creator
    assert vr_of(0x00291010) == "UN"


# ------------------------------------------------------------------------- Dataset -> JSON

@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # rtdose.dcm
@pytest.mark.parametrize("decoded", [False, True], ids=["raw", "decoded"])
@pytest.mark.parametrize("name", SAME_AS_PYDICOM)
def test_dataset_to_json_matches_pydicom(name, decoded):
    ds = read(name)
    if decoded:  # elements pydicom already decoded take the other path
        for elem in ds.iterall():
            assert elem.tag
    ours = dataset_to_json(ds)
    assert ours == pydicom_json(read(name))
    json.dumps(ours, allow_nan=False)


def test_dataset_to_json_of_python_values():
    pydicom.config.datetime_conversion = True
    try:
        ds = pydicom.Dataset()
        ds.ReferringPhysicianName = ""
        ds.ContentDate = dt.date(2021, 2, 3)
        ds.AcquisitionDateTime = dt.datetime(2021, 2, 3, 4, 5, 6, 7000, tzinfo=dt.UTC)
        ds.ContentTime = dt.time(1, 2, 3)
        ds.Rows = 0
        ds.add_new(0x00280106, "US or SS", 3)
        obj = dataset_to_json(ds)
    finally:
        pydicom.config.datetime_conversion = False
    assert obj == {
        "00080023": {"vr": "DA", "Value": ["20210203"]},
        "0008002A": {"vr": "DT", "Value": ["20210203040506.007000+0000"]},
        "00080033": {"vr": "TM", "Value": ["010203"]},
        "00080090": {"vr": "PN"},
        "00280010": {"vr": "US", "Value": [0]},
        "00280106": {"vr": "US", "Value": [3]},
    }


def test_dataset_to_json_values_by_vr():
    obj = dataset_to_json(read("CT_small.dcm"))
    assert obj["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    assert obj["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    assert obj["00280030"] == {"vr": "DS", "Value": [0.661468, 0.661468]}
    assert obj["00200013"] == {"vr": "IS", "Value": [1]}
    assert obj["00280010"] == {"vr": "US", "Value": [128]}
    assert obj["00080020"] == {"vr": "DA", "Value": ["20040119"]}
    assert "00020010" not in obj  # file meta is not part of the data set
    plan = dataset_to_json(read("rtplan.dcm"))
    assert plan["00080050"] == {"vr": "SH"}  # empty: no "Value"
    beams = plan["300A00B0"]
    assert beams["vr"] == "SQ" and len(beams["Value"]) == 1
    control_points = beams["Value"][0]["300A0111"]["Value"]
    assert control_points[0]["300A0112"] == {"vr": "IS", "Value": [0]}


def test_dataset_to_json_pn_groups_at_and_empty_values():
    ds = pydicom.Dataset()
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.add_new(0x00081140, "SQ", Sequence([]))  # empty sequence
    ds.FrameIncrementPointer = [0x00181063, 0x00181065]
    ds.ImageType = ["DERIVED", "", "OTHER"]
    ds.SpecificCharacterSet = "ISO_IR 192"
    obj = dataset_to_json(ds)
    assert obj["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert obj["00081140"] == {"vr": "SQ"}
    assert obj["00280009"] == {"vr": "AT", "Value": ["00181063", "00181065"]}
    assert obj["00080008"]["Value"] == ["DERIVED", None, "OTHER"]


def test_dataset_to_json_reads_text_in_its_character_set():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.StudyDescription = "Thorax \\ Abdomen"  # backslash separates values in LO
    buf = io.BytesIO()
    ds.save_as(buf)
    buf.seek(0)
    obj = dataset_to_json(pydicom.dcmread(buf))
    assert obj["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert obj["00081030"]["Value"] == ["Thorax", " Abdomen"]


def test_invalid_is_goes_out_empty_not_as_text():
    """PS3.18 F.2.3.1: IS is a JSON number. "1A" cannot be one; sent as a string it broke
    pydicom's from_json and dicomtrolley (issue 11), so it goes out empty, as Orthanc does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = dataset_to_json(read("badVR.dcm"))
    assert obj["00280008"] == {"vr": "IS"}
    pydicom.Dataset.from_json(obj)  # a strict reader takes the whole answer


def test_binary_values_inline_or_bulk():
    ds = read("CT_small.dcm")
    calls = []

    def bulk(tag, elem):
        calls.append((tag, elem.VR))
        return f"http://127.0.0.1:1/bulk/{tag:08X}"

    inline = dataset_to_json(ds)
    assert base64.b64decode(inline["7FE00010"]["InlineBinary"]) == ds.PixelData
    small = inline["00431028"]
    assert small["vr"] == "OB" and base64.b64decode(small["InlineBinary"]) == ds[0x00431028].value

    obj = dataset_to_json(read("CT_small.dcm"), bulk_uri=bulk, bulk_threshold=1024)
    assert obj["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://127.0.0.1:1/bulk/7FE00010"}
    assert "InlineBinary" in obj["00431028"]  # 76 bytes: under the threshold
    assert (0x7FE00010, "OW") in calls
    assert all(len(ds[tag].value) > 1024 for tag, _ in calls if tag != 0x7FE00010)

    obj = dataset_to_json(read("CT_small.dcm"), bulk_uri=bulk, bulk_threshold=10)
    assert obj["00431028"]["BulkDataURI"].endswith("/00431028")


def test_bulk_uri_inside_sequences():
    ds = pydicom.Dataset()
    icon = pydicom.Dataset()
    icon.Rows = icon.Columns = 2
    icon.PixelData = b"\x00\x01\x02\x03"
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = Sequence([icon])
    seen = []
    obj = dataset_to_json(ds, bulk_uri=lambda tag, elem: seen.append(tag) or "uri")
    assert obj["00880200"]["Value"][0]["7FE00010"] == {"vr": "OB", "BulkDataURI": "uri"}
    assert seen == [0x7FE00010]


# ------------------------------------------------------------------------- JSON -> Dataset

@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "MR_small_bigendian.dcm",
                                  "nested_priv_SQ.dcm", "test-SR.dcm", "waveform_ecg.dcm"])
def test_json_to_dataset_round_trip(name):
    obj = json.loads(json.dumps(dataset_to_json(read(name))))
    ds = json_to_dataset(obj)
    assert dataset_to_json(ds) == obj
    # and the Dataset writes as a file that reads back the same
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    buf.seek(0)
    assert dataset_to_json(pydicom.dcmread(buf, force=True)) == obj


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_json_to_dataset_skips_bulk_data_and_empties_bad_numbers():
    obj = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John", "Ideographic": "ド^ジ"}]},
        "00280008": {"vr": "IS", "Value": ["1A"]},
        "00180050": {"vr": "DS", "Value": ["abc"]},
        "00280030": {"vr": "DS", "Value": [0.1234567890123456789, 2]},
        "00280009": {"vr": "AT", "Value": ["00181063"]},
        "00081140": {"vr": "SQ"},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://127.0.0.1:1/bulk"},
    }
    ds = json_to_dataset(obj)
    assert "PixelData" not in ds
    assert str(ds.PatientName) == "Doe^John=ド^ジ"
    assert ds.FrameIncrementPointer == 0x00181063
    assert list(ds.ReferencedImageSequence) == []
    assert len(str(ds["PixelSpacing"].value[0])) <= 16
    assert float(ds.PixelSpacing[0]) == pytest.approx(0.12345678901234568)
    # values that are not numbers go out empty (PS3.18 F.2.3.1: IS and DS are JSON numbers)
    assert dataset_to_json(ds)["00280008"] == {"vr": "IS"}
    assert dataset_to_json(ds)["00180050"] == {"vr": "DS"}


# ------------------------------------------------------------------------- JSON -> Python

def test_python_value_by_vr():
    assert python_value({"vr": "DA", "Value": ["20200922"]}) == dt.date(2020, 9, 22)
    assert python_value({"vr": "TM", "Value": ["120000"]}) == dt.timedelta(hours=12)
    assert python_value({"vr": "TM", "Value": ["0715"]}) == dt.timedelta(hours=7, minutes=15)
    assert python_value({"vr": "TM", "Value": ["153559.5"]}) == dt.timedelta(
        hours=15, minutes=35, seconds=59, microseconds=500_000)
    aware = python_value({"vr": "DT", "Value": ["20200922120000.25+0130"]})
    assert aware == dt.datetime(2020, 9, 22, 12, 0, 0, 250_000,
                                tzinfo=dt.timezone(dt.timedelta(hours=1, minutes=30)))
    assert python_value({"vr": "DT", "Value": ["2020"]}) == dt.datetime(2020, 1, 1)
    assert python_value({"vr": "IS", "Value": [3, "4"]}) == [3, 4]
    assert python_value({"vr": "DS", "Value": ["0.5"]}) == 0.5
    assert python_value({"vr": "US", "Value": [979]}) == 979
    assert python_value({"vr": "AT", "Value": ["00181063"]}) == "00181063"
    assert python_value({"vr": "CS", "Value": ["DERIVED", "SECONDARY"]}) == ["DERIVED", "SECONDARY"]
    assert python_value({"vr": "LO"}) is None
    assert python_value({"vr": "OW", "BulkDataURI": "http://x/bulk"}) == "http://x/bulk"
    assert python_value({"vr": "OB", "InlineBinary": "AAE="}) == b"\x00\x01"
    seq = {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2.3"]},
                                  "00200013": {"vr": "IS", "Value": [7]}}]}
    assert python_value(seq) == [{"ReferencedSOPClassUID": "1.2.3", "InstanceNumber": 7}]
    assert python_value({"vr": "SQ"}) == []


def test_python_value_person_names():
    pn = {"vr": "PN", "Value": [{"Alphabetic": "Doe^John^A^Dr.^Jr.", "Ideographic": "ド^ジ"}]}
    assert python_value(pn) == "Dr. Doe, John A, Jr."
    parts = python_value(pn, pn_components=True)
    assert parts["family"] == "Doe" and parts["given"] == "John" and parts["middle"] == "A"
    assert parts["prefix"] == "Dr." and parts["suffix"] == "Jr."
    assert parts["ideographic"]["family"] == "ド"
    assert python_value({"vr": "PN", "Value": [{"Alphabetic": "Anony Mous"}]}) == "Anony Mous"


@pytest.mark.parametrize(
    "vr,value", [("DA", "20201345"), ("DA", "2020-13-45"), ("TM", "256000"), ("IS", "abc"),
                 ("IS", 1.5), ("DS", "x1"), ("DT", "2020ab")]
)
def test_python_value_bad_values_warn_and_give_none(vr, value):
    with pytest.warns(UserWarning, match=r"StudyDate \(00080020\).*not a valid " + vr):
        assert python_value({"vr": vr, "Value": [value]}, 0x00080020) is None


@pytest.mark.parametrize(
    "dicom,readable",
    [("Doe^John^A", "Doe, John A"), ("Doe", "Doe"), ("Anony Mous", "Anony Mous"),
     ("Doe^John", "Doe, John"), ("Doe^John^^^Jr.", "Doe, John, Jr."),
     ("Doe^John^^Dr.", "Dr. Doe, John"), ("Doe^^^^", "Doe"), ("^John", "John")],
)
def test_person_name_rule(dicom, readable):
    assert person_name(dicom) == readable
    assert person_name({"Alphabetic": dicom}) == readable


@pytest.mark.parametrize("dicom", ["Doe^John^A", "Doe", "Anony Mous", "Doe^John",
                                   "Doe^John^^^Jr.", "Doe^John^Paul Mary"])
def test_parse_person_name_inverts_person_name(dicom):
    assert parse_person_name(person_name(dicom)) == dicom


def test_parse_person_name_leaves_dicom_forms_and_wildcards():
    assert parse_person_name("Doe^J*") == "Doe^J*"
    assert parse_person_name("Doe*") == "Doe*"
    assert person_name({"Ideographic": "山田^太郎"}) == "山田, 太郎"
    assert person_name(None) is None


def test_loads_reads_what_json_reads_including_what_orjson_refuses():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    body = json.dumps([dataset_to_json(ds, bulk_uri=lambda tag, elem: f"/bulk/{tag:08X}")])
    assert dicomjson.loads(body) == json.loads(body)
    assert dicomjson.loads(body.encode()) == json.loads(body)
    odd = b'[{"00280030": {"vr": "DS", "Value": [NaN, 1e999]}, "00181000": {"vr": "IS", ' \
          b'"Value": [123456789012345678901234567890]}}]'
    parsed = dicomjson.loads(odd)
    assert parsed[0]["00181000"]["Value"] == [123456789012345678901234567890]
    assert parsed[0]["00280030"]["Value"][1] == float("inf")
    with pytest.raises(json.JSONDecodeError):
        dicomjson.loads(b'[{"00100010": ')


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
                                  "chrH31.dcm", "chrX2.dcm", "chrGreek.dcm", "SC_rgb_jpeg.dcm"])
def test_element_to_json_is_the_element_of_dataset_to_json(name):
    # character-set files (ISO 2022 escapes, UTF-8, Greek) come with pydicom too
    path = get_testdata_file(name) or next(iter(get_charset_files(name)))
    whole = dataset_to_json(pydicom.dcmread(path, stop_before_pixels=True))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for tag in [int(key, 16) for key in whole]:
        assert element_to_json(ds, tag) == whole[f"{tag:08X}"]
    assert element_to_json(ds, 0x00991099) is None
    raw = [elem for elem in ds.items() if isinstance(elem[1], pydicom.dataelem.RawDataElement)]
    assert raw  # reading values for JSON left the data set's elements undecoded
