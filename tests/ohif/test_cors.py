"""CORS of the embedded server (dicomframes/server/cors.py), over real HTTP on 127.0.0.1:
off by default, preflights answered or refused with a reason, the allowed origin echoed with
``Vary: Origin``, ``Authorization`` allowed only when the server has a token; and in Chromium,
a page of an allowed origin reads the server while a page of another origin cannot."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from support import make_instances, require

from dicomframes.server import serve
from dicomframes.server.app import create_app
from dicomframes.server.cors import Cors, normalize_origin, with_cors
from dicomframes.server.storage import Archive

from .conftest import CHROMIUM, loopback_socket, running
from .viewer import StaticViewer

ALLOWED = "http://localhost:3000"
TOKEN = "cors-test-token"


@pytest.fixture(scope="module", params=["open", "token"])
def cors_server(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None]]:
    """The embedded app with CORS for ``ALLOWED`` and one stored instance, without and with a
    token; yields (url, token)."""
    token = TOKEN if request.param == "token" else None
    archive = Archive(tmp_path_factory.mktemp("cors-archive"), durable=False)
    app = with_cors(create_app(archive, token=token), [ALLOWED, "http://127.0.0.1:8000"],
                    authorization=token is not None)
    try:
        with running(app, loopback_socket()) as url:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            body = make_instances(1)
            response = requests.post(f"{url}/studies", data=body[0], headers={
                **headers, "Content-Type": "application/dicom",
                "Accept": "application/dicom+json"}, timeout=30)
            assert response.status_code == 200, response.text
            yield url, token
    finally:
        archive.close()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _preflight(url: str, origin: str, method: str = "GET",
               headers: str | None = "accept") -> requests.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return requests.options(f"{url}/studies", headers=asked, timeout=30)


def test_off_by_default(tmp_path: Path) -> None:
    """No origin: the app itself, and today's server sends no CORS header to any origin."""
    app = object()
    assert with_cors(app, None) is app  # type: ignore[arg-type]
    assert with_cors(app, []) is app  # type: ignore[arg-type]
    with serve(tmp_path / "archive") as server:
        answer = requests.get(f"{server.url}/studies", headers={"Origin": ALLOWED}, timeout=30)
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers


def test_origins_are_normalised_and_checked() -> None:
    """Origins compare as browsers send them; anything but scheme://host[:port] is refused."""
    assert normalize_origin("HTTP://LocalHost:3000/") == "http://localhost:3000"
    assert normalize_origin("https://viewer.example.org:443") == "https://viewer.example.org"
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("*", "null", "localhost:3000", "http://x/viewer", "ftp://x", "http://x?a=1",
                "http://user@x", "http://x:99999"):
        with pytest.raises(ValueError, match="CORS origin"):
            normalize_origin(bad)
    cors = Cors(object(), ["http://localhost:3000"])  # type: ignore[arg-type]
    assert cors.allowed("http://LOCALHOST:3000") and not cors.allowed("http://localhost:3001")
    assert not cors.allowed("null")


def test_allowed_origin_is_echoed(cors_server: tuple[str, str | None]) -> None:
    """An allowed origin gets its own origin back, Vary: Origin and the exposed headers."""
    url, token = cors_server
    answer = requests.get(f"{url}/studies", headers={"Origin": ALLOWED, **_auth(token)},
                          timeout=30)
    assert answer.status_code == 200 and len(answer.json()) == 1
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "Origin" in answer.headers["vary"]
    exposed = answer.headers["access-control-expose-headers"]
    assert "Content-Location" in exposed and "Warning" in exposed
    assert "access-control-allow-credentials" not in answer.headers


def test_other_origin_gets_no_grant(cors_server: tuple[str, str | None]) -> None:
    """Another origin (or none) gets no Access-Control-Allow-Origin; the answer varies on it."""
    url, token = cors_server
    for headers in ({"Origin": "http://evil.example"}, {}):
        answer = requests.get(f"{url}/studies", headers={**headers, **_auth(token)}, timeout=30)
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers
        assert "Origin" in answer.headers["vary"]


def test_preflight(cors_server: tuple[str, str | None]) -> None:
    """A preflight needs no token; it allows GET/POST/DELETE/OPTIONS, and Authorization only
    when the server has a token."""
    url, token = cors_server
    answer = _preflight(url, ALLOWED, "DELETE", "accept, content-type")
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert answer.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
    allowed = [h.strip() for h in answer.headers["access-control-allow-headers"].split(",")]
    assert {"accept", "content-type"} <= set(allowed)
    assert ("authorization" in allowed) == (token is not None)
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "Origin" in answer.headers["vary"]
    with_auth = _preflight(url, ALLOWED, "GET", "Authorization, Accept")
    if token:
        assert with_auth.status_code == 204
    else:
        assert with_auth.status_code == 403
        assert "authorization" in with_auth.text and "no token" in with_auth.text
    private = requests.options(f"{url}/studies", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Private-Network": "true"}, timeout=30)
    assert private.status_code == 204
    assert private.headers["access-control-allow-private-network"] == "true"


def test_refused_preflights_say_why(cors_server: tuple[str, str | None]) -> None:
    """Other origins, methods and headers: 403 naming what was refused, no grant."""
    url, _ = cors_server
    for answer, named in ((_preflight(url, "http://evil.example"), "http://evil.example"),
                          (_preflight(url, ALLOWED, "PUT"), "PUT"),
                          (_preflight(url, ALLOWED, "GET", "x-custom"), "x-custom")):
        assert answer.status_code == 403
        assert named in answer.text and "CORS" in answer.text
        assert "access-control-allow-origin" not in answer.headers


def test_token_still_required(cors_server: tuple[str, str | None]) -> None:
    """With a token, a request without it is 401 but readable by the allowed origin (without
    a token it is served)."""
    url, token = cors_server
    answer = requests.get(f"{url}/studies", headers={"Origin": ALLOWED}, timeout=30)
    assert answer.status_code == (401 if token else 200)
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "WWW-Authenticate" in answer.headers["access-control-expose-headers"]


@pytest.mark.browser
def test_chromium_enforces_it(tmp_path: Path) -> None:
    """In Chromium, a page of the allowed origin reads QIDO (with a token: preflight, then
    Authorization) and one of another origin cannot."""
    require(Path(CHROMIUM).is_file(), "Chromium", "apt-get install chromium")
    require(importlib.util.find_spec("playwright") is not None, "Playwright",
            "pip install playwright (no browser download: the system Chromium is used)")
    from playwright.sync_api import sync_playwright

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>cors</title>")
    allowed_page = StaticViewer(site, {})
    other_page = StaticViewer(site, {})
    archive = Archive(tmp_path / "archive", durable=False)
    app = with_cors(create_app(archive, token=TOKEN), [allowed_page.url], authorization=True)
    fetch = """async ([url, token]) => {
        try {
            const r = await fetch(url + '/studies', {headers: {
                'Authorization': 'Bearer ' + token, 'Accept': 'application/dicom+json'}});
            return r.status + ' ' + (await r.text()).length;
        } catch (e) { return 'blocked ' + e.name; }
    }"""
    try:
        with running(app, loopback_socket()) as url:
            requests.post(f"{url}/studies", data=make_instances(1)[0], timeout=30, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/dicom"})
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync"])
                try:
                    page = browser.new_page()
                    page.route("**/*", lambda route: route.fallback() if urlsplit(
                        route.request.url).hostname == "127.0.0.1" else route.abort())
                    page.goto(allowed_page.url + "/")
                    status, _, length = page.evaluate(fetch, [url, TOKEN]).partition(" ")
                    assert status == "200" and int(length) > 2
                    page.goto(other_page.url + "/")
                    assert page.evaluate(fetch, [url, TOKEN]) == "blocked TypeError"
                finally:
                    browser.close()
    finally:
        allowed_page.stop()
        other_page.stop()
        archive.close()
