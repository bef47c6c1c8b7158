"""The client against a hostile server (issue 18, items 4, 5 and 7): it bounds what it
accepts, raising a typed error naming the URL and the limit; it reports success only when the
server said "done"; it never shows a credential, in whatever form the server echoes it.

The server is tests/hostile_server.py, on 127.0.0.1. The answers that could take the machine's
memory (a gzip bomb, an endless body, 200 MB of JSON, JSON nested a million levels deep) are
read by a client in a child process under an address-space limit (RLIMIT_AS), so a failure
there ends the child, not the test run; the child reports the error it got and its peak RSS.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from hostile_server import HostileServer, MiB
from support import make_files

import dicomframes
from dicomframes import connect, errors
from dicomframes.client import connections, limits

STUDY = "1.2.826.0.1.3680043.8.498.1"
TOKEN = "s3cr3t-T0KEN-value-42"


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


# ---- big answers, read in a child process under RLIMIT_AS ------------------------------------

CHILD = r"""
import json, resource, sys
import dicomframes
from dicomframes import errors

url, options = sys.argv[1], json.loads(sys.argv[2])
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
budget = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (vm + budget, resource.RLIM_INFINITY))
client = dicomframes.connect(url, retries=0, progress=False, **options)
try:
    client.search_json("study")
    outcome = {"error": None}
except errors.DicomFramesError as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc),
               "limit": getattr(exc, "limit", None)}
except BaseException as exc:  # what the issue saw: MemoryError, RecursionError...
    outcome = {"error": "untyped " + type(exc).__name__, "message": str(exc)[:300]}
# VmHWM: this process's own peak (ru_maxrss survives exec: it would count a large parent's)
with open("/proc/self/status") as f:
    outcome["maxrss"] = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
outcome["budget"] = budget
print(json.dumps(outcome))
"""


def run_child(url: str, budget: int = 1536 * MiB, **options: object) -> dict:
    """Search ``url`` in a child process allowed ``budget`` bytes more address space than it
    has after its imports; its outcome (a crash fails the test with the child's words)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(dicomframes.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, url, json.dumps(options), str(budget)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (f"the client process died ({done.returncode}): "
                                  f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gzip_bomb_stops_at_the_ratio_with_the_default_limits(hostile: HostileServer
                                                                  ) -> None:
    url = f"{hostile.url}/bomb"
    outcome = run_child(url)
    assert outcome["error"] == "AnswerTooLarge", outcome
    assert "max_decompression_ratio=500" in outcome["message"]
    assert f"{url}/studies" in outcome["message"]
    assert outcome["limit"] == limits.DEFAULT_MAX_DECOMPRESSION_RATIO
    # it stopped near the floor of the ratio check, far from the 6 GiB the body inflates to
    assert outcome["maxrss"] < 400 * MiB, outcome


def test_an_endless_chunked_body_stops_at_max_answer_bytes(hostile: HostileServer) -> None:
    url = f"{hostile.url}/endless"
    outcome = run_child(url, max_answer_bytes=64 * MiB)
    assert outcome["error"] == "AnswerTooLarge", outcome
    assert "max_answer_bytes=67108864" in outcome["message"]
    assert f"{url}/studies" in outcome["message"]
    assert outcome["limit"] == 64 * MiB
    assert outcome["maxrss"] < 400 * MiB, outcome


def test_a_huge_json_answer_is_refused_before_parsing_under_an_address_space_limit(
        hostile: HostileServer) -> None:
    """200 MB of valid QIDO JSON, 1 GiB of address space to spare: reading fits, parsing
    (about ten times the text) would not, so it is refused before any parser sees it."""
    url = f"{hostile.url}/big"
    outcome = run_child(url, budget=1024 * MiB)
    assert outcome["error"] == "AnswerTooLarge", outcome
    assert "needs about" in outcome["message"] and "to parse" in outcome["message"]
    assert f"{url}/studies" in outcome["message"]


def test_the_same_answer_beyond_max_answer_bytes_stops_while_read(hostile: HostileServer
                                                                   ) -> None:
    outcome = run_child(f"{hostile.url}/big", max_answer_bytes=16 * MiB)
    assert outcome["error"] == "AnswerTooLarge", outcome
    assert "max_answer_bytes=16777216" in outcome["message"]
    assert outcome["maxrss"] < 400 * MiB, outcome


def test_json_nested_a_million_levels_is_a_typed_error_not_a_crash(hostile: HostileServer
                                                                     ) -> None:
    outcome = run_child(f"{hostile.url}/deep")
    assert outcome["error"] == "InvalidResponse", outcome
    assert "nested more than 1000 levels" in outcome["message"]


# ---- bounds checked in this process (small answers) --------------------------------------------


def test_more_than_100_headers_is_an_invalid_answer_not_a_closed_connection(
        hostile: HostileServer) -> None:
    before = len(hostile.requests)
    client = connect(f"{hostile.url}/headers", retries=3, backoff=0.01)
    with pytest.raises(errors.InvalidResponse) as info:
        client.search_json("study")
    assert "more header lines than the HTTP parser takes (100)" in str(info.value)
    assert f"{hostile.url}/headers/studies" in str(info.value)
    assert len(hostile.requests) - before == 1  # not retried: the same header would come back


@pytest.mark.parametrize("path", ["gzip", "deflate", "rawdeflate", "members"])
def test_compressed_answers_are_inflated(hostile: HostileServer, path: str) -> None:
    client = connect(f"{hostile.url}/{path}", retries=0, progress=False)
    found = client.search_json("study")
    assert [obj["0020000D"]["Value"][0] for obj in found] == [f"{STUDY}.{n}" for n in range(3)]
    assert hostile.requests[-1].headers["accept-encoding"] == limits.ACCEPT_ENCODING


def test_a_large_chunked_gzip_answer_is_inflated_whole(hostile: HostileServer) -> None:
    """11 MB of JSON in odd-sized chunks of gzip: past the ratio check's floor, every byte
    inflated (the same studies as the JSON the server compressed)."""
    client = connect(f"{hostile.url}/gzipbig", retries=0, progress=False)
    found = client.search_json("study")
    assert found == json.loads(hostile.many_studies())


def test_an_endless_error_body_is_read_only_for_its_first_bytes(hostile: HostileServer
                                                                 ) -> None:
    client = connect(f"{hostile.url}/endlesserror", retries=0)
    with pytest.raises(errors.DICOMwebError) as info:
        client.search_json("study")
    assert info.value.status == 500
    assert hostile.sent["/endlesserror"] < 1024 * MiB  # the client stopped reading


def test_a_corrupt_gzip_body_is_an_invalid_answer(hostile: HostileServer) -> None:
    client = connect(f"{hostile.url}/corrupt", retries=0)
    with pytest.raises(errors.InvalidResponse, match="gzip body is corrupt"):
        client.search_json("study")


def test_a_part_larger_than_the_limit_stops_a_multipart_answer(hostile: HostileServer) -> None:
    """The limit bounds each part: three parts of 1 MiB arrive, the 32 MiB one is refused."""
    client = connect(hostile.url, retries=0, max_answer_bytes=4 * MiB)
    sizes = []
    with pytest.raises(errors.AnswerTooLarge) as info:
        for part, _ in client.iter_multipart("/bigpart"):
            sizes.append(len(part.content))
    assert sizes == [MiB] * 3
    assert "a part of the answer is larger than max_answer_bytes=4194304" in str(info.value)
    assert info.value.limit == 4 * MiB
    # the same answer with room for its largest part
    roomy = connect(hostile.url, retries=0, max_answer_bytes=40 * MiB)
    assert [len(p.content) for p, _ in roomy.iter_multipart("/bigpart")] == [MiB] * 3 + [
        32 * MiB]


def test_the_limits_are_settings_with_documented_defaults() -> None:
    client = connect("http://127.0.0.1:9")
    assert client.max_answer_bytes == limits.DEFAULT_MAX_ANSWER_BYTES == 512 * MiB
    assert client.max_decompression_ratio == limits.DEFAULT_MAX_DECOMPRESSION_RATIO == 500
    client.max_answer_bytes = None
    assert client.transport.max_answer_bytes is None
    for bad in ({"max_answer_bytes": 0}, {"max_decompression_ratio": 0.5}):
        with pytest.raises(ValueError):
            connect("http://127.0.0.1:9", **bad)  # type: ignore[arg-type]


def test_urllib3_is_the_major_version_the_connections_were_written_for() -> None:
    """client/connections.py gives urllib3's pools their connection class: when urllib3's
    next major version is installed this fails, so that the module is checked again."""
    major = int(urllib3.__version__.split(".")[0])
    assert major == connections.URLLIB3_MAJOR, (
        f"urllib3 {urllib3.__version__} is installed; dicomframes/client/connections.py was "
        f"written for urllib3 {connections.URLLIB3_MAJOR}.x: check PoolManager."
        "pool_classes_by_scheme and HTTPConnectionPool.ConnectionCls, then raise the bound "
        "in pyproject.toml")


# ---- success means success -----------------------------------------------------------------------


@pytest.mark.parametrize(("base", "said"), [
    ("redirect-login", "answered 302, a redirect to /login"),
    ("loop302", "answered 302, a redirect"),
    ("html", "with an HTML page"),
    ("plain", "with text/plain"),
])
def test_delete_raises_unless_the_server_said_done(hostile: HostileServer, base: str,
                                                    said: str) -> None:
    client = connect(f"{hostile.url}/{base}", retries=0)
    with pytest.raises(errors.InvalidResponse) as info:
        client.delete(STUDY)
    assert said in str(info.value)
    assert "nothing is known to have changed" in str(info.value)
    assert f"/{base}/studies/{STUDY}" in str(info.value)
    assert "delete" not in client.capabilities


def test_delete_in_a_redirect_loop_raises(hostile: HostileServer) -> None:
    client = connect(f"{hostile.url}/loop307", retries=0)
    with pytest.raises(errors.InvalidResponse, match="too many redirects"):
        client.delete(STUDY)


def test_delete_on_a_real_server_still_succeeds(embedded: object, tmp_path: Path) -> None:
    client = connect(embedded.url)  # type: ignore[attr-defined]
    files = make_files(tmp_path, 1, study="1.2.826.0.1.3680043.8.498.77")
    assert (client.store(files, progress=False)["status"] == "stored").all()
    assert client.delete("1.2.826.0.1.3680043.8.498.77") is None
    with pytest.raises(errors.NotFound):
        client.delete("1.2.826.0.1.3680043.8.498.77")


@pytest.mark.parametrize(("base", "said"), [
    ("redirect-login", "answered 302, a redirect to /login"),
    ("html", "with an HTML page"),
])
def test_stow_to_a_login_page_stores_nothing(hostile: HostileServer, tmp_path: Path,
                                             base: str, said: str) -> None:
    client = connect(f"{hostile.url}/{base}", retries=0)
    files = make_files(tmp_path, 2)
    outcome = client.store(files, progress=False)
    assert (outcome["status"] == "failed").all()
    assert outcome["message"].str.contains(said, regex=False).all()
    assert outcome["message"].str.contains("outcome unknown", regex=False).all()


# ---- credentials echoed in any form --------------------------------------------------------------


def test_an_echoed_bearer_token_is_masked_in_every_form(hostile: HostileServer) -> None:
    client = connect(f"{hostile.url}/echo", token=TOKEN, retries=0)
    with pytest.raises(errors.BadRequest) as info:
        client.search_json("study")
    shown = str(info.value) + info.value.body.decode() + str(client.last_exchange)
    raw = TOKEN.encode()
    forms = [TOKEN, base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    for form in forms:
        assert form not in shown, form
    assert "credential=***" in str(info.value) and "b64=***" in str(info.value)


def test_echoed_basic_credentials_are_masked_in_every_form(hostile: HostileServer) -> None:
    client = connect(f"{hostile.url}/echo", auth=("alice", "pw"), retries=0)
    with pytest.raises(errors.BadRequest) as info:
        client.search_json("study")
    shown = str(info.value) + info.value.body.decode() + str(client.last_exchange)
    assert base64.b64encode(b"alice:pw").decode() not in shown
    assert "alice:pw" not in shown
    assert "credential=***" in str(info.value) and "decoded=***" in str(info.value)


def test_a_blank_token_variable_is_refused_at_server_start(tmp_path: Path) -> None:
    env = {**os.environ, "BLANK_TOKEN": " \t ",
           "PYTHONPATH": str(Path(dicomframes.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "dicomframes", "serve", "--data", str(tmp_path / "archive"),
         "--port", "0", "--token-env", "BLANK_TOKEN"],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert "BLANK_TOKEN holds only whitespace" in done.stderr
    with pytest.raises(ValueError, match="only whitespace"):
        dicomframes.serve(tmp_path / "other", token="   ")  # type: ignore[attr-defined]
