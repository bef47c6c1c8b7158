"""Fuzzing the DICOM JSON reader: ``python_value``, ``first_value``, ``json_to_dataset`` and
``tables.to_dataframe`` on random JSON values.

- An element of the right shape (``{"vr": VR, "Value": [...]}``) with any values: ``python_value``
  and ``to_dataframe`` never raise; a value that breaks its VR becomes None / NA with a
  :class:`UserWarning`.
- An element (a JSON object) holding anything JSON can hold: only ``ValueError``,
  ``TypeError`` (``binascii.Error`` is a ``ValueError``) or a :class:`DicomFramesError` come out
  of ``python_value`` and ``json_to_dataset``; never ``AttributeError``, ``KeyError`` and the like.
"""

from __future__ import annotations

import contextlib
import warnings

import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dicomframes.convert.tables import to_dataframe
from dicomframes.errors import DicomFramesError
from dicomframes.standard.dicomjson import first_value, json_to_dataset, python_value

# bounded: a fixed number of cases, no shrinking (a failure shows the case as generated)
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow])
DOCUMENTED = (ValueError, TypeError, DicomFramesError)

VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF",
       "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
       "UR", "US", "UT", "UV"]
TAGS = ["00100010", "00080020", "00080030", "0008002A", "00200013", "00280030", "00280010",
        "00080060", "0020000D", "00081199", "00091001", "7FE00010", "00200011", "00101010"]

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["20201345", "abc", "1e400", "-", "12:30", "2020-01-01", "^^^", "=", "\\",
                     "NaN", "inf", "99999999999999999999999", "", " ", "ÿ", "²"]))
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
vr = st.sampled_from(VRS)
person_name = st.dictionaries(st.sampled_from(["Alphabetic", "Ideographic", "Phonetic", "x"]),
                              json_value, max_size=3)


@st.composite
def well_formed_element(draw) -> dict:
    """``{"vr": VR, "Value": [any JSON values]}`` (PN values objects, SQ values objects)."""
    kind = draw(vr)
    if kind == "PN":
        values = draw(st.lists(st.one_of(person_name, json_value), max_size=4))
    elif kind == "SQ":
        values = draw(st.lists(st.one_of(st.none(), st.dictionaries(
            st.sampled_from(TAGS), st.builds(lambda v, vs: {"vr": v, "Value": vs}, vr,
                                             st.lists(scalar, max_size=3)), max_size=3)),
            max_size=3))
    else:
        values = draw(st.lists(json_value, max_size=4))
    return {"vr": kind, "Value": values}


any_element = st.one_of(
    well_formed_element(),
    st.dictionaries(st.sampled_from(["vr", "Value", "InlineBinary", "BulkDataURI", "x"]),
                    json_value, max_size=4))


@FUZZ
@given(well_formed_element(), st.sampled_from([None, *[int(t, 16) for t in TAGS]]))
def test_python_value_never_raises_for_any_values(element: dict, tag: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        python_value(element, tag)
        python_value(element, tag, pn_components=True)


@FUZZ
@given(any_element, st.sampled_from(TAGS))
def test_python_value_of_anything_raises_only_documented_errors(element, tag: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(DOCUMENTED):
            python_value(element, int(tag, 16))
        with contextlib.suppress(DOCUMENTED):
            first_value({tag: element}, tag)


@FUZZ
@given(st.dictionaries(st.sampled_from([*TAGS, "zz", "1234567", "FFFFFFFFF"]),
                       st.one_of(any_element, st.none()), max_size=5))
def test_json_to_dataset_raises_only_documented_errors(obj) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(DOCUMENTED):
            json_to_dataset(obj)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(TAGS), well_formed_element(), max_size=6),
                max_size=6))
def test_to_dataframe_never_raises_for_any_element_values(objs: list[dict]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = to_dataframe(objs)
        flat = to_dataframe(objs, split_multivalued=True, flatten_sequences=True,
                            pn_components=True)
    assert isinstance(df, pd.DataFrame) and len(df) == len(objs) == len(flat)
    assert all(issubclass(w.category, UserWarning) for w in caught), \
        [str(w.message) for w in caught if not issubclass(w.category, UserWarning)]
