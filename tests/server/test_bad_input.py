"""Every bad parameter is a 400 that names it (never a 500), and the connection stays usable
after it; UIDs with a trailing newline are refused; a forged Host never reaches RetrieveURL."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from support import make_instances

from dicomframes.server import Server, serve

from .server_helpers import stow


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server holding one small instance, and the instance's URL path."""
    with serve(tmp_path_factory.mktemp("bad-input")) as server:
        answer = stow(server.url, make_instances(1))
        assert answer.status_code == 200
        url = answer.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        yield server, url[len(server.url):]


BIG = str(2**63)
QIDO = [
    (f"/studies?limit={BIG}", "limit"),
    (f"/studies?offset={BIG}", "offset"),
    (f"/instances?offset={BIG}0", "offset"),
    ("/studies?limit=%C2%B2", "limit"),
    ("/series?SeriesNumber=100000000000000000000", "SeriesNumber"),
    ("/instances?InstanceNumber=100000000000000000000", "InstanceNumber"),
    ("/instances?InstanceNumber=1e20", "InstanceNumber"),
    ("/instances?InstanceNumber=%D9%A3", "InstanceNumber"),  # an Arabic-Indic digit
]
RENDERED = [
    ("/rendered?viewport=0,0", "viewport"),
    ("/rendered?viewport=-5,10", "viewport"),
    ("/rendered?viewport=99999999999999,1", "viewport"),
    ("/rendered?viewport=10", "viewport"),
    ("/rendered?window=nan,nan", "window"),
    ("/rendered?window=40,0", "window"),
    ("/rendered?window=inf,-inf", "window"),
    ("/rendered?window=40,400,CUBIC", "window"),
    ("/rendered?window=40", "window"),
    ("/rendered?quality=%C2%B2", "quality"),
    ("/rendered?quality=0", "quality"),
    ("/frames/%C2%B2", "frame"),
    ("/frames/1/rendered?window=1e400,10", "window"),
]


def _ask(conn: http.client.HTTPConnection, path: str, accept: str) -> tuple[int, str, str]:
    conn.request("GET", path, headers={"Accept": accept})
    reply = conn.getresponse()
    return reply.status, reply.read().decode("utf-8", "replace"), \
        (reply.getheader("Connection") or "")


@pytest.mark.parametrize(("path", "name"), QIDO + RENDERED)
def test_bad_parameter_is_400_naming_it_and_the_connection_stays_usable(
        stored: tuple[Server, str], path: str, name: str) -> None:
    server, instance = stored
    if not path.startswith(("/studies", "/series", "/instances")):
        path = instance + path
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        accept = "image/png" if "rendered" in path else \
            "*/*" if "/frames/" in path else "application/dicom+json"
        status, text, connection = _ask(conn, path, accept)
        assert status == 400, (path, status, text)
        assert name in text, text
        assert connection.lower() != "close"
        # the same keep-alive connection answers the next request
        status, text, _ = _ask(conn, "/studies", "application/dicom+json")
        assert status == 200, text
    finally:
        conn.close()


def test_good_rendered_parameters_still_work(stored: tuple[Server, str]) -> None:
    server, instance = stored
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for query in ("window=40,400", "window=40,0.5,SIGMOID", "window=40,1,linear_exact",
                      "viewport=8,8", "quality=50"):
            status, _text, _ = _ask(conn, f"{instance}/rendered?{query}", "image/png")
            assert status == 200, query
    finally:
        conn.close()


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "%00", "%20"])
def test_uid_with_trailing_control_character_is_400(stored: tuple[Server, str],
                                                     suffix: str) -> None:
    server, instance = stored
    study = instance.split("/")[2]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for path in (f"/studies/{study}{suffix}", f"/studies/{study}{suffix}/metadata",
                     f"/studies/{study}{suffix}/series"):
            status, text, _ = _ask(conn, path, "*/*")
            assert status == 400, (path, status, text)
    finally:
        conn.close()


def test_forged_host_header_does_not_reach_retrieve_urls(stored: tuple[Server, str]) -> None:
    server, _instance = stored
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for host, expected in (("evil.example:666", server.url),
                               (f"localhost:{server.port}", f"http://localhost:{server.port}"),
                               ("localhost", f"http://localhost:{server.port}")):
            conn.putrequest("GET", "/studies", skip_host=True)
            conn.putheader("Host", host)
            conn.putheader("Accept", "application/dicom+json")
            conn.endheaders()
            reply = conn.getresponse()
            body = reply.read().decode()
            assert reply.status == 200
            assert "evil" not in body
            assert f'"{expected}/studies/' in body, (host, body[:300])
    finally:
        conn.close()
