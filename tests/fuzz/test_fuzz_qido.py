"""Fuzzing QIDO-RS parameters against the embedded server over HTTP (127.0.0.1).

Random keys (keywords, tags, reserved words, junk) and values (Unicode, huge and negative
numbers, wildcards, ranges, UID lists): the answer is 200, 204 or 400, never a 500, and it
comes back (each request has a timeout; a hang fails). A 400 says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from faults.helpers import stow
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import make_dataset, to_bytes

from dicomframes.server import Server, serve
from dicomframes.standard.uids import new_uid

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
STATUSES: Counter[int] = Counter()

KEYS = ["PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "Modality",
        "ModalitiesInStudy", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
        "SeriesNumber", "InstanceNumber", "StudyDescription", "SOPClassUID", "00100010",
        "00080020", "0020000D", "00200011", "00200013", "limit", "offset", "includefield",
        "fuzzymatching", "ReferringPhysicianName", "00101010", "7FE00010", "PixelData",
        "NumberOfStudyRelatedInstances", "StudyID", "PatientBirthDate"]
text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
number = st.one_of(st.integers(), st.sampled_from([2**63, 2**63 - 1, 2**64, -(2**63) - 1,
                                                   10**20, 10**400, -1, 0]))
value = st.one_of(
    text,
    number.map(str),
    st.floats().map(str),
    st.sampled_from(["*", "?", "**", "*?*", "Doe*", "D?e", "\\", ",", "-", "20200101-",
                     "-20201231", "20201301-20200101", "2020-01-01", "1e20", "1E400", "nan",
                     "inf", "true", "false", "all", "²", "٣", "1.2.3\n", "1.2.3,1.2.4",
                     "1.2.3\\1.2.4", "%00", "\x00", "'; DROP TABLE instances; --", "ab" * 500]))
key = st.one_of(st.sampled_from(KEYS), text.filter(bool))
PATHS = ["/studies", "/series", "/instances", "/studies/{study}/series",
         "/studies/{study}/instances", "/studies/{study}/series/{series}/instances"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    """A server with two series of a study (names, dates, numbers to match against)."""
    study, series = new_uid(), new_uid()
    with serve(tmp_path_factory.mktemp("qido")) as server:
        items = [to_bytes(make_dataset(study, series if n < 3 else None, n + 1,
                                       patient="Doe^Jane" if n % 2 else "Ünïcode^Ñame"))
                 for n in range(5)]
        assert stow(server.url, items).status_code == 200
        yield server, study, series
        print(f"\n[fuzz QIDO] answers by status: {dict(sorted(STATUSES.items()))}")


def check(answer: requests.Response) -> None:
    """200/204/400 only; a 400 says why."""
    STATUSES[answer.status_code] += 1
    assert answer.status_code in (200, 204, 400), \
        (answer.status_code, answer.request.url, answer.text[:300])
    if answer.status_code == 400:
        assert answer.text.strip(), "a 400 without a reason"
    elif answer.status_code == 200:
        assert isinstance(answer.json(), list)


@FUZZ
@given(st.sampled_from(PATHS), st.lists(st.tuples(key, value), min_size=1, max_size=4))
def test_random_qido_parameters_never_give_500(archive, path: str, params) -> None:
    server, study, series = archive
    url = server.url + path.format(study=study, series=series)
    with requests.Session() as session:
        answer = session.get(url, params=params, headers={"Accept": "application/dicom+json"},
                             timeout=30)
    check(answer)


@FUZZ
@given(st.sampled_from(["limit", "offset"]), number)
def test_paging_with_any_number(archive, name: str, amount: int) -> None:
    server, _, _ = archive
    answer = requests.get(f"{server.url}/instances", params={name: str(amount)},
                          headers={"Accept": "application/dicom+json"}, timeout=30)
    check(answer)
    if answer.status_code == 400:
        assert name in answer.text, f"the 400 does not name {name}: {answer.text!r}"


# -- the shapes that once gave 500s (issue 18): separators only, long lists, deep keys ---------

LIST_KEYS = ["Modality", "ModalitiesInStudy", "PatientSex", "BodyPartExamined",
             "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"]
separators = st.text(alphabet=",\\", min_size=1, max_size=20)
list_item = st.one_of(st.sampled_from(["CT", "MR", "M*", "?T", "1.2.3", "1.2.840.10008.5.1"]),
                      st.from_regex(r"[A-Z0-9.]{0,8}", fullmatch=True))
long_list = st.builds(lambda items, sep: sep.join(items),
                      st.lists(list_item, min_size=150, max_size=1200),
                      st.sampled_from([",", "\\"]))
SEQUENCES = ["ReferencedStudySequence", "ReferencedSeriesSequence", "ReferencedImageSequence",
             "RequestAttributesSequence", "CodeSequence"]
deep_key = st.builds(lambda steps, leaf: ".".join([*steps, leaf]),
                     st.lists(st.sampled_from(SEQUENCES), min_size=1, max_size=70),
                     st.sampled_from(["ReferencedSOPInstanceUID", "CodeValue", "PatientName",
                                      "StudyInstanceUID"]))
LEVEL_PATHS = ["/studies", "/series", "/instances"]
SHAPES = settings(FUZZ, max_examples=60)


@SHAPES
@given(st.sampled_from(LEVEL_PATHS), st.sampled_from(LIST_KEYS), separators)
def test_values_of_only_separators_are_a_400_naming_the_key(archive, path: str, name: str,
                                                             text: str) -> None:
    server, _, _ = archive
    answer = requests.get(server.url + path, params={name: text}, timeout=30,
                          headers={"Accept": "application/dicom+json"})
    check(answer)
    if answer.status_code == 400 and "separators" in answer.text:
        assert name in answer.text


@SHAPES
@given(st.sampled_from(LEVEL_PATHS), st.sampled_from(LIST_KEYS), long_list,
       st.booleans())
def test_long_lists_and_fuzzy_names_never_give_500(archive, path: str, name: str,
                                                    text: str, fuzzy: bool) -> None:
    server, _, _ = archive
    params = [(name, text), ("PatientName", text.replace(",", " ").replace("\\", " "))]
    if fuzzy:
        params.append(("fuzzymatching", "true"))
    answer = requests.get(server.url + path, params=params, timeout=30,
                          headers={"Accept": "application/dicom+json"})
    check(answer)


@SHAPES
@given(st.sampled_from(LEVEL_PATHS), st.lists(deep_key, min_size=1, max_size=80),
       st.sampled_from(["", "1.2.3", "X*", "1.2.3,1.2.4", ",", "\\"]))
def test_deep_and_many_sequence_keys_never_give_500(archive, path: str, keys: list[str],
                                                    text: str) -> None:
    server, _, _ = archive
    answer = requests.get(server.url + path, params=[(k, text) for k in keys], timeout=30,
                          headers={"Accept": "application/dicom+json"})
    check(answer)
