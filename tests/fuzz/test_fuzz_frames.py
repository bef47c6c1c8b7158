"""Fuzzing frame lists and rendered parameters against the embedded server over HTTP.

``.../frames/{random}`` and ``.../rendered?viewport=..&window=..&quality=..`` with random text,
Unicode digits, huge, negative, zero, NaN and infinite numbers: never a 500, always an answer
(each request has a timeout). A 200 of frames carries whole frames.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from faults.helpers import stow
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import make_dataset, to_bytes

from dicomframes.server import serve
from dicomframes.standard.multipart import decode

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
STATUSES: Counter[str] = Counter()
FRAMES = 4
FRAME_BYTES = 16 * 16 * 2
OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
number = st.one_of(st.integers(), st.sampled_from([0, -1, 1, FRAMES, FRAMES + 1, 2**31, 2**63,
                                                   2**64, 10**20, 10**400]))
numeric = st.one_of(number.map(str), st.floats().map(str),
                    st.sampled_from(["nan", "inf", "-inf", "1e20", "1e400", "²", "٣", "0x10",
                                     " 1", "1 ", "+1", "1_0", ""]))
frame_item = st.one_of(numeric, text)
frame_list = st.lists(frame_item, min_size=1, max_size=5).map(",".join)
pair = st.tuples(numeric, numeric).map(",".join)
window = st.one_of(pair, st.tuples(numeric, numeric, st.one_of(
    st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "linear", "CUBIC", ""]), text)
).map(",".join), text)
rendered_params = st.dictionaries(
    st.sampled_from(["viewport", "window", "quality", "annotation", "charset", "iccprofile"]),
    st.one_of(pair, window, numeric, text), max_size=4)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a 4-frame 16 x 16 uint16 instance on a fresh embedded server."""
    ds = make_dataset(frames=FRAMES)
    with serve(tmp_path_factory.mktemp("frames")) as server:
        assert stow(server.url, [to_bytes(ds)]).status_code == 200
        yield (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")
        print(f"\n[fuzz frames/rendered] answers: {dict(sorted(STATUSES.items()))}")


def check(answer: requests.Response, what: str) -> None:
    """Never a 500 (nor any 5xx); a 4xx says why."""
    STATUSES[f"{what} {answer.status_code}"] += 1
    assert answer.status_code < 500, (answer.status_code, answer.request.url, answer.text[:300])
    if answer.status_code >= 400:
        assert answer.text.strip(), f"a {answer.status_code} without a reason"


@FUZZ
@given(frame_list)
def test_random_frame_lists_never_give_500(instance: str, frames: str) -> None:
    answer = requests.get(f"{instance}/frames/{quote(frames, safe=',')}",
                          headers={"Accept": OCTETS}, timeout=30)
    check(answer, "frames")
    if answer.status_code == 200:
        parts = decode(answer.content, answer.headers["Content-Type"])
        assert parts and all(len(p) == FRAME_BYTES for p in parts)


@FUZZ
@given(st.one_of(st.none(), frame_list), rendered_params,
       st.sampled_from(["image/png", "image/jpeg", "*/*", "image/gif"]))
def test_random_rendered_parameters_never_give_500(instance: str, frames: str | None,
                                                   params: dict, accept: str) -> None:
    path = f"{instance}/frames/{quote(frames, safe=',')}/rendered" if frames else \
        f"{instance}/rendered"
    answer = requests.get(path, params=params, headers={"Accept": accept}, timeout=30)
    check(answer, "rendered")
    if answer.status_code == 200:
        assert answer.headers["Content-Type"].startswith("image/") and answer.content
